"""The synthetic data set: DICOM files decode back, CSVs have the competition's exact shape,
and the drawn signal survives the display pipeline."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

pydicom = pytest.importorskip("pydicom")

from siimcovid import data
from siimcovid.dev import synthetic
from siimcovid.errors import UserError
from siimcovid.dev.synthetic import (
    TRANSFER_SYNTAXES,
    Anatomy,
    DicomStyle,
    SynthConfig,
    display_image,
    encode_display,
    encode_jpeg_lossless,
    generate,
    render_study_image,
    write_dicom,
)

LOSSLESS = [k for k in TRANSFER_SYNTAXES if k != "j2k_lossy"]
IDS = dict(study_id="0123456789ab", series_id="a1b2c3d4e5f6", image_id="fedcba987654", patient_id="00000000beef")


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 12-hex-char "UIDs" are not valid UI values, as in the real data
        return pydicom.dcmread(path)


def _smooth_pixels(rng, h, w, bits):
    """An image-like (smooth) array of stored values using most of the bit range."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 5.0) + 0.002 * rng.standard_normal((h, w))
    return np.clip(base * (2**bits - 1), 0, 2**bits - 1).astype(np.uint16)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("syntax", list(TRANSFER_SYNTAXES))
def test_write_dicom_round_trip(tmp_path, syntax, photometric):
    rng = np.random.default_rng(0)
    bits = 12 if syntax in ("rle", "j2k") else 16  # both ends of the range across the matrix
    pix = _smooth_pixels(rng, 64, 80, bits)
    p = write_dicom(tmp_path / "s" / "x.dcm", pix, photometric=photometric, bits_stored=bits,
                    transfer_syntax=syntax, **IDS)
    ds = _read(p)
    assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[syntax]
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
        IDS["study_id"], IDS["series_id"], IDS["image_id"])
    assert ds.PatientID == IDS["patient_id"]
    assert ds.PhotometricInterpretation == photometric
    assert (ds.BitsAllocated, ds.BitsStored, ds.Rows, ds.Columns) == (16, bits, 64, 80)
    arr = ds.pixel_array
    assert arr.shape == pix.shape
    if syntax == "j2k_lossy":
        err = np.abs(arr.astype(float) - pix)
        assert 0 < err.mean() < 0.02 * 2**bits  # lossy, but the picture survives
    else:
        np.testing.assert_array_equal(arr, pix)


def test_jpeg_lossless_edge_cases(tmp_path):
    """Constant frame, a single row, and 16-bit jumps of +-32768 (category 16) decode exactly."""
    cases = {
        "const": np.full((8, 9), 77, np.uint16),
        "row": np.arange(50, dtype=np.uint16)[None, :] * 1000,
        "jumps": np.tile(np.array([0, 65535, 0, 32768, 65535], np.uint16), (4, 3)),
    }
    for name, pix in cases.items():
        p = write_dicom(tmp_path / f"{name}.dcm", pix, bits_stored=16, transfer_syntax="jpeg_lossless", **IDS)
        np.testing.assert_array_equal(_read(p).pixel_array.reshape(pix.shape), pix, err_msg=name)
    assert encode_jpeg_lossless(cases["const"], 16)[:2] == b"\xff\xd8"


def test_write_dicom_rejects_bad_input(tmp_path):
    pix = np.full((8, 8), 5000, np.uint16)
    with pytest.raises(ValueError, match="12 bits"):
        write_dicom(tmp_path / "a.dcm", pix, bits_stored=12, **IDS)
    with pytest.raises(ValueError, match="unknown transfer syntax"):
        write_dicom(tmp_path / "b.dcm", pix, bits_stored=16, transfer_syntax="jpeg_baseline", **IDS)
    with pytest.raises(ValueError, match="photometric"):
        write_dicom(tmp_path / "c.dcm", pix, bits_stored=16, photometric="RGB", **IDS)


@pytest.mark.parametrize("voi", ["none", "window", "lut"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_display_pipeline_recovers_the_drawn_image(tmp_path, voi, photometric):
    """Stored values + rescale + VOI/window + MONOCHROME1 inversion show the rendered picture."""
    rng = np.random.default_rng(1)
    disp = render_study_image(rng, 96, 112, "typical", [(10, 40, 45, 90), (65, 40, 100, 90)])
    style = DicomStyle(photometric=photometric, bits_stored=14, voi=voi, stored_range=(300, 12000),
                       rescale=(1.0, 0.0) if voi == "lut" else (2.0, -1024.0), transfer_syntax="rle")
    stored, kwargs = encode_display(disp, style)
    ds = _read(write_dicom(tmp_path / "d.dcm", stored, **IDS, **kwargs))
    assert ("VOILUTSequence" in ds) == (voi == "lut")
    assert ("WindowCenter" in ds) == (voi == "window")
    shown = display_image(ds)
    # min-max display may stretch; compare shape, and exact levels where the mapping is fixed
    assert np.corrcoef(shown.ravel(), disp.ravel())[0, 1] > 0.999
    if voi != "none":
        assert np.abs(shown - disp).max() < 0.01
    # pydicom's own VOI agrees with the reference pipeline (up to output scaling)
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    v = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(float)
    if photometric == "MONOCHROME1":
        v = -v
    assert np.corrcoef(v.ravel(), shown.ravel())[0, 1] > 0.999


def test_opacity_is_brighter_inside_boxes_and_class_dependent():
    h, w = 128, 150
    an = Anatomy()
    box = (20.0, 50.0, 60.0, 110.0)
    bx = (slice(int(box[1]) + 8, int(box[3]) - 8), slice(int(box[0]) + 6, int(box[2]) - 6))
    gain = {}
    for cls in ("typical", "indeterminate", "atypical"):
        diffs = []
        for seed in range(6):
            with_box = render_study_image(np.random.default_rng(seed), h, w, cls, [box], anatomy=an)
            without = render_study_image(np.random.default_rng(seed), h, w, "negative", [], anatomy=an)
            diffs.append(with_box[bx].mean() - without[bx].mean())
        gain[cls] = float(np.mean(diffs))
    assert gain["indeterminate"] > 0.03
    assert gain["atypical"] > gain["typical"] > gain["indeterminate"]
    with pytest.raises(ValueError):
        render_study_image(np.random.default_rng(0), h, w, "negative", [box])


def test_class_patterns_of_boxes():
    rng = np.random.default_rng(0)
    an = Anatomy()
    typical = synthetic.sample_boxes(rng, "typical", an, 2)
    # bilateral: one box on each side of the midline, both in the lower half
    assert sorted((b[0] + b[2]) / 2 < an.cx for b in typical) == [False, True]
    assert all((b[1] + b[3]) / 2 > 0.5 for b in typical)
    for _ in range(20):
        (x0, y0, x1, y1), = synthetic.sample_boxes(rng, "atypical", an, 1)
        assert (y0 + y1) / 2 < 0.6  # central or upper zone, never the lower periphery
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = generate(SynthConfig(out=str(out), studies=40, seed=5, scale=0.05, test_fraction=0.25,
                                       multi_image_rate=0.3, duplicate_rate=0.5),
                           progress=False)
    return out, summary


def test_synth_folder_has_the_competition_shape(synth_dir):
    out, summary = synth_dir
    assert (out / data.STUDY_CSV).read_text().splitlines()[0] == (
        "id,Negative for Pneumonia,Typical Appearance,Indeterminate Appearance,Atypical Appearance")
    assert (out / data.IMAGE_CSV).read_text().splitlines()[0] == "id,boxes,label,StudyInstanceUID"
    for name in ("test_study_level.csv", "test_image_level.csv"):
        assert (out / "truth" / name).exists()
    raw = pd.read_csv(out / data.IMAGE_CSV, dtype=str, keep_default_na=False)
    assert raw["id"].str.fullmatch(r"[0-9a-f]{12}_image").all()
    assert raw["StudyInstanceUID"].str.fullmatch(r"[0-9a-f]{12}").all()
    none_rows = raw["label"] == "none 1 0 0 1 1"
    assert (raw.loc[none_rows, "boxes"] == "").all()
    assert raw.loc[~none_rows, "boxes"].str.startswith("[{'x': ").all()
    assert raw["label"].map(lambda s: len(s.split()) % 6 == 0).all()

    train = data.load_train(out)  # parses every file and joins CSVs with the DICOM tree
    assert len(train) == summary["train"]["images"]
    neg = train["study_label"] == data.STUDY_CLASSES.index("negative")
    assert train.loc[neg, "boxes"].map(len).eq(0).all()
    for _, r in train.iterrows():
        for x0, y0, x1, y1 in r["boxes"]:
            assert x1 > x0 and y1 > y0

    test = data.load_test(out)
    sub = pd.read_csv(out / data.SAMPLE_SUBMISSION)
    assert list(sub.columns) == ["id", "PredictionString"]
    assert set(sub["id"]) == {f"{s}_study" for s in test["study_id"]} | {f"{i}_image" for i in test["image_id"]}
    assert sub.loc[sub["id"].str.endswith("_study"), "PredictionString"].eq("negative 1 0 0 1 1").all()
    assert sub.loc[sub["id"].str.endswith("_image"), "PredictionString"].eq("none 1 0 0 1 1").all()
    truth_img = data.read_image_csv(out / "truth" / "test_image_level.csv")
    assert set(truth_img["image_id"]) == set(test["image_id"])
    assert not set(train["study_id"]) & set(test["study_id"])

    files = pd.read_csv(out / "truth" / "files.csv")
    dup = files.dropna(subset=["duplicate_of"])
    assert len(dup) > 0 and summary["train"]["multi_image_studies"] > 0
    for r in dup.itertuples():  # a duplicate holds the same pixels under new ids
        first = files.set_index("image_id").loc[r.duplicate_of]
        assert first["study_id"] == r.study_id
        np.testing.assert_array_equal(_read(out / r.dicom).pixel_array, _read(out / first["dicom"]).pixel_array)

    meta = json.loads((out / "synth.json").read_text())
    assert meta["config"]["seed"] == 5 and meta["train"]["studies"] + meta["test"]["studies"] == 40


def test_synth_dicoms_match_their_paths_and_decode(synth_dir):
    out, _ = synth_dir
    files = pd.read_csv(out / "truth" / "files.csv")
    for r in files.itertuples():
        ds = _read(out / r.dicom)
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (r.study_id, r.series_id, r.image_id)
        assert ds.PatientID == r.patient_id
        assert ds.pixel_array.shape == (r.height, r.width)
        assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[r.transfer_syntax]


def test_synth_is_reproducible(tmp_path):
    a = synthetic.plan_dataset(SynthConfig(out=str(tmp_path), studies=30, seed=9))
    b = synthetic.plan_dataset(SynthConfig(out=str(tmp_path), studies=30, seed=9))
    assert a["image_id"].tolist() == b["image_id"].tolist()
    assert a["boxes"].tolist() == b["boxes"].tolist()


def test_plan_matches_real_priors_roughly(tmp_path):
    plan = synthetic.plan_dataset(SynthConfig(out=str(tmp_path), studies=3000, seed=2))
    st = plan.drop_duplicates("study_id")
    frac = st["study_class"].value_counts(normalize=True)
    assert abs(frac["typical"] - 2855 / 6054) < 0.03
    assert abs(frac["atypical"] - 474 / 6054) < 0.02
    per_patient = st.groupby("patient_id").size().mean()
    assert 1.6 < per_patient < 2.1
    multi = (plan.groupby("study_id").size() > 1).mean()
    assert 0.02 < multi < 0.06
    nb = plan.loc[plan["study_class"] != "negative", "boxes"].map(len)
    assert (nb == 2).mean() > 0.5 and (nb == 0).mean() > 0.03
    w = np.array([(b[2] - b[0]) / r.width for r in plan.itertuples() for b in r.boxes])
    h = np.array([(b[3] - b[1]) / r.height for r in plan.itertuples() for b in r.boxes])
    assert 0.18 < np.median(w) < 0.25 and 0.3 < np.median(h) < 0.42
    assert plan["split"].eq("test").mean() == pytest.approx(0.2, abs=0.03)


def test_cli_reports_bad_arguments(tmp_path):
    for args, match in ((["--studies", "0"], "--studies 0: must be >= 1"),
                        (["--syntaxes", "explicit,nosuch"], "unknown transfer syntaxes \\['nosuch'\\]"),
                        (["--test-fraction", "1"], "--test-fraction 1.0")):
        with pytest.raises(UserError, match=match):
            synthetic.cli(["--out", str(tmp_path / "x"), *args])
    assert not (tmp_path / "x").exists()  # a failed start writes nothing


TINY = ["--studies", "3", "--scale", "0.03", "--syntaxes", "explicit", "--no-progress"]


def _ids(folder):
    return set(pd.read_csv(folder / data.SAMPLE_SUBMISSION)["id"])


def test_synth_never_merges_two_sets(tmp_path):
    out = tmp_path / "d"
    assert synthetic.cli(["--out", str(out), "--seed", "1", *TINY]) == 0
    first = _ids(out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(UserError, match=r"is not empty: it holds a synthetic set of 3 studies, seed 1.*--overwrite"):
        synthetic.cli(["--out", str(out), "--seed", "2", *TINY])
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # refused: nothing written
    # the same set again: nothing to do
    assert synthetic.cli(["--out", str(out), "--seed", "1", *TINY]) == 0
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    # --overwrite starts clean: none of the first set's files (nor a folds.csv made from it) survive
    (out / "folds.csv").write_text("study_id,fold\n")
    assert synthetic.cli(["--out", str(out), "--seed", "2", "--overwrite", *TINY]) == 0
    second = _ids(out)
    assert not first & second and not (out / "folds.csv").exists()
    n_dcm = len(list(out.rglob("*.dcm")))
    assert n_dcm == len(data.load_train(out)) + len(data.load_test(out))


def test_synth_refuses_a_folder_it_did_not_write_even_with_overwrite(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "models").mkdir()
    with pytest.raises(UserError, match=r"2 entries not written by synth \(models/, notes.txt\)"):
        synthetic.cli(["--out", str(out), *TINY])
    with pytest.raises(UserError, match="--overwrite only replaces a folder written by synth"):
        synthetic.cli(["--out", str(out), "--overwrite", *TINY])
    assert sorted(p.name for p in out.iterdir()) == ["models", "notes.txt"]


def test_synth_redoes_an_interrupted_run_of_the_same_set(tmp_path):
    out = tmp_path / "d"
    cfg = SynthConfig(out=str(out), studies=3, seed=4, scale=0.03, syntax_mix={"explicit": 1.0})
    out.mkdir()
    (out / synthetic.PARTIAL_JSON).write_text(json.dumps({"config": {**cfg.__dict__}}))
    (out / "train").mkdir()
    (out / "train" / "stale.dcm").write_bytes(b"half")
    generate(cfg, progress=False)
    assert not (out / "train" / "stale.dcm").exists() and not (out / synthetic.PARTIAL_JSON).exists()
    assert (out / synthetic.SUMMARY_JSON).is_file()
