"""The ensembling stage (issue 10): exact fast APs, the fusion through siimcovid/wbf, each preset rule,
the fitting, the fallbacks, the submission it writes, cv-report and the budget."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ensemble_fixtures as F
from siimcovid import scoring
from siimcovid.ensemble import budget, config, fit, members, merge, rules
from siimcovid.metric import average_precision
from siimcovid.submission import FULL_BOX


@pytest.fixture(scope="module")
def oofset():
    d = F.make_set(150, seed=0)
    return {"data": d, "A": F.study_member(d, 1.5, 1), "B": F.study_member(d, 0.0, 2),
            "bin": F.binary_member(d, 1.5, 3), "det": F.detector_member(d, 0.8, 4),
            "truth": fit.Truth.from_meta(d["images"].assign(split="train"))}


def tables(s, study=("A", "B"), binary=("bin",), detect=("det",)) -> merge.Tables:
    return merge.Tables(s["truth"].images[["image_id", "study_id"]],
                        {n: list(s[n].values()) for n in study}, {n: list(s[n].values()) for n in binary},
                        {n: list(s[n].values()) for n in detect}, [0.3, 0.45, 0.17, 0.08], 0.35)


# ------------------------------------------------------------------------------------ scoring
def test_fast_aps_equal_the_metric(oofset):
    rng = np.random.default_rng(0)
    truth = oofset["truth"]
    has = truth.has_box
    p = rng.random(len(has)).round(2)  # ties included
    dets = [(i, float(s), *FULL_BOX) for i, s in enumerate(p)]
    ref = average_precision(dets, {i: [FULL_BOX] for i in np.flatnonzero(~has)})
    assert scoring.none_ap(p, has) == pytest.approx(ref, abs=1e-12)

    det = pd.concat(oofset["det"].values()).set_index("image_id").reindex(truth.images["image_id"])
    boxes, tb = list(det["boxes"]), list(truth.images["boxes"])
    op = scoring.OpacityAP(boxes, tb)
    mult = rng.random(len(boxes))
    mult[:5] = 0.0  # a zero multiplier ties a whole image
    for a, m in ((1.0, None), (0.5, mult), (1.4, mult)):
        rescored = [(i, float((b[4] ** a) * (1.0 if m is None else m[i])), *b[:4])
                    for i, bb in enumerate(boxes) for b in bb[np.argsort(-bb[:, 4], kind="stable")]]
        ref = average_precision(rescored, {i: np.asarray(t).reshape(-1, 4) for i, t in enumerate(tb) if len(t)})
        assert op(a, m) == pytest.approx(ref, abs=1e-12)
    with pytest.raises(ValueError, match="exponent"):
        op(0.0)


# ------------------------------------------------------------------------------------ fusion + pixels
def test_detector_fusion_goes_through_detect_wbf_in_original_pixels():
    from siimcovid.wbf import fuse_two_level

    h, w = 2000, 3000
    box = np.array([[1500.0, 1000.0, 2500.0, 1800.0, 0.9]])
    near = box + np.array([[20, -10, 10, 15, -0.3]])

    def table(iid, b):
        return pd.DataFrame({"image_id": [iid], "orig_h": [h], "orig_w": [w], "boxes": [b], "boxes_notta": [b[:0]]})
    members_ = {"m1": [table("x", box), table("x", near)], "m2": [table("x", near)]}
    fused = rules.fuse_detectors(members_, tta=True, wbf_folds={"iou_thr": 0.6}, wbf_models={"iou_thr": 0.625},
                                 model_weights={"m1": 2.0, "m2": 1.0})
    ref = fuse_two_level({"m1": [box, near], "m2": [near]}, h, w, model_weights={"m1": 2.0, "m2": 1.0},
                         folds={"iou_thr": 0.6}, models={"iou_thr": 0.625})
    np.testing.assert_allclose(fused.loc[0, "boxes"], ref)
    assert 1400 < fused.loc[0, "boxes"][0, 0] < 1600 and fused.loc[0, "boxes"][0, 2] > 2400  # original px, not [0, 1]
    # OOF: a member's folds are ONE list (each image is held out by one fold): its score is kept
    oof = rules.fuse_detectors({"m1": [table("x", box), table("y", near)]}, oof=True)
    assert oof.set_index("image_id").loc["x", "boxes"][0, 4] == pytest.approx(0.9)
    # ... while on test the 5 fold lists' avg would scale a box one fold found by 1/2
    test = rules.fuse_detectors({"m1": [table("x", box), table("x", box[:0])]}, oof=False)
    assert test.loc[0, "boxes"][0, 4] == pytest.approx(0.45)
    # the image predictions CSV keeps original pixels and the submission writes them unchanged
    from siimcovid.submission import build_submission

    img = rules.image_rows(rules.Rule.make("max"), rules.evidence(["x"], fused, None, {"x": 0.1}))
    csv = rules.image_csv_frame(img)
    sub, problems = build_submission(["x_image"], None, csv.assign(boxes=csv["boxes"]), image_sizes={"x": (h, w)})
    toks = sub.loc[0, "PredictionString"].split()
    assert toks[0] == "opacity" and float(toks[2]) == pytest.approx(fused.loc[0, "boxes"][0, 0], abs=0.1)
    assert not problems


# ------------------------------------------------------------------------------------ rules
def test_each_preset_rule_by_hand():
    boxes = [np.array([[0, 0, 10, 10, 0.8], [5, 5, 20, 20, 0.5]]), np.zeros((0, 5)), np.array([[0, 0, 4, 4, 0.3]])]
    det = pd.DataFrame({"image_id": ["a", "b", "c"], "boxes": boxes})
    binary = pd.DataFrame({"image_id": ["a", "b"], "p_none": [0.1, 0.9]})  # c has no binary prediction
    ev = rules.evidence(["a", "b", "c"], det, binary, {"a": 0.2, "b": 0.7, "c": 0.4})

    def run(preset, **params):
        notes = []
        none, a, mult = rules.apply_rule(rules.Rule.make(preset, params), ev, notes)
        return none, a, mult, notes
    none, a, mult, _ = run("max")
    np.testing.assert_allclose(none, [0.2, 1.0, 0.7])
    assert a == 1.0 and (mult == 1).all()
    none, *_ = run("product")
    np.testing.assert_allclose(none, [0.2 * 0.5, 1.0, 0.7])
    none, *_ = run("blend", w_binary=0.6, w_negative=0.4)
    np.testing.assert_allclose(none, [0.6 * 0.1 + 0.4 * 0.2, 0.6 * 0.9 + 0.4 * 0.7, 0.4])  # c: binary drops out
    none, *_ = run("blend", w_binary=0.0, w_negative=1.0, w_det=1.0, det="product")
    np.testing.assert_allclose(none, [(0.2 + 0.1) / 2, (0.7 + 1.0) / 2, (0.4 + 0.7) / 2])
    none, a, mult, notes = run("power_awsaf")
    b_sub = np.array([0.1, 0.9, 0.7])  # c: binary substituted by the detector's 1 - max box
    np.testing.assert_allclose(none, np.array([0.2, 0.7, 0.4]) ** 0.8 * b_sub ** 0.2)
    np.testing.assert_allclose(mult, (1 - np.array([0.2, 0.7, 0.4])) ** 0.2 * (1 - b_sub) ** 0.1)
    assert a == 0.7 and any("no binary" in n for n in notes)
    none, a, mult, _ = run("power_11th", w=0.5, a=1.0, b=0.5)
    nd = np.array([0.2 * 0.5, 1.0, 0.7])
    exp_none = 0.5 * nd + 0.5 * np.array([0.2, 0.7, 0.4])
    np.testing.assert_allclose(none, exp_none)
    np.testing.assert_allclose(mult, (1 - exp_none) ** 0.5)
    rows = rules.image_rows(rules.Rule.make("power_11th", {"b": 0.5}), ev)
    np.testing.assert_allclose(rows.loc[0, "boxes"][:, 4], np.array([0.8, 0.5]) * (1 - exp_none[0]) ** 0.5)
    with pytest.raises(ValueError, match="unknown parameters"):
        rules.Rule.make("max", {"a": 1})


def test_study_rows_weights_and_image_evidence():
    def member(p):
        return pd.DataFrame({"image_id": ["i1", "i2", "i3"], "study_id": ["s1", "s1", "s2"],
                             **{c: p[:, k] for k, c in enumerate(rules.STUDY_COLS)}})
    p1 = np.array([[0.7, 0.1, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1]])
    p2 = np.full((3, 4), 0.25)
    st = rules.study_rows({"x": member(p1), "y": member(p2)}, {"x": 3.0, "y": 1.0}).set_index("study_id")
    np.testing.assert_allclose(st.loc["s1", "negative"], 0.75 * 0.6 + 0.25 * 0.25)
    adj = rules.adjust_negative(st.reset_index(), pd.DataFrame({"study_id": ["s1", "s1"], "none": [0.0, 1.0]}), 0.3)
    adj = adj.set_index("study_id")
    assert adj.loc["s1", "negative"] == pytest.approx(0.7 * st.loc["s1", "negative"] + 0.3 * 0.5)
    assert adj.loc["s2", "negative"] == pytest.approx(st.loc["s2", "negative"])  # no image rows: unchanged
    assert adj.loc["s1", "typical"] == st.loc["s1", "typical"]  # only negative moves


# ------------------------------------------------------------------------------------ fitting
def test_fit_finds_the_informative_member_and_keeps_defaults_within_margin(oofset):
    s = oofset
    res = fit.fit(tables(s), s["truth"], config.load(None, {"rule": "blend"}))
    w = res["settings"]["study_weights"]
    assert w["A"] > 0.7 > w["B"]  # A carries the signal, B is noise
    assert res["fit"]["study_weights"]["method"] == "fitted"
    assert res["oof_fitted"]["final"] > res["oof_default"]["final"]
    # the binary member is far better at `none` than the negative: the blend leans on it
    params = res["settings"]["rule"]["params"]
    assert params["w_binary"] > params["w_negative"] or params["w_det"] > params["w_negative"]
    assert res["fit"]["rules"]["blend"]["score_fitted"] >= res["fit"]["rules"]["blend"]["score_default"]

    # two identical members: nothing to gain -> equal weights kept (margin fallback)
    same = merge.Tables(s["truth"].images[["image_id", "study_id"]],
                        {"A": list(s["A"].values()), "A2": list(s["A"].values())})
    res2 = fit.fit(same, s["truth"], config.load(None, {"rule": "max"}))
    assert res2["settings"]["study_weights"] == {"A": 0.5, "A2": 0.5}
    assert res2["fit"]["study_weights"]["method"] == "equal"
    # a huge margin keeps every default, and the result is deterministic
    big = fit.fit(tables(s), s["truth"], config.load(None, {"rule": "power_awsaf", "fit_margin": 10.0}))
    assert big["settings"]["rule"]["params"] == rules.PRESETS["power_awsaf"]
    assert big["settings"]["image_evidence"] == 0.0
    assert fit.fit(tables(s), s["truth"], config.load(None, {"rule": "power_awsaf", "fit_margin": 10.0})) == big


def test_fit_simplex_recovers_weights():
    target = np.array([0.2, 0.8])
    r = fit.fit_simplex(lambda w: -np.abs(w - target).sum(), 2, margin=0.01)
    np.testing.assert_allclose(r["weights"], target, atol=0.03)
    flat = fit.fit_simplex(lambda w: 1.0, 3, margin=0.01)
    assert flat["method"] == "equal" and flat["weights"] == pytest.approx([1 / 3] * 3)


# ------------------------------------------------------------------------------------ fallbacks + submission
def test_missing_member_and_undecodable_image_fall_back_loudly(oofset, tmp_path):
    from siimcovid.submission import build_submission, validate_submission

    s = oofset
    t = tables(s, binary=())
    img = t.images.copy()
    # a test image that failed to decode: no member predicts it
    t.images = pd.concat([img, pd.DataFrame({"image_id": ["broken"], "study_id": ["s_broken"]})], ignore_index=True)
    st = fit.settings_from_config(config.load(None, {"rule": "power_awsaf"}))
    notes: list[str] = []
    study, image = merge.run_merge(t, st, oof=True, notes=notes)
    assert "s_broken" in set(study["study_id"]) and not study[rules.STUDY_COLS].isna().any().any()
    assert np.isfinite(image["none"]).all() and len(image) == len(t.images)
    assert any("no binary member" in n for n in notes)
    assert any("no study-member prediction" in n for n in notes)
    assert any("no detector row" in n or "no binary P(none)" in n for n in notes)
    broken = image.set_index("image_id").loc["broken"]
    assert len(broken["boxes"]) == 0 and 0 <= broken["none"] <= 1

    # the submission: every sample id once, validated
    ids = [f"{x}_study" for x in study["study_id"]] + [f"{x}_image" for x in image["image_id"]]
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"id": ids, "PredictionString": ["negative 1 0 0 1 1"] * len(study) + ["none 1 0 0 1 1"] * len(image)}
                 ).to_csv(data / "sample_submission.csv", index=False)
    sub, problems = build_submission(ids, study, rules.image_csv_frame(image), image_sizes=None)
    assert not problems
    sub.to_csv(tmp_path / "submission.csv", index=False)
    assert validate_submission(tmp_path / "submission.csv", data, check_bounds=False) == []
    assert sorted(sub["id"]) == sorted(ids)

    # nothing at all: still one finite row per id
    empty = merge.Tables(t.images, study_priors=[0.3, 0.45, 0.17, 0.08], none_prior=0.35)
    study0, image0 = merge.run_merge(empty, st, notes=(n0 := []))
    assert len(study0) == t.images["study_id"].nunique() and (image0["none"] == 0.35).all()
    assert any("no study member" in n for n in n0)


def test_members_are_found_and_broken_folds_reported(oofset, tmp_path):
    s = oofset
    F.write_run(tmp_path, "study", "effv2", s["A"])
    F.write_run(tmp_path, "binary", "b7", s["bin"])
    F.write_run(tmp_path, "detect", "frcnn", s["det"])
    (tmp_path / "frcnn" / "fold2" / "oof.csv").write_text("image_id,boxes\nx,[[1,2\n")
    problems: list[str] = []
    found = members.collect([tmp_path], problems, splits=("oof",))
    assert sorted(found["study"]["effv2"].oof) == [0, 1, 2, 3, 4]
    assert sorted(found["binary"]["b7"].oof) == [0, 1, 2, 3, 4]
    assert sorted(found["detect"]["frcnn"].oof) == [0, 1, 3, 4]
    assert any("fold2" in p or "oof.csv" in p for p in problems)
    sel = members.select(found["study"], ["effv2", "nope"], "study", problems)
    assert list(sel) == ["effv2"] and any("'nope'" in p for p in problems)


# ------------------------------------------------------------------------------------ cv-report
def test_cv_report_on_a_tiny_oof_set(oofset, tmp_path, capsys):
    s = oofset
    F.write_run(tmp_path / "runs", "study", "effv2", s["A"])
    F.write_run(tmp_path / "runs", "binary", "b7", s["bin"])
    F.write_run(tmp_path / "runs", "detect", "frcnn", s["det"])
    F.write_meta(tmp_path / "pre", s["data"])
    out = tmp_path / "rep"
    from siimcovid.__main__ import main

    code = main(["cv-report", "--inputs", str(tmp_path / "runs"), "--preprocess", str(tmp_path / "pre"),
                 "--out", str(out), "--set", "rule=auto"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "merge:" in stdout and "detect:frcnn" in stdout and "*" in stdout
    rep = json.loads((out / "cv_report.json").read_text())
    chosen = [x for x in rep["rows"] if x["row"].endswith("*") and x["tta"]][0]
    # final is the project's combination of the parts
    assert chosen["final"] == pytest.approx((4 * chosen["study"] + chosen["opacity"] + chosen["none"]) / 6)
    # the same merge scored through a written submission and siimcovid.metric gives the same figures
    fitted = json.loads((out / fit.FIT_JSON).read_text())
    study = pd.read_csv(out / "oof_ensemble_study.csv")
    image = pd.read_csv(out / "oof_ensemble_image.csv", dtype={"image_id": str})
    from siimcovid.metric import score_submission
    from siimcovid.submission import build_submission

    ids = [f"{x}_study" for x in study["study_id"]] + [f"{x}_image" for x in image["image_id"]]
    sub, _ = build_submission(ids, study, image)
    truth_s = pd.DataFrame({"study_id": list(s["truth"].labels), "label": list(s["truth"].labels.values())})
    truth_i = s["truth"].images[["image_id", "boxes"]]
    sc = score_submission(sub, truth_s, truth_i)
    assert sc["study_map"] == pytest.approx(chosen["study"], abs=2e-3)
    assert sc["ap"]["none"] == pytest.approx(chosen["none"], abs=2e-3)  # 6-digit rounding in the CSV
    assert sc["ap"]["opacity"] == pytest.approx(chosen["opacity"], abs=2e-3)
    assert fitted["settings"]["rule"]["preset"] in rules.PRESETS
    for name in ("cv_report.html", "pr_curves.png", "study_confusion.png", "none_calibration.png"):
        assert (out / name).is_file(), name


def test_config_variants_and_mistakes():
    assert config.load("awsaf").rule == "power_awsaf"
    assert config.load("eleventh").image_evidence == pytest.approx(0.3)
    with pytest.raises(Exception, match="unknown|valid"):
        config.load(None, {"rulez": "max"})
    with pytest.raises(Exception, match="rule"):
        config.load(None, {"rule": "median"})


# ------------------------------------------------------------------------------------ budget
def test_budget_projection_and_plan_hook(tmp_path):
    import time

    per, n = budget.time_call(lambda xs: time.sleep(0.002 * len(xs)), list(range(6)))
    assert n == 5 and 0.0015 < per < 0.05
    ts = [budget.Timing("effv2", "study", 0.5, units=5), budget.Timing("frcnn", "detect", 0.4, units=5),
          budget.Timing("b7", "binary", 0.2, units=5)]
    p = budget.project(ts, overhead_per_image=0.3)
    assert p.total_s == pytest.approx((2.5 + 2.0 + 1.0 + 0.3) * budget.HIDDEN_TEST_IMAGES)
    assert not p.fits and "DOES NOT FIT" in p.lines()[0]  # 10.2 h
    assert budget.project(ts[:1]).fits
    path = budget.write_budget(tmp_path / "budget.json", ts, p)
    assert budget.read_budget(path) == {"train-study-fold": 0.5, "train-det-fold": 0.4,
                                        "train-binary-fold": 0.2}
    # the plan's hook (`kaggle plan --budget FILE`) reads the file as written and warns
    from siimcovid.kaggle import graph as G

    g = G.build("alice")
    assert G.HIDDEN_TEST_IMAGES == budget.HIDDEN_TEST_IMAGES and G.INFERENCE_LIMIT_S == budget.LIMIT_S
    slow = budget.write_budget(tmp_path / "slow.json", [budget.Timing("effv2", "study", 1.0, units=5)])
    assert any("above" in w for w in G.budget_warnings(g, budget.read_budget(slow)))  # 5 x 1 s x 6334 = 8.8 h
    assert G.budget_warnings(g, {"train-study-fold": 0.05}) == []


# ------------------------------------------------------------------------------------ kernel steps
def test_kernel_steps_fit_probe_predict_merge_with_a_missing_member(oofset, tmp_path, monkeypatch):
    import time

    from siimcovid.ensemble import predictors, steps
    from siimcovid.submission import build_submission, validate_submission

    s = oofset
    runs = tmp_path / "runs"
    F.write_run(runs, "study", "effv2", s["A"])
    F.write_run(runs, "binary", "b7", s["bin"])
    F.write_run(runs, "detect", "frcnn", s["det"])
    train_pre = F.write_meta(tmp_path / "pre", s["data"])
    test = F.make_set(20, seed=5)
    pre_test = tmp_path / "pre_test"
    pre_test.mkdir()
    tm = test["images"].assign(split="test", boxes="[]")
    broken = tm.iloc[-1]
    tm.iloc[:-1].to_csv(pre_test / "meta.csv", index=False)  # the last image failed to decode
    pd.DataFrame({"dicom": [f"test/{broken.study_id}/ser/{broken.image_id}.dcm"], "image_id": [broken.image_id],
                  "stage": ["decode"], "reason": ["broken"]}).to_csv(pre_test / "errors.csv", index=False)

    def fake(kind):
        def run(fold_dirs, pre, options):
            meta = pd.read_csv(Path(pre) / "meta.csv", dtype=str)
            time.sleep(0.001 * len(meta))
            d = {**test, "images": test["images"][test["images"]["image_id"].isin(set(meta["image_id"]))]}
            make = {"study": lambda: F.study_member(d, 1.5, 7), "detect": lambda: F.detector_member(d, 0.8, 8)}[kind]
            return [pd.concat(make().values(), ignore_index=True) for _ in fold_dirs], {"used": list(fold_dirs)}
        return run

    def unavailable(fold_dirs, pre, options):
        raise predictors.MemberUnavailable("binary members: no predictor here")
    monkeypatch.setitem(predictors.PREDICTORS, "study", fake("study"))
    monkeypatch.setitem(predictors.PREDICTORS, "detect", fake("detect"))
    monkeypatch.setitem(predictors.PREDICTORS, "binary", unavailable)

    problems: list[str] = []
    cfg = config.load(None, {"rule": "power_awsaf", "det_members": ["frcnn", "yolo"]})
    members_ = steps.find_members([runs], cfg, problems)
    assert set(members_["detect"]) == {"frcnn"} and any("'yolo'" in p for p in problems)
    settings, info = steps.fitted_settings(members_, train_pre, cfg, tmp_path / "out", problems)
    assert info["source"] == "fitted" and (tmp_path / "out" / fit.FIT_JSON).is_file()
    proj, timings = steps.probe_budget(members_, pre_test, tmp_path / "work", {}, problems, n_large=4)
    assert {t.kind for t in timings} == {"study", "detect"} and all(t.units == 5 for t in timings)
    assert any("binary:b7 could not be timed" in p for p in problems)
    assert (tmp_path / "work" / "budget.json").is_file() and proj.total_s > 0
    tables, _ = steps.predict_members(members_, pre_test, {}, problems)
    assert any("MEMBER LEFT OUT binary:b7" in p for p in problems) and not tables["binary"]

    sample_images = test["images"]["image_id"].tolist()
    sample_studies = sorted(set(test["images"]["study_id"]))
    imgs = steps.test_images(pre_test, sample_images)
    assert imgs.set_index("image_id").loc[broken.image_id, "study_id"] == broken.study_id
    notes: list[str] = []
    study, image, prior_images = steps.merge_test(tables, settings, imgs, sample_studies, [0.3, 0.45, 0.17, 0.08],
                                                  0.35, notes)
    assert prior_images == [broken.image_id]
    assert sorted(study["study_id"]) == sample_studies and sorted(image["image_id"]) == sorted(sample_images)
    assert image.set_index("image_id").loc[broken.image_id, "none"] == pytest.approx(0.35)
    assert any("without any member prediction" in n for n in notes)
    ids = [f"{x}_study" for x in sample_studies] + [f"{x}_image" for x in sample_images]
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"id": ids, "PredictionString": "none 1 0 0 1 1"}).to_csv(data / "sample_submission.csv", index=False)
    sub, build_problems = build_submission(ids, study, image)
    assert not build_problems
    sub.to_csv(tmp_path / "submission.csv", index=False)
    assert validate_submission(tmp_path / "submission.csv", data, check_bounds=False) == []


def test_kernel_run_covers_every_sample_id_and_uses_the_fallback_image_rows(oofset, tmp_path, monkeypatch):
    from siimcovid.ensemble import predictors, steps

    s = oofset
    F.write_run(tmp_path / "runs", "study", "effv2", s["A"])
    train_pre = F.write_meta(tmp_path / "pre", s["data"])
    test = F.make_set(12, seed=9)
    pre_test = tmp_path / "pre_test"
    pre_test.mkdir()
    test["images"].assign(split="test", boxes="[]").to_csv(pre_test / "meta.csv", index=False)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train_study_level.csv").write_text(
        "id,Negative for Pneumonia,Typical Appearance,Indeterminate Appearance,Atypical Appearance\n"
        "a_study,1,0,0,0\nb_study,0,1,0,0\nc_study,0,1,0,0\nd_study,0,0,0,1\n")
    (data / "train_image_level.csv").write_text("id,boxes,label,StudyInstanceUID\nx_image,,none 1 0 0 1 1,a\n"
                                                "y_image,\"[{'x': 1, 'y': 2, 'width': 3, 'height': 4}]\","
                                                "opacity 1 1 2 4 6,b\n")

    def fake_study(fold_dirs, pre, options):
        meta = pd.read_csv(Path(pre) / "meta.csv", dtype=str)
        d = {**test, "images": test["images"][test["images"]["image_id"].isin(set(meta["image_id"]))]}
        return [pd.concat(F.study_member(d, 1.5, 7).values(), ignore_index=True) for _ in fold_dirs], {}
    monkeypatch.setitem(predictors.PREDICTORS, "study", fake_study)
    problems: list[str] = []
    cfg = config.load(None, {})
    members_ = steps.find_members([tmp_path / "runs"], cfg, problems)
    studies = sorted(set(test["images"]["study_id"])) + ["extra_study"]  # a sample study without images
    images_ = test["images"]["image_id"].tolist()
    learner = pd.DataFrame({"image_id": images_, "boxes": "[]", "none": 0.4})
    study, image, info = steps.run(members_, pre_test=pre_test, train_pre=train_pre, data_dir=data,
                                   out=tmp_path / "out", cfg=cfg, sample_studies=studies, sample_images=images_,
                                   problems=problems, image_fallback=learner, budget_probe=True)
    assert sorted(study["study_id"]) == sorted(studies)
    assert study.set_index("study_id").loc["extra_study", "negative"] == pytest.approx(0.25)  # train prior
    assert info["image_source"] == "fallback" and image.equals(learner)
    assert info["budget"]["members"][0]["kind"] == "study"
    assert (tmp_path / "out" / "ensemble_fit.json").is_file() and (tmp_path / "out" / "work" / "budget.json").is_file()


@pytest.mark.parametrize("kind", ["binary", "detect"])
def test_a_member_fold_that_cannot_predict_is_skipped_with_its_reason(tmp_path, kind, caplog):
    from siimcovid.ensemble import predictors

    pre = tmp_path / "pre"
    pre.mkdir()
    pd.DataFrame({"image_id": ["a"], "study_id": ["s"], "split": ["test"], "orig_h": [10], "orig_w": [10],
                  "boxes": ["[]"]}).to_csv(pre / "meta.csv", index=False)
    fold = tmp_path / "b7" / "fold0"
    fold.mkdir(parents=True)
    (fold / "config.json").write_text("{not json")
    tables, info = predictors.predict(kind, [fold], pre, {})
    assert tables == [] and info["skipped"] == [str(fold)] and info["used"] == []
    assert info["folds"][str(fold)]["status"] == "skipped" and info["folds"][str(fold)]["reason"]
    assert f"fold skipped: {fold}" in caplog.text


def test_the_stage_merges_are_views_of_the_ensemble_merge(oofset, tmp_path):
    """study-merge's test rows are the ensemble's study rows of that member (as the inference kernel
    makes them), binary-merge's test p_none the ensemble's binary P(none) with the reported weights."""
    from siimcovid.ensemble import binary_merge, study_merge

    d = oofset["data"]
    test = {k: F.study_member(d, 1.0, 9 + k)[0].head(12).drop(columns="study_label")  # every fold: the same images
            .assign(image_id=lambda x: "t" + x["image_id"], study_id=lambda x: "t" + x["study_id"]) for k in oofset["A"]}
    F.write_run(tmp_path / "study", "study", "A", oofset["A"], test)
    study_merge.merge(tmp_path / "study" / "A")
    got = pd.read_csv(tmp_path / "study" / "A" / study_merge.TEST_STUDY, dtype={"study_id": str})
    want = rules.study_rows({"A": rules.member_image_probs(list(test.values()), True)})
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False, rtol=0, atol=1e-12)
    study_merge.merge(tmp_path / "study" / "A", how="max", out_dir=tmp_path / "max")  # max of the fold-mean images
    got = pd.read_csv(tmp_path / "max" / study_merge.TEST_STUDY, dtype={"study_id": str})
    want = rules.study_rows({"A": rules.member_image_probs(list(test.values()), True)}, how="max")
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False, rtol=0, atol=1e-12)

    btest = {k: F.binary_member(d, 1.0, 10 + k)[0].head(12).drop(columns="has_box")
             .assign(image_id=lambda x: "t" + x["image_id"], study_id="ts", fold=-1) for k in oofset["A"]}
    for name, seed in (("b1", 3), ("b2", 11)):  # (a binary fold's run names its stage binary-train)
        F.write_run(tmp_path / "bin", "binary-train", name, F.binary_member(d, 1.0, seed), btest)
    s = binary_merge.merge(tmp_path / "bin", binary_merge.BinaryEnsembleConfig(n_random=20))
    got = pd.read_csv(tmp_path / "bin" / binary_merge.MERGED_TEST, dtype={"image_id": str})
    assert s["method"] in ("fitted", "equal") and s["problems"] == []
    want = rules.binary_none({n: list(btest.values()) for n in ("b1", "b2")}, s["weights"], tta=True)
    np.testing.assert_allclose(got["p_none"], want["p_none"], rtol=0, atol=1e-12)
    assert set(s["members"]) == {"b1", "b2"} and list(got["image_id"]) == list(want["image_id"])
