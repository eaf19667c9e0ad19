"""The binary `none` task without TensorFlow: labels, and its members merged by the ensemble
(binary-merge: the none AP of siimcovid.scoring, weights of ensemble.fit)."""
import json

import numpy as np
import pandas as pd
import pytest

from siimcovid.binary.config import BinaryEnsembleConfig as EnsembleConfig, load_ensemble_config
from siimcovid.binary.labels import HAS_BOX, TARGET, TRAINABLE, label_images, train_val_split
from siimcovid.ensemble.binary_merge import MERGED_OOF, MERGED_TEST, SCORES_JSON, STEPS, cli, member_col, merge
from siimcovid.ensemble.fit import fit_share, fit_simplex
from siimcovid.scoring import FullBoxAP, none_ap
from siimcovid.simplex import normalize
from siimcovid.errors import UserError
from siimcovid.metric import score_submission

BOX = [[10.0, 10.0, 50.0, 60.0]]


def _meta():
    # st0: boxed image + an unboxed extra view; st1: two unboxed images (a negative study);
    # st2: one boxed image; st3: one unboxed; st4: test.
    rows = [
        ("i0a", "st0", "train", BOX, 0), ("i0b", "st0", "train", [], 0),
        ("i1a", "st1", "train", [], 1), ("i1b", "st1", "train", [], 1),
        ("i2", "st2", "train", BOX * 2, 1), ("i3", "st3", "train", [], 0),
        ("t0", "st4", "test", [], -1),
    ]
    return pd.DataFrame(rows, columns=["image_id", "study_id", "split", "boxes", "fold"])


# --------------------------------------------------------------------------- labels
def test_unboxed_images_of_boxed_studies_leave_training_but_stay_predicted():
    lab = label_images(_meta()).set_index("image_id")
    assert lab.loc["i0b", HAS_BOX] == 0 and lab.loc["i0b", TARGET] == 1.0
    assert not lab.loc["i0b", TRAINABLE]  # the extra view of a boxed study
    assert lab.loc[["i0a", "i1a", "i1b", "i2", "i3"], TRAINABLE].all()  # unboxed studies keep their images
    assert lab.loc["i2", TARGET] == 0.0 and lab.loc["t0", HAS_BOX] == -1 and not lab.loc["t0", TRAINABLE]

    tr, va = train_val_split(lab.reset_index(), fold=1)
    assert sorted(tr["image_id"]) == ["i0a", "i3"]  # fold 0 without i0b
    tr, va = train_val_split(lab.reset_index(), fold=0)
    assert sorted(va["image_id"]) == ["i0a", "i0b", "i3"]  # validation predicts the dropped view too
    assert "t0" not in set(tr["image_id"]) | set(va["image_id"])


def test_dropping_can_be_switched_off_and_bad_input_is_named():
    lab = label_images(_meta(), drop_unboxed_of_boxed_studies=False)
    assert lab.loc[lab["image_id"] == "i0b", TRAINABLE].all()
    bad = _meta().assign(boxes=lambda d: d["boxes"].map(json.dumps))
    with pytest.raises(ValueError, match="parsed list"):
        label_images(bad)
    with pytest.raises(ValueError, match="fold 7"):
        train_val_split(label_images(_meta()), fold=7)
    unfolded = _meta()
    unfolded.loc[0, "fold"] = -1
    with pytest.raises(ValueError, match="without a fold"):
        train_val_split(label_images(unfolded), fold=0)


# --------------------------------------------------------------------------- none AP
def test_none_ap_equals_the_competition_metric_on_the_image_rows():
    rng = np.random.default_rng(3)
    n = 60
    ids = [f"im{i}" for i in range(n)]
    boxes = [BOX if rng.random() < 0.6 else [] for _ in range(n)]
    p = np.round(rng.random(n), 1)  # many ties
    sub = pd.DataFrame({"id": [f"{i}_image" for i in ids],
                        "PredictionString": [f"none {v} 0 0 1 1" for v in p]})
    truth = pd.DataFrame({"image_id": ids, "boxes": boxes})
    expected = score_submission(sub, None, truth)["ap"]["none"]
    has = np.array([len(b) > 0 for b in boxes])
    assert none_ap(p, has) == pytest.approx(expected, abs=1e-12)
    assert FullBoxAP(~has)(p) == pytest.approx(expected, abs=1e-12)
    assert none_ap(1.0 - has, has) == pytest.approx(1.0)  # a perfect ranking


def _members(n=400, seed=0):
    """Two informative members (each sees half of the signal) and one pure-noise member."""
    rng = np.random.default_rng(seed)
    has = (rng.random(n) < 0.55).astype(int)
    y = 1.0 - has
    a = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.35, n), 0, 1)
    b = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.35, n), 0, 1)
    noise = rng.random(n)
    return np.stack([a, b, noise], axis=1), has


def fit_weights(preds, has, *, margin=0.002, n_random=2000, seed=0):
    """binary-merge's fit: the none AP of the weighted mean, Dirichlet candidates, fine steps."""
    ap = FullBoxAP(np.asarray(has) == 0)
    return fit_simplex(lambda w: ap(preds @ w), preds.shape[1], margin=margin, steps=STEPS, n_random=n_random,
                       seed=seed, project=normalize)


def test_fitting_finds_the_better_mix_and_keeps_the_constraints():
    preds, has = _members()
    fit = fit_weights(preds, has, margin=0.002, n_random=300, seed=0)
    w = np.array(fit["weights"])
    assert fit["method"] == "fitted"
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert w[2] < 0.1  # the noise member is (nearly) switched off
    assert fit["score"] >= fit["score_equal"] + 0.002
    ap = FullBoxAP(has == 0)
    assert fit["score"] >= max(ap(preds[:, j]) for j in range(3))
    assert fit["score"] == pytest.approx(ap(preds @ w))
    again = fit_weights(preds, has, margin=0.002, n_random=300, seed=0)
    assert again["weights"] == fit["weights"]  # deterministic for a seed
    # the random candidates widen the search: without them the start is equal weights or one member
    assert fit_weights(preds, has, n_random=0)["score"] <= fit["score"] + 1e-12


def test_equal_weights_when_fitting_does_not_beat_them_by_the_margin():
    preds, has = _members()
    same = np.repeat(preds[:, :1], 3, axis=1)  # identical members: no mix can do better
    fit = fit_weights(same, has, margin=0.0001, n_random=50)
    assert fit["method"] == "equal" and fit["weights"] == pytest.approx([1 / 3] * 3)
    fit = fit_weights(preds, has, margin=1.0, n_random=50)  # a better mix exists but not by 1.0 AP
    assert fit["method"] == "equal" and fit["score"] == fit["score_equal"] < fit["score_fitted"]
    assert fit_weights(preds[:, :1], has)["method"] == "single"
    no_truth = fit_weights(preds, np.ones(len(has), int), n_random=5)  # every image boxed: no none AP at all
    assert no_truth["method"] == "equal" and no_truth["weights"] == pytest.approx([1 / 3] * 3)


def test_blend_weight_is_fitted_on_the_grid():
    preds, has = _members()
    ap = FullBoxAP(has == 0)
    w, best = fit_share(lambda w: ap(w * preds[:, 0] + (1 - w) * preds[:, 2]), grid=11)
    assert w >= 0.9  # the noise side gets (almost) nothing
    assert best >= ap(preds[:, 0]) - 1e-12
    assert fit_share(lambda w: 1.0, grid=11) == (0.5, 1.0)  # a flat curve: the even mix


# --------------------------------------------------------------------------- merge
def _write_member(root, member, preds, has, ids, studies, folds, n_test=6, broken=None, seed=0):
    rng = np.random.default_rng(seed)
    for k in sorted(set(folds)):
        d = root / member / f"fold{k}"
        d.mkdir(parents=True)
        sel = folds == k
        pd.DataFrame({"image_id": ids[sel], "study_id": studies[sel], "fold": k, "has_box": has[sel],
                      "p_none": preds[sel], "p_none_tta": preds[sel]}).to_csv(d / "oof.csv", index=False)
        pd.DataFrame({"image_id": [f"t{i}" for i in range(n_test)], "study_id": [f"ts{i // 2}" for i in range(n_test)],
                      "fold": -1, "p_none": rng.random(n_test), "p_none_tta": rng.random(n_test)}
                     ).to_csv(d / "test.csv", index=False)
    if broken is not None:  # a fold whose kernel died mid-write
        d = root / member / f"fold{broken}"
        d.mkdir(parents=True)
        (d / "oof.csv").write_text("image_id,study_id\n\x00\x00garbage")
        d = root / member / f"fold{broken + 1}"  # a fold still training (or killed): its config only
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")


@pytest.fixture
def binary_work(tmp_path):
    preds, has = _members(n=200)
    ids = np.array([f"im{i:03d}" for i in range(len(has))])
    studies = np.array([f"st{i // 2:03d}" for i in range(len(has))])
    folds = np.arange(len(has)) % 2
    work = tmp_path / "work"
    _write_member(work, "memA", preds[:, 0], has, ids, studies, folds)
    _write_member(work, "memB", preds[:, 1], has, ids, studies, folds, broken=2)
    _write_member(work, "noise", preds[:, 2], has, ids, studies, folds)
    # the study model's negative: per study, a weaker copy of the truth
    st = pd.DataFrame({"study_id": studies, "y": 1 - has}).groupby("study_id", as_index=False)["y"].min()
    study = tmp_path / "study"
    study.mkdir()
    pd.DataFrame({"study_id": st["study_id"], "negative": 0.3 + 0.4 * st["y"], "typical": 0.1,
                  "indeterminate": 0.1, "atypical": 0.1}).to_csv(study / "oof_study.csv", index=False)
    pd.DataFrame({"study_id": ["ts0", "ts1", "ts2"], "negative": [0.2, 0.5, 0.9], "typical": 0.1,
                  "indeterminate": 0.1, "atypical": 0.1}).to_csv(study / "test_study.csv", index=False)
    return work, study, preds, has


def test_merge_skips_a_broken_fold_records_it_and_scores_everything(binary_work, tmp_path):
    work, study, preds, has = binary_work
    cfg = EnsembleConfig(members=["memA", "memB", "noise", "absent"], n_random=200)
    s = merge(work, cfg, study=study, out_dir=tmp_path / "out")
    assert any("memB/fold2" in p and "skipped" in p for p in s["problems"])
    assert any("memB/fold3" in p and "unfinished" in p for p in s["problems"])
    assert any("absent" in p for p in s["problems"])
    assert set(s["members"]) == {"memA", "memB", "noise"} and len(s["members"]["memB"]["folds"]) == 2
    ap = s["none_ap"]
    for key in ("memA", "memB", "noise", "equal_weights_fit_set", "fitted_weights_fit_set", "ensemble", "prior",
                "study_negative", "blend", "blend_weight"):
        assert ap[key] is not None, key
    assert ap["ensemble"] > ap["noise"] and ap["blend"] >= max(ap["ensemble_same_images"], ap["study_negative"]) - 1e-12
    out = tmp_path / "out"
    oof = pd.read_csv(out / MERGED_OOF)
    assert len(oof) == len(has) and {"p_none", "negative", "p_none_blend", member_col("memA")} <= set(oof.columns)
    written = json.loads((out / SCORES_JSON).read_text())
    assert sum(written["weights"].values()) == pytest.approx(1.0) and list(written["weights"]) == ["memA", "memB", "noise"]
    assert written["prediction_column"] == "p_none_tta" and set(written["fitted_weights"]) == set(written["weights"])
    assert not (out / "ensemble.json").exists()  # nothing reads one: the inference kernel fits its own merge
    test = pd.read_csv(out / MERGED_TEST)
    assert len(test) == 6 and test["p_none_blend"].notna().all()
    w = np.array(list(written["weights"].values()))
    mean = test[[member_col(m) for m in written["weights"]]].to_numpy() @ w
    assert np.allclose(test["p_none"], mean)
    assert written["none_ap"]["ensemble"] == pytest.approx(ap["ensemble"])


def test_merge_cli_exit_statuses(binary_work, tmp_path):
    work, study, _, _ = binary_work
    args = ["--work", str(work), "--set", "n_random=20", "--set", "members=[memA, noise]", "--out", str(tmp_path / "o")]
    assert cli(args) == 0  # memB (the broken fold) is not asked for
    args = ["--work", str(work), "--set", "n_random=20", "--set", "members=[memA, memB]", "--study", str(study),
            "--out", str(tmp_path / "o2")]
    assert cli(args) == 1  # memB's broken fold
    with pytest.raises(UserError, match="unknown binary config key .nope.; valid keys: blend_grid"):
        cli(["--work", str(work), "--set", "nope=1"])
    with pytest.raises(UserError, match="no <member>/fold"):
        cli(["--work", str(tmp_path / "study")])
    assert not (tmp_path / "study" / MERGED_OOF).exists()


def test_shipped_ensemble_config_loads():
    cfg = load_ensemble_config("ensemble")
    assert cfg.members and 0 <= cfg.fit_margin < 0.05


def test_study_negative_from_a_per_image_study_oof(binary_work, tmp_path):
    work, study, _, has = binary_work
    ids = [f"im{i:03d}" for i in range(len(has))]
    per_image = tmp_path / "study_fold_oof.csv"  # a study fold's oof.csv: per image, with the TTA column
    pd.DataFrame({"image_id": ids, "study_id": "s", "p_negative": 0.5, "p_negative_tta": 1.0 - has}).to_csv(
        per_image, index=False)
    s = merge(work, EnsembleConfig(members=["memA"], n_random=10), study=per_image, out_dir=tmp_path / "o")
    assert s["none_ap"]["study_negative"] == pytest.approx(1.0)  # the TTA column was read
    assert s["none_ap"]["blend"] == pytest.approx(1.0) and s["none_ap"]["blend_weight"] <= 0.5
    with pytest.raises(UserError, match="neither study_id"):
        merge(work, EnsembleConfig(members=["memA"]), study=tmp_path / "o" / MERGED_TEST)
