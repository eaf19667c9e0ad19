"""The preprocess stage end to end on a tiny synthetic set: layout and meta.csv per the
contract, pixels against the reference conversion, bad files reported and skipped, worker
crashes survived, resume, and the benchmark's smoke run."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest

from siimcovid.preprocess import dicom
from siimcovid.boxes import Resize
from siimcovid.layout import image_path, read_meta
from siimcovid.preprocess.convert import PreprocessConfig, run
from siimcovid.dev.synthetic import TRANSFER_SYNTAXES, SynthConfig, generate, write_dicom

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The least populated class")

SIZES = [32, 48]
CONTRACT_COLUMNS = ["image_id", "study_id", "series_id", "split", "dicom", "orig_h", "orig_w", "photometric",
                    "transfer_syntax", "bits_stored", "keep_aspect", "boxes", "boxes_32", "boxes_48",
                    "study_label", "fold"]
BAD = {"empty": "empty file", "notdicom": "not a DICOM file", "truncated": "truncated", "nopixels": "no Pixel Data"}
BAD_STAGE = {"empty": {"read"}, "notdicom": {"read"}, "truncated": {"read", "header"}, "nopixels": {"header"}}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(out=str(root), studies=10, seed=34, scale=0.05,  # seed 34: all six syntaxes, both photometrics, all VOI kinds
                         syntax_mix={k: 1.0 for k in TRANSFER_SYNTAXES}), progress=False)
    # Bad files in test/: every kind the issue names
    study = next((root / "test").iterdir())
    series = next(study.iterdir())
    good = sorted((root / "train").rglob("*.dcm"))
    compressed = next(p for p in good if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
                      not in dicom.UNCOMPRESSED)
    (series / "empty.dcm").write_bytes(b"")
    (series / "notdicom.dcm").write_bytes(b"\x89PNG not a dicom" * 30)
    raw = compressed.read_bytes()
    (series / "truncated.dcm").write_bytes(raw[: len(raw) // 2])
    ds = pydicom.dcmread(good[0])
    del ds.PixelData
    ds.save_as(series / "nopixels.dcm")
    _corrupt_rle(series / "corruptrle.dcm")
    return root


def _corrupt_rle(path: Path) -> None:
    """An RLE file whose stream is overwritten with noise: dicomsdl corrupts its heap and the
    process aborts (SIGABRT), pylibjpeg-rle panics; pydicom's own RLE decoder copes."""
    rng = np.random.default_rng(0)
    arr = (np.linspace(0, 3000, 72 * 96).reshape(72, 96) + rng.normal(0, 50, (72, 96))).clip(0, 4095)
    write_dicom(path, arr.astype(np.uint16), study_id="s", series_id="r", image_id=path.stem, transfer_syntax="rle")
    raw = bytearray(path.read_bytes())
    mid = len(raw) - 3000
    raw[mid:mid + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def result(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    cfg = PreprocessConfig(data=str(data), out=str(out), sizes=SIZES, workers=2, progress=False, n_folds=2)
    return cfg, run(cfg)


def test_layout_and_meta_contract(data, result):
    cfg, summary = result
    out = Path(cfg.out)
    for name in ("meta.csv", "errors.csv", "folds.csv", "preprocess.json", "run.json"):
        assert (out / name).is_file(), name
    meta = read_meta(out)
    assert list(meta.columns[: len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    files = pd.read_csv(data / "truth" / "files.csv")
    # every good file (+ the corrupt RLE one, converted after its worker crashed), no bad one
    assert len(meta) == len(files) + 1 == summary["counts"]["converted"]
    assert set(meta["transfer_syntax"]) == set(TRANSFER_SYNTAXES.values())  # all six decoded
    assert set(meta["photometric"]) == {"MONOCHROME1", "MONOCHROME2"}
    m = meta.merge(files, on="image_id", suffixes=("", "_truth"))
    assert len(m) == len(files)
    assert (m["orig_h"] == m["height"]).all() and (m["orig_w"] == m["width"]).all()
    assert (m["split"] == m["split_truth"]).all() and (m["bits_stored"] == m["bits_stored_truth"]).all()
    for r in meta.itertuples():
        for s in SIZES:
            png = cv2.imread(str(image_path(out, s, r.split, r.image_id)), cv2.IMREAD_UNCHANGED)
            assert png.shape == (s, s) and png.dtype == np.uint8


def test_boxes_folds_and_labels(data, result):
    cfg, _ = result
    meta = read_meta(cfg.out)
    labels = pd.read_csv(data / "train_image_level.csv")
    n_boxes = dict(zip(labels["id"].str.replace("_image", ""), labels["label"].str.count("opacity")))
    train, test = meta[meta["split"] == "train"], meta[meta["split"] == "test"]
    assert all(len(b) == n_boxes[i] for i, b in zip(train["image_id"], train["boxes"]))
    assert sum(map(len, train["boxes"])) > 0
    for r in train.itertuples():
        for s in SIZES:
            expect = Resize.plan(r.orig_h, r.orig_w, s).to_resized(r.boxes) if r.boxes else np.zeros((0, 4))
            assert np.allclose(np.asarray(getattr(r, f"boxes_{s}")).reshape(-1, 4), expect, atol=2e-3)
    folds = pd.read_csv(Path(cfg.out) / "folds.csv", dtype={"study_id": str})
    fold_of = dict(zip(folds["study_id"], folds["fold"]))
    assert (train["fold"] == train["study_id"].map(fold_of)).all() and (train["fold"] >= 0).all()
    assert (test["fold"] == -1).all() and (test["study_label"] == -1).all()
    assert (test["boxes"].map(len) == 0).all() and train["study_label"].between(0, 3).all()


def test_pixels_match_reference(data, result):
    cfg, _ = result
    meta = read_meta(cfg.out)
    for r in meta[meta["image_id"] != "corruptrle"].itertuples():  # pydicom's defaults panic on that one
        png = cv2.imread(str(image_path(cfg.out, 48, r.split, r.image_id)), cv2.IMREAD_UNCHANGED)
        ref = dicom.reference_convert(data / r.dicom, 48)
        if r.reduce == 0:
            assert np.array_equal(png, ref), (r.image_id, r.transfer_syntax, r.decoder)
        else:  # JPEG 2000 decoded at reduced resolution: same picture, resampled differently
            assert np.abs(png.astype(int) - ref.astype(int)).mean() < 4, (r.image_id, r.decoder)


def test_bad_files_reported_not_fatal(result):
    cfg, summary = result
    errors = pd.read_csv(Path(cfg.out) / "errors.csv")
    assert list(errors.columns) == ["dicom", "image_id", "stage", "reason"]
    got = dict(zip(errors["image_id"], errors["reason"]))
    stage = dict(zip(errors["image_id"], errors["stage"]))
    assert set(got) == set(BAD)
    for name, words in BAD.items():
        assert words in got[name], got[name]
        assert stage[name] in BAD_STAGE[name], (name, stage[name])
        assert errors.set_index("image_id").loc[name, "dicom"].endswith(f"/{name}.dcm")  # names the file
    assert summary["counts"]["failed"] == len(BAD)
    assert all(errors["dicom"].str.startswith("test/"))


def test_real_decoder_crash_is_survived(result):
    cfg, summary = result
    rec = {json.loads(line)["image_id"]: json.loads(line) for line in open(Path(cfg.out) / "records.jsonl")}["corruptrle"]
    assert rec["decoder"].startswith("pydicom") and "worker killed by SIGABRT" in rec["fallbacks"][0]
    assert summary["counts"]["retried_after_crash"] == 1


def test_resume_skips_done_and_redoes_missing(data, result):
    cfg, _ = result
    meta = read_meta(cfg.out)
    victim = meta.iloc[0]
    image_path(cfg.out, 32, victim["split"], victim["image_id"]).unlink()
    again = run(PreprocessConfig(**{**cfg.__dict__}))
    assert again["counts"]["converted"] == 1 and again["counts"]["skipped_done"] == len(meta) - 1
    assert again["counts"]["failed"] == len(BAD)  # bad files are retried and fail again
    assert len(read_meta(cfg.out)) == len(meta)


def test_worker_crash_is_retried_then_reported(data, tmp_path):
    from siimcovid.data import scan_dicoms

    ids = scan_dicoms(data / "train")["image_id"].tolist()
    cfg = PreprocessConfig(data=str(data), out=str(tmp_path), sizes=[32], workers=1, progress=False,
                           splits=("train",), n_folds=2, fault_injection={ids[0]: "fast", ids[1]: "always"})
    summary = run(cfg)
    meta = read_meta(tmp_path)
    assert ids[0] in set(meta["image_id"])  # crashed once, done by pydicom in a fresh worker
    assert meta.set_index("image_id").loc[ids[0], "decoder"].startswith("pydicom")
    errors = pd.read_csv(tmp_path / "errors.csv")
    assert errors["image_id"].tolist() == [ids[1]] and "SIGSEGV" in errors["reason"].iloc[0]
    assert summary["counts"]["converted"] == len(ids) - 1 and summary["counts"]["retried_after_crash"] == 1


def test_cli_exit_status_and_keep_aspect(data, tmp_path):
    from siimcovid.__main__ import main

    rc = main(["preprocess", "--data", str(data), "--out", str(tmp_path), "--size", "40", "--keep-aspect",
               "--split", "test", "--workers", "1", "--no-progress", "--k", "2"])
    assert rc == 1  # the bad files failed
    meta = read_meta(tmp_path)
    assert meta["keep_aspect"].all() and (meta["split"] == "test").all()
    r = meta.iloc[0]
    png = cv2.imread(str(image_path(tmp_path, 40, "test", r["image_id"])), cv2.IMREAD_UNCHANGED)
    ch, cw = Resize.plan(r["orig_h"], r["orig_w"], 40, keep_aspect=True).content_hw
    assert png.shape == (40, 40) and (ch < 40 or cw < 40)
    assert png[ch:, :].max(initial=0) == 0 and png[:, cw:].max(initial=0) == 0
    assert main(["preprocess", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2


def test_index_problems_are_recorded_not_fatal(data, tmp_path):
    """A CSV row without its DICOM, a DICOM without a CSV row, a study without a label and a
    second file with a taken image id each become one "index" error row naming the file; the
    rest is indexed."""
    import shutil

    from siimcovid.preprocess.convert import build_index

    root = tmp_path / "d"
    shutil.copytree(data, root)
    full, errors = build_index(root)
    assert errors == [] and len(full)
    train = full[full["split"] == "train"].reset_index(drop=True)
    gone, other = train.iloc[0], train.iloc[1]
    Path(gone["path"]).unlink()  # listed in train_image_level.csv, file removed
    stray = Path(other["path"]).with_name("stray.dcm")  # a file no CSV lists
    shutil.copyfile(other["path"], stray)
    twin_dir = root / "test" / "twinstudy" / "twinseries"  # same image id as a train file
    twin_dir.mkdir(parents=True)
    shutil.copyfile(other["path"], twin_dir / f"{other['image_id']}.dcm")
    studies = pd.read_csv(root / "train_study_level.csv")
    unlabelled = train[~train["study_id"].isin([gone["study_id"], other["study_id"]])].iloc[0]
    studies[studies["id"] != f"{unlabelled['study_id']}_study"].to_csv(root / "train_study_level.csv", index=False)

    index, errors = build_index(root)
    reasons = {e["image_id"]: e for e in errors}
    assert all(e["stage"] == ("missing" if e["image_id"] == gone["image_id"] else "index") for e in errors)
    assert "train_image_level.csv but no" in reasons[gone["image_id"]]["reason"]
    assert reasons["stray"]["dicom"] == str(stray.relative_to(root)) and "not listed" in reasons["stray"]["reason"]
    assert "has no row in train_study_level.csv" in reasons[unlabelled["image_id"]]["reason"]
    assert reasons[other["image_id"]]["dicom"].startswith("test/twinstudy/") and "seen twice" in reasons[other["image_id"]]["reason"]
    lost = {gone["image_id"], "stray"} | set(train.loc[train["study_id"] == unlabelled["study_id"], "image_id"])
    assert set(index["image_id"]) == set(full["image_id"]) - lost
    assert index["image_id"].is_unique
    assert index.set_index("image_id").loc[other["image_id"], "split"] == "train"  # the first copy is kept


def test_tfrecords_hold_the_pngs_and_boxes(result, tmp_path):
    """write_tfrecords: one record per meta row, fold-grouped shard names, the PNG bytes as
    written and boxes_<S> flattened; a missing PNG stops it before any shard is written."""
    tf = pytest.importorskip("tensorflow")
    import shutil

    from siimcovid.preprocess.tfrecords import write_tfrecords

    cfg, _ = result
    meta = read_meta(cfg.out)
    paths = write_tfrecords(cfg.out, meta, [32], per_shard=4)
    assert sum(int(p.stem.rsplit("-", 1)[1]) for p in paths) == len(meta)
    for p in paths:
        assert p.name.startswith("test-") or p.name.split("-")[1][0] == "f"
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "image_id": tf.io.FixedLenFeature([], tf.string),
            "fold": tf.io.FixedLenFeature([], tf.int64), "boxes": tf.io.VarLenFeature(tf.float32)}
    seen = {}
    for p in paths:
        recs = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(str(p))]
        assert len(recs) == int(p.stem.rsplit("-", 1)[1])
        for ex in recs:
            seen[ex["image_id"].numpy().decode()] = ex
    assert set(seen) == set(meta["image_id"])
    for r in meta.itertuples():
        ex = seen[r.image_id]
        assert ex["image"].numpy() == image_path(cfg.out, 32, r.split, r.image_id).read_bytes()
        assert int(ex["fold"]) == r.fold
        assert np.allclose(tf.sparse.to_dense(ex["boxes"]).numpy(), np.ravel(r.boxes_32), atol=1e-3)

    # a missing PNG is named, and the shards already there are left alone
    out = tmp_path / "copy"
    shutil.copytree(cfg.out, out)
    victim = meta.iloc[0]
    image_path(out, 32, victim["split"], victim["image_id"]).unlink()
    before = sorted(p.name for p in (out / "tfrecords" / "32").iterdir())
    with pytest.raises(FileNotFoundError, match=f"{victim['image_id']}.png"):
        write_tfrecords(out, meta, [32], per_shard=4)
    assert sorted(p.name for p in (out / "tfrecords" / "32").iterdir()) == before


def test_bench_smoke(tmp_path):
    from siimcovid.dev.bench import SYNTAXES, bench_preprocess, format_report

    s = bench_preprocess(tmp_path, per_syntax=1, size=32, max_workers=2, scale=0.02, repeats=1)
    rows = s["per_syntax_rows"]
    assert [r["syntax"] for r in rows] == list(SYNTAXES) and s["images"] == len(SYNTAXES)
    for r in rows:
        assert r["naive_img_s"] > 0 and r["project_img_s"] > 0 and r["fast_img_s"] > 0, r
        assert 0 <= r["decode_share"] <= 1 and r["ratio"] == pytest.approx(r["project_img_s"] / r["naive_img_s"])
        assert 0 <= r["fast_mean_diff"] <= r["fast_max_diff"] <= 255 and r["decoder"]
    # every file went through both routes and the naive recipe, each leaving its PNG
    for sub in ("project", "project_fast"):
        assert len(list((tmp_path / sub / "images" / "32" / "bench").glob("bench*.png"))) == len(SYNTAXES)
    assert len(list((tmp_path / "naive").glob("bench*.png"))) == len(SYNTAXES)
    assert [x["workers"] for x in s["scaling"]] == [1, 2] and s["scaling"][0]["speedup"] == 1.0
    assert all(x["img_s"] > 0 for x in s["scaling"])
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(s))
    report = format_report(s)
    assert all(ts in report for ts in SYNTAXES) and "2 worker(s)" in report
