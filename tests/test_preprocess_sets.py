"""preprocess on small and mixed sets: a subset with fewer patient groups than folds converts,
an output folder knows which set it holds, listed-but-missing files are reported, and user
mistakes stop before anything is written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from siimcovid.__main__ import main
from siimcovid.errors import UserError
from siimcovid.layout import SOURCE_JSON, read_errors, read_meta
from siimcovid.preprocess.convert import PreprocessConfig, run
from siimcovid.dev.synthetic import SynthConfig, generate

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The least populated class")


def synth(root: Path, studies: int, seed: int, test_fraction: float = 0.0) -> Path:
    generate(SynthConfig(out=str(root), studies=studies, seed=seed, scale=0.03, test_fraction=test_fraction,
                         multi_image_rate=0.0), progress=False)
    return root


def pre(data: Path, out: Path, **kw) -> dict:
    cfg = PreprocessConfig(data=str(data), out=str(out), sizes=[16], workers=1, progress=False, **kw)
    return run(cfg)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """4 studies, 1 of them test."""
    return synth(tmp_path_factory.mktemp("small"), 4, seed=3, test_fraction=0.25)


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    return synth(tmp_path_factory.mktemp("other"), 2, seed=8, test_fraction=0.0)


@pytest.fixture(scope="module")
def small_out(small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small_out")
    pre(small, out, n_folds=5)
    return out


@pytest.mark.parametrize("studies", [1, 2])
def test_fewer_patient_groups_than_folds_still_converts(tmp_path, studies):
    data = synth(tmp_path / "d", studies, seed=5)
    summary = pre(data, tmp_path / "p", n_folds=5)
    meta = read_meta(tmp_path / "p")
    assert summary["counts"]["failed"] == 0 and len(meta) == summary["counts"]["indexed"] > 0
    assert (meta["split"] == "train").all()
    folds = pd.read_csv(tmp_path / "p" / "folds.csv")
    groups = folds["group"].nunique()
    if groups >= 2:  # one fold per group
        assert sorted(meta["fold"].unique()) == list(range(groups))
    else:  # a single group: no fold assignment
        assert (meta["fold"] == -1).all()
    if studies == 1:
        assert groups == 1


def test_same_set_resumes_and_another_set_is_refused(small, other, small_out, tmp_path):
    before = read_meta(small_out)
    again = pre(small, small_out, n_folds=5)  # same set (another size would be a resume too)
    assert again["counts"]["converted"] == 0 and again["counts"]["skipped_done"] == len(before)
    src = json.loads((small_out / SOURCE_JSON).read_text())
    assert src["ids"]["train"]["n"] + src["ids"]["test"]["n"] == len(before)

    mtime = (small_out / "meta.csv").stat().st_mtime_ns
    with pytest.raises(UserError, match=r"holds the preprocess output of another set.*--overwrite"):
        pre(other, small_out)  # other ids, other data folder
    with pytest.raises(UserError, match="pixel settings"):
        pre(small, small_out, keep_aspect=True)  # same ids, other pixels
    assert (small_out / "meta.csv").stat().st_mtime_ns == mtime  # refused before writing

    copy = tmp_path / "copy"
    shutil.copytree(small_out, copy)
    pre(other, copy, overwrite=True)
    meta = read_meta(copy)
    assert set(meta["image_id"]).isdisjoint(before["image_id"])
    pngs = {p.stem for p in (copy / "images").rglob("*.png")}
    assert pngs == set(meta["image_id"])  # nothing of the first set left


def test_legacy_folder_without_source_json_is_judged_by_its_ids(small, other, small_out, tmp_path):
    copy = tmp_path / "legacy"
    shutil.copytree(small_out, copy)
    (copy / SOURCE_JSON).unlink()
    with pytest.raises(UserError, match="another set"):
        pre(other, copy)
    pre(small, copy, n_folds=5)  # its own ids: a resume
    assert (copy / SOURCE_JSON).is_file()


def test_test_dicom_listed_but_missing_is_reported(small, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(small, data)
    gone = sorted((data / "test").rglob("*.dcm"))[0]
    gone.unlink()
    rc = main(["preprocess", "--data", str(data), "--out", str(tmp_path / "p"), "--size", "16", "--workers", "1",
               "--no-progress", "--k", "2"])
    assert rc == 1
    errors = read_errors(tmp_path / "p")
    row = errors[errors["image_id"] == gone.stem]
    assert len(row) == 1 and row["stage"].iloc[0] == "missing" and "sample_submission.csv" in row["reason"].iloc[0]
    summary = json.loads((tmp_path / "p" / "preprocess.json").read_text())
    assert summary["counts"]["missing"] == 1
    assert "1 listed but missing" in capsys.readouterr().out


@pytest.mark.parametrize("args", [
    ["--size", "100000"],  # beyond any film
    ["--size", "4"],
])
def test_bad_size_is_a_user_error_and_writes_nothing(small, tmp_path, capsys, args):
    out = tmp_path / "p"
    assert main(["preprocess", "--data", str(small), "--out", str(out), *args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--size" in err and len(err.splitlines()) == 1 and not out.exists()


def test_bad_data_folder_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SIIM_INPUT", raising=False)
    out = tmp_path / "p"
    assert main(["preprocess", "--data", str(tmp_path / "nope"), "--out", str(out), "--no-progress"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not out.exists()
    empty = tmp_path / "empty"  # looks like a competition folder, holds no DICOMs
    empty.mkdir()
    (empty / "sample_submission.csv").write_text("id,PredictionString\n")
    assert main(["preprocess", "--data", str(empty), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data" in err and "Traceback" not in err
    assert not out.exists()
    (tmp_path / "afile").write_text("x")
    assert main(["preprocess", "--data", str(empty), "--out", str(tmp_path / "afile"), "--no-progress"]) == 2


def test_a_size_beyond_the_films_is_reported(small, tmp_path, caplog):
    """scale 0.03 makes films of ~60-130 px: 16 px downsamples every one, a size past the largest
    film upsamples every one and says so (in the log and in preprocess.json)."""
    import logging

    from siimcovid.preprocess.convert import upsampled_sizes

    with caplog.at_level(logging.WARNING):
        assert pre(small, tmp_path / "p")["counts"]["upsampled_by_size"] == {}
    assert "upsampled" not in caplog.text
    meta = read_meta(tmp_path / "p")
    longest = meta[["orig_h", "orig_w"]].max(axis=1)
    largest, smallest = int(longest.max()), int(longest.min())
    assert upsampled_sizes(meta, [16, smallest]) == {}
    assert upsampled_sizes(meta, [16, largest]) == {largest: (int((longest < largest).sum()), largest)}
    caplog.clear()
    big = largest + 1
    with caplog.at_level(logging.WARNING):
        summary = run(PreprocessConfig(data=str(small), out=str(tmp_path / "q"), sizes=[big], workers=1,
                                       progress=False))
    assert summary["counts"]["upsampled_by_size"] == {str(big): len(meta)}
    assert f"--size {big} is larger than every one" in caplog.text and f"{largest} px" in caplog.text
