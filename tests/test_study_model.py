"""Study classifier: model builds (hub + sm FPN, both with the mask loss), TTA, fold training
with resume, OOF/test predictions, the merge and a noisy-student round 2.

Models are tiny (a SavedModel of four 3x3 convs written at test time, EfficientNet-B0 FPN at
64 px) and built once per module; training runs 1-2 epochs of a few steps."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import siimcovid  # noqa: F401  (before TensorFlow: selects tf_keras for hub and sm)

tf = pytest.importorskip("tensorflow")

from siimcovid.data import STUDY_CLASSES  # noqa: E402
from siimcovid.study import config as C  # noqa: E402
from siimcovid.study import evaluate as E  # noqa: E402
from siimcovid.classify import backbones as B  # noqa: E402
from siimcovid.classify.runtime import keras  # noqa: E402
from siimcovid.classify.train import masked_bce_jaccard  # noqa: E402
from siimcovid.ensemble import study_merge as SM  # noqa: E402
from siimcovid.study import predict as P  # noqa: E402
from siimcovid.study import teacher  # noqa: E402
from siimcovid.tables import PROB_COLS, TTA_COLS  # noqa: E402
from siimcovid.study import train as T  # noqa: E402
from siimcovid.study.task import STUDY  # noqa: E402


@pytest.fixture(scope="module")
def hubs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return {"endpoints": str(B.export_tiny_savedmodel(root / "ep", endpoints=True)),
            "vector": str(B.export_tiny_savedmodel(root / "vec", endpoints=False))}


def _cfg(**kw):
    return replace(C.load_config("tiny_cpu", sets=["mixed_precision=off"]), **kw)


def build(cfg):
    """The study classifier: the core's builder with the study task's head."""
    return B.build_model(cfg, STUDY.n_outputs, STUDY.activation)


def _xy(n=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3), dtype=np.float32)
    seg = np.zeros((n, size, size, 1), np.float32)
    seg[:, 10:30, 20:40] = 1.0
    return x, {"cls": np.eye(4, dtype=np.float32)[:n], "seg": seg}


# ------------------------------------------------------------------ builds
@pytest.mark.parametrize("kind,design", [("endpoints", "fpn_on_endpoints"), ("vector", "side_film")])
def test_hub_model_mask_loss_reaches_backbone(hubs, kind, design):
    cfg = _cfg(hub_handle=hubs[kind])
    model = build(cfg)
    assert model.aux_design == design
    x, y = _xy()
    out = model(x)
    assert out["cls"].shape == (2, 4) and out["seg"].shape == (2, 64, 64, 1)
    np.testing.assert_allclose(out["cls"].numpy().sum(1), 1.0, rtol=1e-5)
    backbone = model.get_layer("backbone").trainable_weights
    assert backbone, "hub layer must be trainable"
    with tf.GradientTape() as tape:
        seg_loss = masked_bce_jaccard(y["seg"], model(x, training=True)["seg"])
    grads = tape.gradient(seg_loss, backbone)
    assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


def test_hub_model_under_mixed_precision(hubs):
    import tf_keras

    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build(_cfg(hub_handle=hubs["endpoints"]))
        out = model(_xy()[0])
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert out["cls"].dtype == tf.float32 and out["seg"].dtype == tf.float32


def test_sm_fpn_aux_model_trains_with_both_losses():
    cfg = C.load_config("tiny_fpn_cpu", sets=["drop_path=0.2"])
    model = build(cfg)
    assert model.aux_design == "sm_fpn"
    inner = model.get_layer(f"fpn_{cfg.sm_backbone}")
    assert any(layer.name.endswith("drop") for layer in inner.layers), "stochastic depth reached the encoder"
    x, y = _xy()
    opt = keras().optimizers.SGD(0.01)
    before = [w.numpy().copy() for w in model.get_layer("cls").trainable_weights]
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        cls_loss = tf.reduce_mean(keras().losses.categorical_crossentropy(y["cls"], out["cls"]))
        seg_loss = masked_bce_jaccard(y["seg"], out["seg"])
        loss = cls_loss + 0.5 * seg_loss
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(np.isfinite(float(v)) for v in (cls_loss, seg_loss))
    assert sum(g is not None for g in grads) > 0.9 * len(grads)
    opt.apply_gradients([(g, w) for g, w in zip(grads, model.trainable_weights) if g is not None])
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, model.get_layer("cls").trainable_weights))
    no_drop = build(C.load_config("tiny_fpn_cpu", sets=["drop_path=0.0", "aux_seg=false"]))
    assert set(no_drop(x)) == {"cls"}
    assert not any(layer.name.endswith("drop") for layer in no_drop.get_layer("fpn_efficientnetb0").layers)


def test_masked_loss_skips_unknown_masks():
    _, y = _xy(3)
    seg = y["seg"].copy()
    seg[2] = -1.0  # unknown
    rng = np.random.default_rng(0)
    pred = rng.random(seg.shape).astype(np.float32)
    pred2 = pred.copy()
    pred2[2] = rng.random(pred2[2].shape)
    a, b = float(masked_bce_jaccard(seg, pred)), float(masked_bce_jaccard(seg, pred2))
    assert a == pytest.approx(b, rel=1e-6)
    pred3 = pred.copy()
    pred3[0] = 1.0 - pred3[0]
    assert float(masked_bce_jaccard(seg, pred3)) != pytest.approx(a, rel=1e-3)


def test_bad_hub_handle_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        B.resolve_hub_handle(str(tmp_path))


# ------------------------------------------------------------------ metric, TTA, aggregation
def test_study_ap_and_prior_baseline():
    ids = [f"s{i}" for i in range(8)]
    labels = np.array([0, 1, 1, 2, 3, 1, 0, 2])
    perfect = np.eye(4)[labels]
    assert E.study_ap(ids, perfect, labels)["map"] == pytest.approx(1.0)
    from siimcovid.ensemble.study_merge import prior_baseline

    prior = prior_baseline(labels)
    for k, c in enumerate(STUDY_CLASSES):  # constant scores: AP = prevalence
        assert prior[c] == pytest.approx((labels == k).mean())


def test_aggregate_mean_and_max():
    df = pd.DataFrame({"study_id": ["a", "a", "b"], "x": [0.2, 0.6, 0.5], "y": [0.8, 0.4, 0.5]})
    mean = E.aggregate_study(df, ["x", "y"], "mean").set_index("study_id")
    assert mean.loc["a", "x"] == pytest.approx(0.4)
    mx = E.aggregate_study(df, ["x", "y"], "max").set_index("study_id")
    assert mx.loc["a", "x"] == pytest.approx(0.6 / 1.4)  # renormalised


def test_hflip_tta_is_mean_of_plain_and_mirrored(hubs, study_preprocess):
    from siimcovid.classify.data import load_meta

    cfg = _cfg(hub_handle=hubs["endpoints"], batch_size=4)
    model = build(cfg)
    df = load_meta(study_preprocess, 64, "train").head(5)
    pred = P.predict_frame(model, df, cfg, tta=True)
    imgs = np.stack([np.repeat(tf.io.decode_png(tf.io.read_file(p), 1).numpy()[..., :1], 3, -1) for p in df["path"]])
    imgs = imgs.astype(np.float32) / 255.0
    # independent reference: the model on the images and on their mirror (NHWC, flip W), averaged
    direct = (model(imgs)["cls"].numpy() + model(imgs[:, :, ::-1, :].copy())["cls"].numpy()) / 2.0
    np.testing.assert_allclose(pred[TTA_COLS].to_numpy(), direct, atol=1e-4)
    assert not np.allclose(pred[TTA_COLS].to_numpy(), pred[PROB_COLS].to_numpy())
    off = P.predict_frame(model, df, cfg, tta=False)
    np.testing.assert_allclose(off[TTA_COLS].to_numpy(), off[PROB_COLS].to_numpy())


# ------------------------------------------------------------------ fold training, resume, merge, round 2
@pytest.fixture(scope="module")
def round1(hubs, study_preprocess, tmp_path_factory):
    work = tmp_path_factory.mktemp("study_work")
    base = dict(hub_handle=hubs["endpoints"], preprocess=str(study_preprocess), workdir=str(work), batch_size=4,
                name="r1", verbose=0)
    first = T.train_fold(_cfg(fold=0, epochs=1, **base))
    hist1 = pd.read_csv(work / "r1/fold0/history.csv")
    resumed = T.train_fold(_cfg(fold=0, epochs=2, **base))
    T.train_fold(_cfg(fold=1, epochs=1, **base))
    return {"work": work, "first": first, "resumed": resumed, "hist1": hist1, "base": base}


def test_fold_outputs_follow_the_contract(round1, study_preprocess):
    d = round1["work"] / "r1" / "fold0"
    for name in ("best.weights.h5", "last.ckpt.index", "history.csv", "history.png", "oof.csv", "test.csv",
                 "config.json", "run.json", "fold_score.json"):
        assert (d / name).exists(), name
    meta = pd.read_csv(study_preprocess / "meta.csv", dtype={"image_id": str})
    oof = pd.read_csv(d / "oof.csv", dtype={"image_id": str})
    assert set(oof["image_id"]) == set(meta.query("split == 'train' and fold == 0")["image_id"])
    assert list(oof.columns[:7]) == ["image_id", "study_id", "fold", *PROB_COLS]
    assert set(TTA_COLS) <= set(oof.columns)
    test = pd.read_csv(d / "test.csv", dtype={"image_id": str})
    assert set(test["image_id"]) == set(meta.query("split == 'test'")["image_id"])
    np.testing.assert_allclose(test[PROB_COLS].sum(axis=1), 1.0, rtol=1e-4)
    assert C.from_json(d / "config.json").fold == 0


def test_rerun_resumes_after_last_epoch(round1):
    d = round1["work"] / "r1" / "fold0"
    hist = pd.read_csv(d / "history.csv")
    assert list(hist["epoch"]) == [0, 1]
    assert hist.iloc[0]["seconds"] == pytest.approx(round1["hist1"].iloc[0]["seconds"])  # epoch 0 not re-run
    assert json.loads((d / "state.json").read_text())["epochs_done"] == 2
    assert round1["resumed"]["epochs_done"] == 2
    assert hist.iloc[1]["lr"] < hist.iloc[0]["lr"]  # the cosine schedule went on from the restored step


def test_merge_writes_oof_and_test_study(round1):
    exp = round1["work"] / "r1"
    scores = SM.merge(exp)
    assert scores["n_folds"] == 2 and scores["n_oof_studies"] == 16 and scores["n_test_studies"] == 4
    assert set(scores["ap"]) == set(STUDY_CLASSES) and 0 <= scores["oof_study_map_tta"] <= 1
    # the scores are those of the written OOF study predictions (TTA), recomputed from the files
    oof_study = pd.read_csv(exp / "oof_study.csv", dtype={"study_id": str})
    assert len(oof_study) == 16 and list(oof_study.columns) == ["study_id", "study_label", *STUDY_CLASSES]
    again = E.study_ap(oof_study["study_id"], oof_study[list(STUDY_CLASSES)].to_numpy(), oof_study["study_label"])
    assert scores["oof_study_map_tta"] == pytest.approx(again["map"])
    assert scores["ap_tta"] == pytest.approx({c: again[c] for c in STUDY_CLASSES})
    oofs = pd.concat([pd.read_csv(exp / f"fold{k}/oof.csv", dtype={"study_id": str}) for k in (0, 1)])
    want = E.aggregate_study(oofs, TTA_COLS).set_index("study_id").loc[oof_study["study_id"], TTA_COLS]
    np.testing.assert_allclose(oof_study[list(STUDY_CLASSES)].to_numpy(), want.to_numpy(), rtol=1e-6)
    assert scores["prior_baseline_study_map"] == pytest.approx(0.25)  # 4 balanced classes
    ts = pd.read_csv(exp / "test_study.csv")
    assert list(ts.columns) == ["study_id", *STUDY_CLASSES]
    # = mean over folds of each fold's study-mean of the TTA columns
    per = [E.aggregate_study(pd.read_csv(exp / f"fold{k}/test.csv"), TTA_COLS).set_index("study_id")
           for k in (0, 1)]
    want = ((per[0] + per[1]) / 2).loc[ts["study_id"]].to_numpy()
    np.testing.assert_allclose(ts[list(STUDY_CLASSES)].to_numpy(), want, rtol=1e-6)
    no_tta = SM.merge(exp, use_tta=False, out_dir=exp / "no_tta")
    assert no_tta["oof_study_map"] == pytest.approx(scores["oof_study_map"])
    assert not np.allclose(pd.read_csv(exp / "no_tta/test_study.csv")[list(STUDY_CLASSES)], ts[list(STUDY_CLASSES)])
    assert json.loads((exp / "scores.json").read_text())["n_folds"] == 2


def test_merge_goes_on_past_a_broken_fold(round1, tmp_path):
    import shutil

    copy = tmp_path / "r1broken"
    shutil.copytree(round1["work"] / "r1", copy)
    (copy / "fold1" / "oof.csv").write_text("image_id,study_id\nx,y\n")  # no probability columns
    (copy / "fold2").mkdir()  # a fold that never finished
    scores = SM.merge(copy)
    assert scores["n_folds"] == 1 and list(scores["folds"]) == ["fold0"]
    assert scores["n_oof_studies"] == 8 and scores["n_test_folds"] == 1
    problems = " | ".join(scores["problems"])
    assert str(copy / "fold1" / "oof.csv") in problems and "missing columns" in problems
    assert str(copy / "fold2") in problems
    assert json.loads((copy / "scores.json").read_text())["problems"] == scores["problems"]
    got = pd.read_csv(copy / "test_study.csv", dtype={"study_id": str})  # fold0's test predictions alone
    want = E.aggregate_study(pd.read_csv(copy / "fold0/test.csv", dtype={"study_id": str}), TTA_COLS)
    assert list(got["study_id"]) == list(want["study_id"])
    np.testing.assert_allclose(got[list(STUDY_CLASSES)].to_numpy(), want[TTA_COLS].to_numpy(), rtol=1e-6)
    for k in (0, 1):  # no fold readable: an error naming the folder
        (copy / f"fold{k}" / "oof.csv").write_text("")
    with pytest.raises(FileNotFoundError, match="no readable oof.csv"):
        SM.merge(copy)


def test_merge_averages_a_test_study_over_the_folds_that_have_it(tmp_path):
    """Folds that predicted different test studies: no NaN row, each study averaged over its folds."""
    rng = np.random.default_rng(0)
    tests = {}
    for k, studies in ((0, ["u0", "u1", "u2"]), (1, ["u0", "u1"])):
        d = tmp_path / f"fold{k}"
        d.mkdir()
        probs = lambda n: {c: v for c, v in zip(PROB_COLS, rng.dirichlet(np.ones(4), n).T)}  # noqa: E731
        pd.DataFrame({"image_id": [f"i{k}{j}" for j in range(4)], "study_id": [f"s{k}{j}" for j in range(4)],
                      **probs(4), "study_label": [0, 1, 2, 3]}).to_csv(d / "oof.csv", index=False)
        tests[k] = pd.DataFrame({"image_id": studies, "study_id": studies, **probs(len(studies))})
        tests[k].to_csv(d / "test.csv", index=False)
    scores = SM.merge(tmp_path, use_tta=False)
    got = pd.read_csv(tmp_path / "test_study.csv").set_index("study_id")
    assert list(got.index) == ["u0", "u1", "u2"] and not got.isna().any().any()
    per = {k: E.aggregate_study(t, PROB_COLS).set_index("study_id")[PROB_COLS].to_numpy() for k, t in tests.items()}
    np.testing.assert_allclose(got.to_numpy()[:2], (per[0][:2] + per[1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(got.to_numpy()[2], per[0][2], rtol=1e-6)
    assert any("u2" in p for p in scores["problems"])


def test_noisy_student_round2_uses_round1_predictions(round1, study_preprocess):
    r1 = round1["work"] / "r1"
    cfg = _cfg(**{**round1["base"], "name": "r2"}, fold=0, epochs=1, round=2, teacher=str(r1), soft_weight=0.5,
               randaug_n=2, randaug_m=15.0)
    score = T.train_fold(cfg)
    info = score["data"]
    assert info["n_soft"] == info["n_train"] == 10 and info["n_without_teacher"] == 0
    assert info["n_pseudo_test"] == 4  # every test image, targets = round 1's fold-averaged predictions
    assert (round1["work"] / "r2/fold0/oof.csv").exists()


def test_student_targets_blend_teacher_and_labels(tmp_path):
    from siimcovid.classify.data import onehot

    t = tmp_path / "teacher" / "fold0"
    t.mkdir(parents=True)
    soft = np.array([[0.1, 0.7, 0.1, 0.1], [0.4, 0.2, 0.2, 0.2]], np.float32)
    pd.DataFrame({"image_id": ["a", "b"], "study_id": ["s", "t"], "fold": 0,
                  **{c: soft[:, k] for k, c in enumerate(PROB_COLS)},
                  **{c: soft[:, k] for k, c in enumerate(TTA_COLS)}, "study_label": [1, 0]}).to_csv(t / "oof.csv", index=False)
    pd.DataFrame({"image_id": ["x"], "study_id": ["u"], "fold": 0,
                  **{c: [0.25] for c in PROB_COLS + TTA_COLS}}).to_csv(t / "test.csv", index=False)
    train = pd.DataFrame({"image_id": ["a", "b", "c"], "study_label": [1, 0, 3], "boxes_src": [[], [], []]})
    test = pd.DataFrame({"image_id": ["x", "y"], "study_label": [-1, -1], "boxes_src": [[], []]})
    cfg = replace(C.StudyConfig(), round=2, teacher=str(tmp_path / "teacher"), soft_weight=0.6)
    rows, targets, known, info = teacher.student_targets(train, test, cfg)
    hard = onehot(np.array([1, 0, 3]), len(STUDY_CLASSES))
    np.testing.assert_allclose(targets[:2], 0.6 * soft + 0.4 * hard[:2], rtol=1e-6)
    np.testing.assert_allclose(targets[2], hard[2])  # no teacher prediction: label kept
    assert list(rows["image_id"]) == ["a", "b", "c", "x"] and list(known) == [True, True, True, False]
    np.testing.assert_allclose(targets[3], 0.25)
    assert info["n_pseudo_test"] == 1 and info["n_without_teacher"] == 1
    (t / "oof.csv").write_text("image_id,study_id\na,s\n")  # a broken teacher file stops the round, named
    with pytest.raises(ValueError, match=r"fold0.oof\.csv: missing columns"):
        teacher.student_targets(train, test, cfg)


def test_cli_makes_tiny_hub_and_prints_config(tmp_path, capsys):
    from siimcovid.__main__ import main

    assert main(["study-train", "--make-tiny-hub", str(tmp_path / "h")]) == 0
    assert (tmp_path / "h" / "saved_model.pb").exists()
    assert main(["study-train", "--config", "tiny_cpu", "--fold", "3", "--set", "image_size=96", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert (cfg["fold"], cfg["image_size"], cfg["name"]) == (3, 96, "tiny_cpu")


def test_sm_encoder_weights_load_from_a_local_h5(tmp_path, monkeypatch):
    """Internet-off kernels get ImageNet encoder weights from a mounted .h5 (found by name)."""
    import efficientnet.tfkeras as efn

    enc = efn.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    stem = enc.get_layer("stem_conv").get_weights()[0]
    stem_new = np.random.default_rng(0).normal(size=stem.shape).astype(np.float32)
    enc.get_layer("stem_conv").set_weights([stem_new])
    (tmp_path / "weights").mkdir()
    h5 = tmp_path / "weights" / "effb0_notop.h5"
    enc.save_weights(str(h5))
    monkeypatch.setenv("SIIM_INPUT", str(tmp_path))
    for ref in (str(h5), "effb0_notop.h5"):  # a path, or a file name found under the input roots
        model = build(C.load_config("tiny_fpn_cpu", sets=[f"sm_encoder_weights={ref}", "aux_seg=false"]))
        got = model.get_layer("fpn_efficientnetb0").get_layer("stem_conv").get_weights()[0]
        np.testing.assert_allclose(got, stem_new)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        B.resolve_encoder_weights("missing.h5")


def test_merge_defaults_to_the_folds_own_aggregation(round1, tmp_path):
    import shutil

    exp = round1["work"] / "r1"
    assert SM.configured_agg(SM.fold_dirs(exp)) == "mean"
    copy = tmp_path / "r1max"
    shutil.copytree(exp, copy)
    for k in (0, 1):
        cfg = json.loads((copy / f"fold{k}" / "config.json").read_text())
        (copy / f"fold{k}" / "config.json").write_text(json.dumps({**cfg, "study_agg": "max"}))
    assert SM.configured_agg(SM.fold_dirs(copy)) == "max"
    assert SM.cli(["--work", str(copy)]) == 0
    assert json.loads((copy / "scores.json").read_text())["aggregation"] == "max"
    cfg = json.loads((copy / "fold1" / "config.json").read_text())
    (copy / "fold1" / "config.json").write_text(json.dumps({**cfg, "study_agg": "mean"}))
    with pytest.raises(ValueError, match="disagree"):
        SM.configured_agg(SM.fold_dirs(copy))
