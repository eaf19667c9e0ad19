"""External data adapters (issue 21, part 1): each source read from hand-made fixtures in its
published layout (dev/external_sets.py) and written in the preprocess layout, read back through
`layout`: headers as published, a no-finding image, several readers, an uncertain label, a
lateral view, a duplicate of a competition image, a missing and a broken file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from siimcovid import layout
from siimcovid.__main__ import main
from siimcovid.dev import external_sets
from siimcovid.preprocess.external import base, chexpert, cli, nih, vinbigdata
from siimcovid.variants import load

SIZE = 64


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    return external_sets.write_all(tmp_path_factory.mktemp("external"))


def _run(sets, source, tmp_path, *extra, like=True):
    out = tmp_path / f"out_{source}"
    workers = [] if "--workers" in extra else ["--workers", "1"]
    argv = ["external", source, "--src", str(sets[source]), "--out", str(out), "--size", str(SIZE), *workers, *extra]
    if like:
        argv += ["--exclude-like", str(sets["like"])]
    rc = main(argv)
    meta = layout.read_meta(out, size=SIZE, require=layout.EXTERNAL_COLUMNS)
    errors = layout.read_errors(out)
    return rc, meta.set_index("image_id", drop=False), errors.set_index("image_id"), out


def test_rsna_boxes_classes_duplicate_and_bad_files(sets, tmp_path):
    rc, meta, errors, out = _run(sets, "rsna", tmp_path)
    assert rc == 1  # a file failed and one is missing
    assert sorted(meta.index) == ["rsna-box", "rsna-normal", "rsna-notnormal"]
    assert meta.loc["rsna-box", "boxes"] == [[10, 20, 40, 60], [55, 20, 85, 60]]  # x, y, w, h -> xyxy
    assert meta.loc["rsna-box", "boxes_frame"][0] == pytest.approx([10 * 64 / 96, 20 * 64 / 96, 40 * 64 / 96, 40], abs=1e-3)
    assert meta.loc["rsna-normal", "boxes"] == [] and meta.loc["rsna-normal", "opacity"] == 0
    assert json.loads(meta.loc["rsna-notnormal", "labels"])["class"] == "No Lung Opacity / Not Normal"
    assert set(meta["source"]) == {"rsna"} and meta["box_labelled"].eq(1).all()
    assert errors.loc["rsna-dup", "stage"] == base.DUPLICATE_STAGE and "comp00" in errors.loc["rsna-dup", "reason"]
    assert errors.loc["rsna-missing", "stage"] == "missing"
    assert errors.loc["rsna-bad", "stage"] == "convert" and "rsna-bad.dcm" in errors.loc["rsna-bad", "reason"]
    for image_id in meta.index:  # 8-bit PNGs at the asked size, where layout says
        import cv2

        img = cv2.imread(str(layout.image_path(out, SIZE, "train", image_id)), cv2.IMREAD_UNCHANGED)
        assert img.shape == (SIZE, SIZE) and img.dtype == np.uint8
    assert layout.read_summary(out)["counts"]["duplicate"] == 1


def test_vinbigdata_fuses_readers_and_counts_only_opacity_findings(sets, tmp_path):
    rc, meta, errors, _ = _run(sets, "vinbigdata", tmp_path)
    assert rc == 0
    # R1's Lung Opacity and R2's Consolidation are one finding; R1's Cardiomegaly never counts
    (box,) = meta.loc["vin-op", "boxes"]
    assert box == pytest.approx([11, 21, 41, 61])
    assert meta.loc["vin-op", "opacity"] == 1
    assert meta.loc["vin-none", "boxes"] == [] and json.loads(meta.loc["vin-none", "labels"]) == {"No finding": 3}
    assert meta.loc["vin-heart", "opacity"] == 0  # Cardiomegaly + Aortic enlargement only
    assert list(errors.index) == ["vin-dup"]
    # two of three readers found it: min_readers=3 drops it, union keeps both readers' boxes
    rc, meta3, _, _ = _run(sets, "vinbigdata", tmp_path / "r3", "--min-readers", "3")
    assert meta3.loc["vin-op", "boxes"] == [] and meta3.loc["vin-op", "opacity"] == 0
    _, meta_u, _, _ = _run(sets, "vinbigdata", tmp_path / "u", "--fusion", "union")
    assert len(meta_u.loc["vin-op", "boxes"]) == 2


def test_nih_quirky_headers_rgba_and_box_list(sets, tmp_path):
    rc, meta, errors, _ = _run(sets, "nih", tmp_path)
    assert rc == 1  # 00000006_000 is listed but not there
    assert meta.loc["00000001_000", "boxes"] == [[10, 20, 40, 60]] and meta.loc["00000001_000", "opacity"] == 1
    assert meta.loc["00000002_000", "opacity"] == 0 and meta.loc["00000002_000", "box_labelled"] == 0
    assert meta.loc["00000003_000", "boxes"] == [[50, 20, 80, 60]]  # RGBA PNG, "Infiltrate" in the box list
    assert meta.loc["00000004_000", "boxes"] == [] and meta.loc["00000004_000", "box_labelled"] == 1
    assert meta.loc["00000002_000", "view"] == "AP" and meta.loc["00000002_000", "study_id"] == "00000002_000"
    # one patient, one fold
    assert meta.loc["00000002_000", "fold"] == meta.loc["00000004_000", "fold"]
    assert errors.loc["00000005_000", "stage"] == "duplicate" and errors.loc["00000006_000", "stage"] == "missing"


@pytest.mark.parametrize("policy,expected", [("u_ones", 1), ("u_zeros", 0), ("ignore", -1)])
def test_chexpert_uncertain_policy_and_lateral_views(sets, tmp_path, policy, expected):
    rc, meta, errors, _ = _run(sets, "chexpert", tmp_path, "--uncertain", policy)
    assert rc == 0
    assert meta.loc["patient00003_study1_view1_frontal", "opacity"] == expected  # Consolidation -1.0
    assert meta.loc["patient00001_study1_view1_frontal", "opacity"] == 1
    assert meta.loc["patient00002_study1_view1_frontal", "opacity"] == 0  # No Finding
    assert errors.loc["patient00001_study1_view2_lateral", "stage"] == base.LATERAL_STAGE
    assert errors.loc["patient00004_study1_view1_frontal", "stage"] == base.DUPLICATE_STAGE
    assert json.loads(meta.loc["patient00003_study1_view1_frontal", "labels"]) == {"Consolidation": -1.0}


def test_keep_lateral_and_no_duplicate_check(sets, tmp_path):
    _, meta, errors, _ = _run(sets, "chexpert", tmp_path, "--keep-lateral", like=False)
    assert meta.loc["patient00001_study1_view2_lateral", "view"] == "LATERAL"
    assert "patient00004_study1_view1_frontal" in meta.index and errors.empty


def test_a_wrong_header_is_refused_naming_the_file(sets, tmp_path, capsys):
    bad = tmp_path / "vin"
    bad.mkdir()
    (bad / "train.csv").write_text("image_id,class_name,x_min,y_min\n")
    assert main(["external", "vinbigdata", "--src", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "train.csv" in capsys.readouterr().err


def test_the_duplicate_hash_survives_resizing_and_jpeg():
    import cv2

    img = external_sets.chest(7)
    small = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA)
    _, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    again = cv2.imdecode(jpg, cv2.IMREAD_GRAYSCALE)
    h = np.array([base.phash(img), base.phash(small), base.phash(again), base.phash(external_sets.chest(8))],
                 np.uint64)
    d = base.hamming(h, h)
    assert d[0, 1] <= 4 and d[0, 2] <= 4 and d[0, 3] > 6


def test_settings_come_from_the_variants_with_documented_defaults():
    assert load("external", "chexpert", None, chexpert.Config).uncertain == "u_ones"
    assert load("external", "nih", None, nih.Config).handle == "nih-chest-xrays/data"
    v = load("external", "vinbigdata", ["opacity_findings=[Nodule/Mass]"], vinbigdata.Config)
    assert v.opacity_findings == ["Nodule/Mass"] and v.fusion == "wbf"
    assert {s: cli.adapter(s).Config().handle for s in cli.SOURCES} == {
        "rsna": "rsna-pneumonia-detection-challenge", "vinbigdata": "vinbigdata-chest-xray-abnormalities-detection",
        "nih": "nih-chest-xrays/data", "chexpert": "ashery/chexpert"}


def test_the_source_is_found_under_the_kaggle_slug(sets, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "input"
    shutil.copytree(sets["rsna"], root / "rsna-pneumonia-detection-challenge")
    shutil.copytree(sets["vinbigdata"], root / "vinbigdata-chest-xray-abnormalities-detection")
    monkeypatch.setenv("SIIM_INPUT", str(root))
    assert base.locate(vinbigdata.MARKER, "", vinbigdata.Config().handle) == \
        root / "vinbigdata-chest-xray-abnormalities-detection"


def test_an_output_folder_of_another_set_is_refused(sets, tmp_path, capsys):
    _run(sets, "rsna", tmp_path, like=False)
    argv = ["external", "nih", "--src", str(sets["nih"]), "--out", str(tmp_path / "out_rsna"), "--size", "64"]
    assert main(argv) == 2 and "external rsna" in capsys.readouterr().err
    assert main(["external", "nih", "--src", str(sets["nih"]), "--out", str(sets["like"])]) == 2
    assert not (sets["like"] / ".external.lock").exists()
    assert _run(sets, "rsna", tmp_path, like=False)[0] == 1  # the same source is redone


def test_a_worker_pool_writes_the_same_output(sets, tmp_path):
    _, one, err1, out1 = _run(sets, "vinbigdata", tmp_path / "one")
    _, two, err2, out2 = _run(sets, "vinbigdata", tmp_path / "two", "--workers", "2")
    cols = ["image_id", "boxes", "opacity", "labels", "fold", "orig_h", "orig_w"]
    assert one[cols].equals(two[cols]) and err1.equals(err2)
    for image_id in one.index:
        a, b = (layout.image_path(o, SIZE, "train", image_id).read_bytes() for o in (out1, out2))
        assert a == b


def test_a_kernel_that_finds_no_source_fails_instead_of_looking_complete(tmp_path, monkeypatch):
    from siimcovid.errors import UserError
    from siimcovid.preprocess.external.cli import convert_sources

    monkeypatch.setenv("SIIM_INPUT", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no external source found: rsna: .*chexpert: "):
        convert_sources(["rsna", "chexpert"], tmp_path / "out", sizes=[64])
