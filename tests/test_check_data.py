"""Issue 24, "no silent wrong result": check-data reports every problem of a competition folder at
once, preprocess refuses to start on one (or leaves exactly the images concerned out with
--keep-going), never drops most of a set quietly, never opens a FIFO, never lets two runs write one
folder, verifies what a resume skips, and writes its tables atomically."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from fifo_guard import call_without_hanging
from siimcovid.__main__ import main
from siimcovid.atomic import WriteError, atomic_write, folder_lock, write_csv
from siimcovid.checkdata import check_data
from siimcovid.data import IMAGE_CSV, STUDY_CSV, scan_dicoms
from siimcovid.dev.synthetic import SynthConfig, generate
from siimcovid.errors import UserError
from siimcovid.layout import read_errors, read_meta
from siimcovid.preprocess.convert import LOCK_FILE, PreprocessConfig, run

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The least populated class")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """8 studies (one image each), about 2 of them test; films of ~60-130 px."""
    root = tmp_path_factory.mktemp("base")
    generate(SynthConfig(out=str(root), studies=8, seed=3, scale=0.03, test_fraction=0.25, multi_image_rate=0.0),
             progress=False)
    return root


@pytest.fixture()
def data(base, tmp_path) -> Path:
    """A fresh copy of the base set to spoil."""
    return Path(shutil.copytree(base, tmp_path / "d"))


def pre(data: Path, out: Path, **kw) -> dict:
    return run(PreprocessConfig(data=str(data), out=str(out), sizes=[16], workers=1, progress=False, n_folds=2,
                                **kw))


def train_rows(data: Path) -> pd.DataFrame:
    """train_image_level.csv as written, plus each image's file."""
    rows = pd.read_csv(data / IMAGE_CSV, dtype=str, keep_default_na=False)
    files = scan_dicoms(data / "train")
    path_of = dict(zip(files["image_id"], files["path"]))
    return rows.assign(image_id=rows["id"].str.replace("_image", ""), path=lambda d: d["image_id"].map(path_of))


# ---------------------------------------------------------------- check-data itself


def test_a_clean_set_has_no_error_and_synth_check_runs_it(base, tmp_path, capsys):
    report = check_data(base)
    assert report.ok and report.errors == [] and report.counts["train image rows"] >= 3
    assert main(["check-data", "--data", str(base)]) == 0
    assert "0 error(s)" in capsys.readouterr().out
    out = tmp_path / "s"
    assert main(["synth", "--out", str(out), "--studies", "3", "--scale", "0.03", "--no-progress", "--check"]) == 0
    assert "check-data" in capsys.readouterr().out


def test_every_problem_is_reported_at_once_by_file_and_line(data, capsys):
    """Headers aside, each kind the issue lists: a one-hot row, id suffixes, boxes that do not parse,
    lie off the image or disagree with label, a file in another study's folder, a stray copy, a
    FIFO, a study without a label row."""
    studies = pd.read_csv(data / STUDY_CSV, dtype=str)
    studies.iloc[0, 0] = studies.iloc[0, 0].replace("_study", "_image")  # line 2: wrong suffix
    studies.iloc[1, 1:] = ["1", "1", "0", "0"]  # line 3: two ones
    studies.to_csv(data / STUDY_CSV, index=False)
    rows = train_rows(data)
    assert len(rows) >= 4
    img = rows.drop(columns=["image_id", "path"])
    img.loc[0, "boxes"] = "[{'x': 1, 'y': 2, 'width'"  # line 2: does not parse
    img.loc[1, "label"] = "none 1 0 0 1 1"  # line 3: none beside boxes
    img.loc[1, "boxes"] = "[{'x': 1, 'y': 2, 'width': 3, 'height': 4}, {'x': 5, 'y': 6, 'width': 3, 'height': 4}]"
    img.loc[2, "label"] = "opacity 1 -5 2 10 12"  # line 4: negative, and the boxes column disagrees
    img.loc[2, "boxes"] = "[{'x': -5, 'y': 2, 'width': 15, 'height': 10}]"
    img.loc[3, "label"] = "opacity 1 2 2 99999 12"  # line 5: off the image
    img.loc[3, "boxes"] = "[{'x': 2, 'y': 2, 'width': 99997, 'height': 10}]"
    img.to_csv(data / IMAGE_CSV, index=False)
    moved = Path(rows.loc[1, "path"])  # into another study's folder
    other_series = Path(rows.loc[2, "path"]).parent
    shutil.move(moved, other_series / moved.name)
    stray = Path(rows.loc[3, "path"])
    shutil.copyfile(stray, Path(rows.loc[0, "path"]).parent / stray.name)
    fifo = Path(rows.loc[0, "path"])
    fifo.unlink()
    os.mkfifo(fifo)

    report = call_without_hanging(lambda: check_data(data), fifo)
    text = "\n".join(report.errors)
    sc, ic = data / STUDY_CSV, data / IMAGE_CSV
    assert f"{sc} line 2: id" in text and "ends in _image, expected _study" in text
    assert f"{sc} line 3: labels" in text and "exactly one 1" in text
    assert f"{ic} line 2: boxes: not a Python literal" in text
    assert f"{ic} line 3: label says none but 2 box(es) are given" in text
    assert f"{ic} line 4:" in text and "negative coordinates" in text
    assert f"{ic} line 5:" in text and "outside the" in text
    assert f"{ic} line 3: image {rows.loc[1, 'image_id']} belongs to study" in text
    assert f"a second file for image {rows.loc[3, 'image_id']}" in text and "stray copy" in text
    assert "FIFO (named pipe), not a regular file" in text
    assert "has no row in train_study_level.csv" in text
    assert set(report.bad_images) >= set(rows["image_id"][:4])
    assert call_without_hanging(lambda: main(["check-data", "--data", str(data)]), fifo) == 1  # the CLI lists them
    assert capsys.readouterr().out.count("ERROR") == len(report.errors)


# ---------------------------------------------------------------- preprocess runs it


def test_preprocess_refuses_bad_boxes_and_keep_going_leaves_them_out(data, tmp_path):
    """Issue case 3: a bad boxes row used to be copied into meta.csv as it was."""
    img = pd.read_csv(data / IMAGE_CSV, dtype=str, keep_default_na=False)
    img.loc[0, "label"] = "opacity 1 2 2 99999 12"
    img.loc[0, "boxes"] = "[{'x': 2, 'y': 2, 'width': 99997, 'height': 10}]"
    img.to_csv(data / IMAGE_CSV, index=False)
    bad = img.loc[0, "id"].replace("_image", "")
    out = tmp_path / "p"
    with pytest.raises(UserError, match=r"check-data found 1 error\(s\).*--keep-going"):
        pre(data, out)
    assert not out.exists()  # refused before anything was written
    pre(data, out, keep_going=True, max_drop=0.5)
    assert bad not in set(read_meta(out)["image_id"])
    errors = read_errors(out)
    assert "left out (--keep-going)" in errors.set_index("image_id").loc[bad, "reason"]


def test_the_copy_the_csv_names_wins_over_a_stray_copy(data, tmp_path):
    """Issue case 1: a stray copy in a study sorting first used to win, giving the image the other
    study's label and boxes."""
    rows = train_rows(data).sort_values("StudyInstanceUID", ignore_index=True)
    first, victim = rows.iloc[0], rows.iloc[-1]
    stray = Path(first["path"]).parent / Path(victim["path"]).name  # beside the first study's image
    shutil.copyfile(victim["path"], stray)
    with pytest.raises(UserError, match="remove the stray copy"):
        pre(data, tmp_path / "p")
    pre(data, tmp_path / "p", keep_going=True)
    meta = read_meta(tmp_path / "p").set_index("image_id")
    assert meta.loc[victim["image_id"], "study_id"] == victim["StudyInstanceUID"]
    assert meta.loc[victim["image_id"], "dicom"] == str(Path(victim["path"]).relative_to(data))
    errors = read_errors(tmp_path / "p")
    row = errors[errors["dicom"] == str(stray.relative_to(data))]
    assert len(row) == 1 and "stray copy" in row["reason"].iloc[0]


@pytest.mark.parametrize("spoil", ["header_only", "image_suffix"])
def test_dropping_most_of_the_train_set_fails(data, tmp_path, spoil):
    """Issue case 2: a header-only train_study_level.csv (or study ids with the _image suffix)
    used to drop every train image with exit 0."""
    studies = pd.read_csv(data / STUDY_CSV, dtype=str)
    if spoil == "header_only":
        studies.iloc[:0].to_csv(data / STUDY_CSV, index=False)
    else:
        studies.assign(id=studies["id"].str.replace("_study", "_image")).to_csv(data / STUDY_CSV, index=False)
    with pytest.raises(UserError, match="check-data found"):
        pre(data, tmp_path / "p")
    with pytest.raises(UserError, match=r"would be left out \(more than --max-drop 0.05"):
        pre(data, tmp_path / "q", keep_going=True)


def test_a_fifo_in_place_of_a_train_dicom_does_not_hang(data, tmp_path):
    """Issue case 13: the fold step opened it and waited forever (--timeout covers conversion only)."""
    victim = Path(train_rows(data)["path"].iloc[0])
    victim.unlink()
    os.mkfifo(victim)
    with pytest.raises(UserError, match="FIFO"):  # check-data lists it without opening it
        call_without_hanging(lambda: pre(data, tmp_path / "p"), victim)
    # past check-data: the index, the fold step (which used to hang) and the conversion
    summary = call_without_hanging(lambda: pre(data, tmp_path / "p", keep_going=True, max_drop=0.5), victim)
    assert summary["counts"]["missing"] == 1  # the image is lost, and says so (exit 1)
    errors = read_errors(tmp_path / "p")
    assert "not a regular file" in errors.set_index("image_id").loc[victim.stem, "reason"]


@pytest.mark.parametrize("percentiles", [(99, 1), (50, 50), (-1, 99), (1, 101)])
def test_percentiles_low_above_high_are_refused(base, tmp_path, capsys, percentiles):
    """Issue case 5: --percentiles 99 1 inverted most images."""
    lo, hi = map(str, percentiles)
    out = tmp_path / "p"
    assert main(["preprocess", "--data", str(base), "--out", str(out), "--percentiles", lo, hi, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--percentiles" in err and "LO < HI" in err and len(err.splitlines()) == 1 and not out.exists()


# ---------------------------------------------------------------- the output folder


@pytest.fixture(scope="module")
def done(base, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("done")
    pre(base, out)
    return out


def test_a_second_run_into_a_locked_folder_is_refused(base, done, tmp_path):
    """Issue case 7: two --overwrite runs at once interleaved their files. The lock is held here
    as a concurrent run would hold it (flock locks of two open() calls conflict, also in one process)."""
    copy = Path(shutil.copytree(done, tmp_path / "copy"))
    before = (copy / "meta.csv").read_bytes()
    with folder_lock(copy, LOCK_FILE, what="preprocess run"):
        with pytest.raises(UserError, match=rf"another preprocess run is writing here \(pid {os.getpid()}"):
            pre(base, copy, overwrite=True)
    assert (copy / "meta.csv").read_bytes() == before
    assert pre(base, copy)["counts"]["skipped_done"] == len(read_meta(copy))  # released: runs again


def test_resume_redoes_a_png_changed_after_the_run(base, done, tmp_path):
    """Issue case 8: PNGs zeroed after a finished run were kept ("0 converted, 20 already done")."""
    copy = Path(shutil.copytree(done, tmp_path / "copy"))
    pngs = sorted((copy / "images" / "16").rglob("*.png"))
    zeroed, cut = pngs[0], pngs[1]
    good = zeroed.read_bytes()
    zeroed.write_bytes(b"\0" * len(good))  # same size, no content
    cut.write_bytes(cut.read_bytes()[:-20])
    summary = pre(base, copy)
    assert summary["counts"]["converted"] == 2 and summary["counts"]["redone"] == 2
    assert summary["counts"]["skipped_done"] == len(pngs) - 2
    assert zeroed.read_bytes() == good


def _unwritable(folder: Path):
    """Make ``folder`` unwritable the way the machine allows (chmod for a user, chattr +i for
    root); None when neither works here."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return lambda: folder.chmod(0o700)
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    return None


def test_an_unwritable_out_is_a_user_error(base, tmp_path, capsys):
    """Issue case 11: a PermissionError traceback with exit 1."""
    out = tmp_path / "ro"
    undo = _unwritable(out)
    if undo is None:
        pytest.skip("cannot make a folder unwritable here")
    try:
        rc = main(["preprocess", "--data", str(base), "--out", str(out), "--size", "16", "--no-progress"])
    finally:
        undo()
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"--out {out}: cannot write there" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_a_full_disk_keeps_the_previous_meta_csv(base, done, tmp_path, monkeypatch, capsys):
    """Issue case 12: ENOSPC left meta.csv at 0 bytes beside stale .tmp files, with a traceback.
    The disk fills when meta.csv is flushed (os.fsync: where a full disk surfaces)."""
    copy = Path(shutil.copytree(done, tmp_path / "copy"))
    before = (copy / "meta.csv").read_bytes()
    real = os.fsync

    def full(fd):
        if "meta.csv" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", full)
    rc = main(["preprocess", "--data", str(base), "--out", str(copy), "--size", "16", "--workers", "1",
               "--no-progress", "--k", "2"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "meta.csv: cannot write (no space left on device); the previous file is kept" in err
    assert (copy / "meta.csv").read_bytes() == before
    assert not [p for p in copy.rglob("*.tmp")]


def test_atomic_write_leaves_the_old_file_and_no_temp_on_failure(tmp_path):
    target = tmp_path / "t.csv"
    write_csv(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "a\n1\n" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]
    with pytest.raises(WriteError, match="nothing was written there"):
        with atomic_write(tmp_path / "new.csv") as f:
            raise OSError(errno.ENOSPC, "full")
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]
