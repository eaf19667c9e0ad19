"""Smoke tests of ``python -m siimcovid bench study-input`` at 64 px on a handful of images
(synth + preprocess with TFRecords, both input routes, three augmentation settings, a tiny
hub model step; ~25 s on 2 cores) and of ``bench preprocess-profile`` on tiny DICOMs."""
from __future__ import annotations

import json

import pytest

import siimcovid  # noqa: F401  (before TensorFlow)


def test_bench_study_input_smoke(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from siimcovid.__main__ import main

    out = tmp_path / "b"
    assert main(["bench", "study-input", "--out", str(out), "--size", "64", "--images", "12", "--scale", "0.0625",
                 "--batch-size", "4", "--batches", "2", "--steps", "1"]) == 0
    text = capsys.readouterr().out
    s = json.loads((out / "bench_study_input.json").read_text())
    assert {(r["format"], r["augment"]) for r in s["pipeline"]} == {
        (f, a) for f in ("png", "tfrecord") for a in ("no_aug", "aug", "aug+randaug")}
    assert all(r["img_s"] > 0 and r["ratio_to_model"] > 0 for r in s["pipeline"])
    assert s["model"]["img_s"] > 0 and s["model"]["params"] > 0 and s["size"] == 64
    assert (out / "pre" / "tfrecords" / "64").is_dir() and (out / "tiny_hub" / "saved_model.pb").is_file()
    for r in s["pipeline"]:
        assert r["ratio_to_model"] == pytest.approx(r["img_s"] / s["model"]["img_s"])
    demand = s["assumed_demand_effv2l_hub_512"]
    assert set(demand) == {"tpu_v5e_8", "2xT4"}
    for fmt in ("png", "tfrecord"):  # cores = demand / (slowest aug+randaug rate per core here)
        per_core = min(r["img_s"] for r in s["pipeline"] if r["format"] == fmt and r["augment"] == "aug+randaug") / s["cpus"]
        for d in demand.values():
            assert d["cores_needed"][fmt] == pytest.approx(d["img_s"] / per_core)
    assert "ASSUMPTION" in text and "tfrecord" in text and "img/s" in text


def test_cached_study_input_set_is_keyed_on_its_seed(tmp_path, monkeypatch):
    """The cached synthetic set is reused for the same settings only: another seed rebuilds it
    from scratch (no file of the old set left)."""
    from pathlib import Path

    from siimcovid.dev import bench, synthetic
    from siimcovid.preprocess import convert as preprocess

    calls = []

    def fake_synth(argv):
        out = Path(argv[argv.index("--out") + 1])
        assert not out.exists()  # the old set was removed, never merged
        out.mkdir(parents=True)
        (out / f"seed{argv[argv.index('--seed') + 1]}").write_text("")
        calls.append(argv)
        return 0

    def fake_preprocess(argv):
        pre, size = Path(argv[argv.index("--out") + 1]), argv[argv.index("--size") + 1]
        (pre / "tfrecords" / size).mkdir(parents=True)
        (pre / "tfrecords" / size / "train-f0-000-1.tfrec").write_text("")
        (pre / "images" / size).mkdir(parents=True)
        (pre / "meta.csv").write_text("image_id\n")
        return 0

    monkeypatch.setattr(synthetic, "cli", fake_synth)
    monkeypatch.setattr(preprocess, "cli", fake_preprocess)
    bench.make_study_input_set(tmp_path, size=32, images=4, seed=0)
    bench.make_study_input_set(tmp_path, size=32, images=4, seed=0)
    assert len(calls) == 1
    bench.make_study_input_set(tmp_path, size=32, images=4, seed=1)
    assert len(calls) == 2 and [p.name for p in (tmp_path / "data").iterdir()] == ["seed1"]
    bench.make_study_input_set(tmp_path, size=32, images=8, seed=1)
    assert len(calls) == 3


def test_bench_preprocess_profile_smoke(tmp_path, capsys):
    """``bench preprocess-profile`` on tiny files: every step timed for both syntaxes and sizes,
    the PNG table filled, and only the small task / result dicts cross the worker's pipe."""
    from siimcovid.__main__ import main

    out = tmp_path / "p"
    assert main(["bench", "preprocess-profile", "--out", str(out), "--per-syntax", "1", "--repeats", "1",
                 "--scale", "0.02", "--size", "32"]) == 0
    s = json.loads((out / "profile.json").read_text())
    assert {(r["size"], r["syntax"]) for r in s["rows"]} == {(32, t) for t in ("explicit", "rle")}
    for r in s["rows"]:
        assert r["decoder"] == {"explicit": "native", "rle": "rle"}[r["syntax"]]
        assert set(r["ms"]) == {"read", "decode", "voi", "lut", "resize", "encode", "write", "total"}
        assert 0 < r["ipc_bytes"] < 2000  # no image crosses a pipe
    assert {p["setting"] for p in s["png"] if p["size"] == 32} >= {"opencv default (level 1, rle)", "level 9"}
    text = capsys.readouterr().out
    assert "pool+IPC" in text and "huffman only (project default)" in text
