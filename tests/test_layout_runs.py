"""layout.py (the preprocess output) and runs.py (a training run's folder): one reader each."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from siimcovid import layout, runs
from siimcovid.boxes import Resize


def write_meta(root, with_size_column: bool = True):
    rows = [
        {"image_id": "a", "study_id": "s1", "series_id": "r", "split": "train", "orig_h": 400, "orig_w": 200,
         "keep_aspect": True, "boxes": "[[10, 20, 110, 220]]", "study_label": 1, "fold": 0},
        {"image_id": "b", "study_id": "s2", "series_id": "r", "split": "test", "orig_h": 100, "orig_w": 100,
         "keep_aspect": False, "boxes": "[]", "study_label": -1, "fold": -1},
    ]
    df = pd.DataFrame(rows)
    if with_size_column:
        df["boxes_64"] = ["[[1.6, 3.2, 17.6, 35.2]]", "[]"]
    df.to_csv(root / layout.META_CSV, index=False)


@pytest.mark.parametrize("with_size_column", [True, False])
def test_read_meta_parses_boxes_once_in_each_frame(tmp_path, with_size_column):
    write_meta(tmp_path, with_size_column)
    meta = layout.read_meta(tmp_path, 64)
    a = meta.set_index("image_id").loc["a"]
    assert a["boxes"] == [[10.0, 20.0, 110.0, 220.0]] and bool(a["keep_aspect"])
    expect = Resize.plan(400, 200, 64, keep_aspect=True).to_resized(np.array([[10.0, 20, 110, 220]]))
    np.testing.assert_allclose(a["boxes_frame"], expect, atol=0.05)
    assert a["path"] == str(layout.image_path(tmp_path, 64, "train", "a"))
    assert list(layout.read_meta(tmp_path, split="test")["image_id"]) == ["b"]
    assert layout.meta_sizes(layout.read_meta(tmp_path)) == ([64] if with_size_column else [])


def test_read_meta_names_what_is_wrong(tmp_path):
    with pytest.raises(layout.MissingPreprocess, match="meta.csv: not found"):
        layout.read_meta(tmp_path)
    write_meta(tmp_path)
    meta = pd.read_csv(tmp_path / layout.META_CSV)
    meta.loc[0, "boxes"] = "[[1, 2, 3]]"
    meta.to_csv(tmp_path / layout.META_CSV, index=False)
    with pytest.raises(ValueError, match="image a boxes"):
        layout.read_meta(tmp_path)


def test_sizes_errors_and_pixel_settings(tmp_path):
    assert layout.available_sizes(tmp_path) == [] and layout.read_errors(tmp_path).empty
    for s in (256, 64):
        (tmp_path / "images" / str(s)).mkdir(parents=True)
    assert layout.available_sizes(tmp_path) == [64, 256]
    (tmp_path / layout.SUMMARY_JSON).write_text(json.dumps(
        {"config": {"keep_aspect": True, "percentiles": [1, 99], "sizes": [64], "workers": 2}}))
    assert layout.pixel_settings(tmp_path) == {"keep_aspect": True, "percentiles": (1, 99)}
    assert layout.pixel_settings(None) == {}


def test_pick_size_and_find_preprocess(tmp_path):
    for s in (64, 256):
        (tmp_path / "pre" / "images" / str(s)).mkdir(parents=True)
    pre = tmp_path / "pre"
    assert layout.pick_size(pre, 48) == 64 and layout.pick_size(pre, 100) == 256 and layout.pick_size(pre, 512) == 256
    assert layout.pick_size(pre, 512, src_size=64) == 64
    with pytest.raises(FileNotFoundError, match="128: not there; sizes found \\[64, 256\\]"):
        layout.pick_size(pre, 64, src_size=128)
    with pytest.raises(FileNotFoundError, match="tfrecords: no tfrecords/<size>/ folders"):
        layout.pick_size(pre, 64, input_format="tfrecord")
    with pytest.raises(layout.MissingPreprocess, match="meta.csv.*pass --preprocess"):
        layout.find_preprocess(tmp_path)
    (pre / layout.META_CSV).write_text("image_id,study_id,split\n")
    assert layout.find_preprocess(tmp_path) == pre


def test_write_subset_keeps_the_rows_asked_for_and_links_their_images(tmp_path):
    pre, out = tmp_path / "pre", tmp_path / "sub"
    meta = pd.DataFrame({"image_id": ["t1", "t2", "t3", "r1"], "study_id": ["s", "s", "u", "v"],
                         "split": ["test", "test", "test", "train"], "boxes": ["[]"] * 4})
    pre.mkdir()
    meta.to_csv(pre / layout.META_CSV, index=False)
    for size in (32, 64):
        for i, split in zip(meta["image_id"], meta["split"]):
            p = layout.image_path(pre, size, split, i)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(f"{i}@{size}".encode())
    layout.image_path(pre, 64, "test", "t2").unlink()  # a PNG that failed: no link, the row stays
    (out / "stale").mkdir(parents=True)
    assert layout.write_subset(pre, out, split="test", n=2) == out
    assert not (out / "stale").exists()  # replaced, not merged
    assert list(layout.read_meta(out)["image_id"]) == ["t1", "t2"]
    assert layout.available_sizes(out) == [32, 64]
    assert layout.image_path(out, 64, "test", "t1").read_bytes() == b"t1@64"
    assert layout.image_path(out, 32, "test", "t2").is_file() and not layout.image_path(out, 64, "test", "t2").exists()
    assert not layout.image_path(out, 32, "test", "t3").exists()
    layout.write_subset(pre, out, ["r1", "t3"])
    assert list(layout.read_meta(out)["image_id"]) == ["t3", "r1"]
    assert layout.image_path(out, 32, "train", "r1").read_bytes() == b"r1@32"


def make_fold(d, name="exp", **files):
    d.mkdir(parents=True)
    runs.write_config(d, {"name": name, "image_size": 64}, **files)
    return d


def test_find_runs_one_rule_depth_limited_and_never_in_dicom_trees(tmp_path):
    a0 = make_fold(tmp_path / "k" / "a" / "fold0", "a")
    b1 = make_fold(tmp_path / "k" / "b" / "fold1", "b")
    w = tmp_path / "w" / "fold2"  # weights only (copied for inference)
    w.mkdir(parents=True)
    (w / runs.BEST_WEIGHTS).write_text("")
    (tmp_path / "k" / "a" / "fold3").mkdir()  # named like a fold, holds nothing: not one
    comp = tmp_path / "comp"  # a competition folder: never searched
    make_fold(comp / "train" / "fold4")
    (comp / "sample_submission.csv").write_text("id,PredictionString\n")
    deep = tmp_path / "d1" / "d2" / "d3" / "fold5"
    make_fold(deep)
    assert runs.find_runs([tmp_path]) == sorted([a0, b1, w, deep])
    assert runs.find_runs([tmp_path], max_depth=3) == sorted([a0, b1, w])
    assert runs.find_runs([tmp_path], exp="a") == [a0]
    assert runs.find_runs(a0) == [a0]  # a root may be a fold
    problems: list[str] = []
    assert runs.find_runs([tmp_path / "missing"], problems=problems) == [] and "does not exist" in problems[0]
    (a0 / runs.RUN_JSON).write_text(json.dumps({"stage": "binary-train"}))
    assert a0 not in runs.find_runs([tmp_path], stage="study-train")


def test_write_config_records_the_resolved_source_size(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        name: str = "x"
        image_size: int = 64
        src_size: int | None = None

    d = tmp_path / "fold0"
    runs.write_config(d, Cfg())
    assert runs.read_config(d)["src_size"] is None and runs.src_size(d) == 64  # nothing recorded: the input size
    pre = tmp_path / "pre"
    for size in (32, 80, 256):
        (pre / "images" / str(size)).mkdir(parents=True)
    assert runs.src_size(d, train_pre=pre) == 80  # what training would pick: the smallest S >= 64
    assert runs.src_size(d, train_pre=tmp_path / "no_pre") == 64
    det = tmp_path / "det" / "fold0"
    runs.write_config(det, {"siim": {"size": 320}})
    assert runs.src_size(det) == 320  # a detector config that predates src_size
    runs.write_config(det, {"siim": {}})
    assert runs.src_size(det) is None
    (d / runs.SCORES_JSON).write_text(json.dumps({"data": {"src_size": 96}}))
    assert runs.src_size(d) == 96  # an older fold: what training picked
    runs.write_config(d, Cfg(), src_size=128)
    assert runs.read_config(d)["src_size"] == 128 and runs.src_size(d) == 128
    with pytest.raises(FileNotFoundError, match="config.json"):
        runs.read_config(tmp_path / "nope")
