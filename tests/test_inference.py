"""The inference kernel end to end on a tiny synthetic competition: test DICOMs -> study fold +
small learner -> submission.csv; skipped folds, a corrupted test DICOM, the priors fallback and
the notebook under papermill.

One fold of the tiny hub model (64 px, 1 epoch of 2 steps) is trained once per module; the
learner runs with 30 boosting rounds. About 45 s on 2 CPU cores."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import siimcovid  # noqa: F401  (before TensorFlow: selects tf_keras for hub and sm)
from siimcovid import inference as I
from siimcovid.study import predict as P
from siimcovid.data import STUDY_CLASSES, read_image_csv, read_study_csv

ROOT = Path(__file__).resolve().parents[1]
LEARNER = {"patch_iter": 30}  # keeps the learner to a couple of seconds; the default is 150


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic competition (30 studies, 1/16 size), its preprocess output at 64 px, one trained
    fold, two broken fold folders, and a copy of the data with one test DICOM truncated."""
    pytest.importorskip("tensorflow")
    from siimcovid.preprocess.convert import PreprocessConfig, run as preprocess
    from siimcovid.study.config import load_config
    from siimcovid.classify.backbones import export_tiny_savedmodel
    from siimcovid.study.train import train_fold
    from siimcovid.dev.synthetic import cli as synth

    root = tmp_path_factory.mktemp("infer")
    data = root / "data"
    assert synth(["--out", str(data), "--studies", "30", "--seed", "3", "--scale", "0.0625", "--no-progress"]) == 0
    pre = root / "pre"
    preprocess(PreprocessConfig(data=str(data), out=str(pre), sizes=[64], workers=1, n_folds=2, progress=False))
    hub = export_tiny_savedmodel(root / "tiny_hub", width=8)
    work = root / "W"
    cfg = load_config("tiny_cpu", overrides=dict(hub_handle=str(hub), preprocess=str(pre), workdir=str(work), fold=0,
                                                 epochs=1, steps_per_epoch=2, batch_size=4, verbose=0))
    train_fold(cfg)
    good = work / "tiny_cpu" / "fold0"
    no_weights = work / "tiny_cpu" / "fold1"  # config.json but the weights never got written
    no_weights.mkdir()
    shutil.copy(good / "config.json", no_weights / "config.json")
    bad_weights = work / "tiny_cpu" / "fold2"  # weights file that is not HDF5
    bad_weights.mkdir()
    shutil.copy(good / "config.json", bad_weights / "config.json")
    (bad_weights / "best.weights.h5").write_bytes(b"not an hdf5 file")

    bad_data = root / "data_bad"
    shutil.copytree(data, bad_data)
    dicoms = sorted((bad_data / "test").rglob("*.dcm"))
    victim = dicoms[0]
    victim.write_bytes(victim.read_bytes()[:200])  # header cut short, no pixel data
    return {"root": root, "data": data, "bad_data": bad_data, "pre": pre, "work": work, "good": good,
            "no_weights": no_weights, "bad_weights": bad_weights, "victim": victim.stem, "hub": hub}


@pytest.fixture(scope="module")
def bad_run(world):
    """`python -m siimcovid infer` on the data with the truncated DICOM, the three folds and a
    study folder that does not exist."""
    from siimcovid.__main__ import main

    out = world["root"] / "out_bad"
    rc = main(["infer", "--data", str(world["bad_data"]), "--train-pre", str(world["pre"]), "--study-work",
               str(world["work"]), str(world["root"] / "nope"), "--out", str(out), "--workers", "1",
               "--set", "learner.patch_iter=30", "--no-progress"])
    return {"rc": rc, "out": out, "summary": json.loads((out / I.SUMMARY).read_text())}


def _sample(data: Path) -> pd.DataFrame:
    return pd.read_csv(data / "sample_submission.csv", dtype=str, keep_default_na=False)


def test_submission_has_every_sample_id_once(world, bad_run):
    sub = pd.read_csv(bad_run["out"] / "submission.csv", dtype=str, keep_default_na=False)
    sample = _sample(world["bad_data"])
    assert sorted(sub["id"]) == sorted(sample["id"]) and not sub["id"].duplicated().any()
    assert (sub["PredictionString"].str.len() > 0).all()
    # the only validation complaint allowed is the truncated DICOM's unreadable header
    for p in bad_run["summary"]["validation_problems"]:
        assert world["victim"] in p, p
    assert bad_run["rc"] == (1 if bad_run["summary"]["validation_problems"] else 0)


def test_study_rows_come_from_the_model(world, bad_run):
    """Studies without the broken image equal the fold's own test predictions (same pixels,
    same weights, hflip TTA, mean over images) and differ from the priors."""
    from siimcovid.baseline import class_priors
    from siimcovid.study.evaluate import aggregate_study
    from siimcovid.tables import TTA_COLS

    study = pd.read_csv(bad_run["out"] / "test_study.csv", dtype={"study_id": str}).set_index("study_id")
    assert list(study.columns) == list(STUDY_CLASSES)
    np.testing.assert_allclose(study.sum(axis=1), 1.0, rtol=1e-5)
    fold_test = pd.read_csv(world["good"] / "test.csv", dtype={"image_id": str, "study_id": str})
    victim_study = fold_test.loc[fold_test["image_id"] == world["victim"], "study_id"].iloc[0]
    ref = aggregate_study(fold_test[fold_test["image_id"] != world["victim"]], TTA_COLS).set_index("study_id")
    ref = ref.drop(index=victim_study, errors="ignore")  # (gone already when it held one image)
    assert len(ref) >= 5
    np.testing.assert_allclose(study.loc[ref.index].to_numpy(), ref[TTA_COLS].to_numpy(), atol=1e-5)
    priors = class_priors(read_study_csv(world["bad_data"] / "train_study_level.csv"))
    assert np.abs(study.loc[ref.index].to_numpy() - priors).max() > 1e-3
    info = bad_run["summary"]["study"]
    if victim_study not in set(fold_test.loc[fold_test["image_id"] != world["victim"], "study_id"]):
        # the broken image was its study's only one: that study gets the priors
        assert victim_study in info["prior_studies"]
        np.testing.assert_allclose(study.loc[victim_study].to_numpy(), priors, rtol=1e-6)
    assert info["used"] == [str(world["good"])] and info["n_studies_model"] >= len(ref)


def test_broken_and_missing_folds_are_reported_and_skipped(world, bad_run):
    s = bad_run["summary"]
    folds = s["study"]["folds"]
    assert folds[str(world["good"])]["status"] == "used"
    assert folds[str(world["no_weights"])]["status"] == "skipped"
    assert "no best.weights.h5" in folds[str(world["no_weights"])]["reason"]
    assert folds[str(world["bad_weights"])]["status"] == "skipped"
    assert "cannot build/load" in folds[str(world["bad_weights"])]["reason"]
    assert any("nope does not exist" in p for p in s["fold_problems"])


def test_corrupted_test_dicom_gets_a_fallback_row_and_is_recorded(world, bad_run):
    out, victim = bad_run["out"], world["victim"]
    errors = pd.read_csv(out / "pre_test" / "errors.csv", dtype=str)
    assert victim in set(errors["image_id"]) and errors["reason"].str.len().gt(0).all()
    assert victim in bad_run["summary"]["image"]["prior_images"]
    sub = pd.read_csv(out / "submission.csv", dtype=str).set_index("id")
    p_none = read_image_csv(world["bad_data"] / "train_image_level.csv")["boxes"].map(len).eq(0).mean()
    tokens = sub.loc[f"{victim}_image", "PredictionString"].split()
    assert tokens[0] == "none" and float(tokens[1]) == pytest.approx(p_none, abs=1e-5) and len(tokens) == 6
    # the other test images went through the learner
    image = pd.read_csv(out / "test_image.csv", dtype={"image_id": str})
    assert image["boxes"].map(lambda b: len(json.loads(b))).sum() > 0
    assert bad_run["summary"]["image"]["n_prior_images"] == 1


def test_no_fold_falls_back_to_priors(world, bad_run, caplog):
    from siimcovid.baseline import class_priors

    study, info = I.predict_study([], bad_run["out"] / "pre_test", world["data"], progress=False)
    priors = class_priors(read_study_csv(world["data"] / "train_study_level.csv"))
    assert sorted(study["study_id"]) == sorted(I.sample_ids(world["data"])[0])
    np.testing.assert_allclose(study[list(STUDY_CLASSES)].to_numpy(), np.tile(priors, (len(study), 1)))
    assert info["fallback"].startswith("priors")


def test_find_fold_dirs_nested_and_by_experiment(tmp_path):
    for exp, k in (("a", 0), ("a", 1), ("b", 0)):
        d = tmp_path / "notebooks" / "u" / f"slug-{exp}{k}" / exp / f"fold{k}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"name": exp, "fold": k}))
        (d / "fold9").mkdir()  # nothing below a fold folder is another fold
        (d / "fold9" / "config.json").write_text("{}")
    (tmp_path / "notebooks" / "u" / "other" / "fold3").mkdir(parents=True)  # neither config nor weights
    found, problems = P.find_fold_dirs([tmp_path])
    assert [d.name for d in found] == ["fold0", "fold1", "fold0"] and not problems
    only_a, _ = P.find_fold_dirs([tmp_path], exp="a")
    assert [d.parent.name for d in only_a] == ["a", "a"]
    none, problems = P.find_fold_dirs([tmp_path / "missing"])
    assert not none and "does not exist" in problems[0]


def test_fold_hub_from_another_machine_is_found_by_name(tmp_path, monkeypatch):
    for name in ("other_hub", "tiny_hub"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "saved_model.pb").write_bytes(b"")
    monkeypatch.setenv("SIIM_INPUT", str(tmp_path))
    assert P.resolve_fold_hub("/home/someone/work/tiny_hub") == str(tmp_path / "models" / "tiny_hub")
    assert P.resolve_fold_hub("/gone/unknown_name") == str(tmp_path / "models" / "other_hub")
    monkeypatch.setenv("SIIM_INPUT", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        P.resolve_fold_hub("/gone/tiny_hub")


def test_config_from_notebook_parameters():
    cfg = I.config_from_params(study_work="/a", learner_size="128", tta="off", out=None, learner={"patch_iter": "40"})
    assert cfg.study_work == ["/a"] and cfg.learner_size == 128 and cfg.tta is False and cfg.out is None
    assert I.check_learner_options(cfg.learner) == {"patch_iter": 40}
    with pytest.raises(ValueError, match="unknown infer config key .nonsense."):
        I.config_from_params(nonsense=1)
    with pytest.raises(ValueError, match="unknown learner.*key .depth."):
        I.check_learner_options({"depth": 3})


def test_notebook_runs_under_papermill(world):
    import papermill as pm

    run_dir = world["root"] / "nb"
    run_dir.mkdir()
    out = run_dir / "out"
    pm.execute_notebook(str(ROOT / "notebooks" / "inference.ipynb"), str(run_dir / "inference.out.ipynb"),
                        parameters=dict(data_dir=str(world["data"]), train_pre=str(world["pre"]),
                                        study_work=[str(world["good"])], out_dir=str(out), learner_size=64, workers=1,
                                        threads=2, learner=LEARNER),
                        cwd=str(run_dir), progress_bar=False, kernel_name="python3")
    from siimcovid.submission import validate_submission

    assert validate_submission(out / "submission.csv", world["data"]) == []
    sub = pd.read_csv(out / "submission.csv", dtype=str)
    assert sorted(sub["id"]) == sorted(_sample(world["data"])["id"])
    summary = json.loads((out / I.SUMMARY).read_text())
    assert summary["study"]["used"] == [str(world["good"])] and summary["score"]["score"] > 0
    nb = json.loads((run_dir / "inference.out.ipynb").read_text())
    images = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the notebook should show test images with their boxes"


def test_finds_every_input_in_a_kaggle_shaped_layout(world, tmp_path, monkeypatch):
    """The kernel's defaults (every path None) against the nested /kaggle/input layout: the
    competition, the preprocess kernel's output, the fold kernel's output and the backbone are all
    found by their marker files; the fold's training-machine hub path does not exist here."""
    inp = tmp_path / "input"
    comp = inp / "competitions" / "siim-covid19-detection"
    shutil.copytree(world["data"], comp, ignore=shutil.ignore_patterns("truth"))
    shutil.copytree(world["pre"], inp / "notebooks" / "alice" / "siimcovid-preprocess")
    fold = inp / "notebooks" / "alice" / "siimcovid-train-study-fold-0" / "tiny_cpu" / "fold0"
    shutil.copytree(world["good"], fold)
    cfg = json.loads((fold / "config.json").read_text())
    (fold / "config.json").write_text(json.dumps({**cfg, "hub_handle": "/nowhere/tiny_hub"}))
    shutil.copytree(world["hub"], inp / "models" / "google" / "efficientnet-v2" / "tensorFlow2" / "tiny" / "1")
    monkeypatch.setenv("SIIM_INPUT", str(inp))
    out = tmp_path / "working"
    summary = I.run(I.config_from_params(data=None, train_pre=None, study_work=None, out=str(out), learner_size=None,
                                         limit=0, exp=None, hub=None, batch_size=None, tta=None, workers=1,
                                         threads=0, seed=0, learner=LEARNER))
    assert Path(summary["data"]) == comp
    assert Path(summary["train_pre"]) == inp / "notebooks" / "alice" / "siimcovid-preprocess"
    assert [Path(d) for d in summary["fold_dirs"]] == [fold]
    sub = pd.read_csv(out / "submission.csv", dtype=str, keep_default_na=False)
    assert sub["id"].tolist() == _sample(comp)["id"].tolist()
    assert summary["study"]["used"] == [str(fold)] and not summary["study"]["skipped"]
    assert summary["study"]["n_studies_model"] == len(read_study_csv(world["data"] / "truth" / "test_study_level.csv"))
