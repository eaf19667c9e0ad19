"""Study classifier from the TFRecord shards of ``preprocess --tfrecords``: same batches as the
PNG route, prediction order kept, a fold (and a noisy-student round 2) trains from the shards.

Fixture: synth (24 studies, 1/16 scale) -> preprocess at 64 px with --tfrecords, 2 folds, built
once per module (~10 s); the model is the tiny local hub SavedModel, 1 epoch of 2 steps."""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import siimcovid  # noqa: F401  (before TensorFlow)

tf = pytest.importorskip("tensorflow")

from siimcovid import layout  # noqa: E402
from siimcovid.classify import data as D  # noqa: E402
from siimcovid.study import config as C  # noqa: E402
from siimcovid.study import evaluate as E  # noqa: E402
from siimcovid.study import predict as P  # noqa: E402
from siimcovid.tables import PROB_COLS, TTA_COLS  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def pre(tmp_path_factory):
    from siimcovid.preprocess import convert as preprocess
    from siimcovid.dev import synthetic

    root = tmp_path_factory.mktemp("study_tfr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert synthetic.cli(["--out", str(root / "data"), "--studies", "24", "--seed", "3", "--scale", "0.0625",
                              "--no-progress"]) == 0
        assert preprocess.cli(["--data", str(root / "data"), "--out", str(root / "pre"), "--size", str(SIZE),
                               "--tfrecords", "--k", "2", "--workers", "1", "--no-progress"]) == 0
    return root / "pre"


def _cfg(**kw):
    return replace(C.load_config("tiny_cpu", sets=["mixed_precision=off"]), **kw)


def _batch(df, cfg):
    ds = D.make_train_dataset(df, D.onehot(df["study_label"].to_numpy(), 4), cfg, SIZE, training=False,
                              batch_size=len(df))
    x, y = next(iter(ds))
    return x.numpy(), y["seg"].numpy(), y["cls"].numpy()


def test_meta_from_shards_matches_pngs(pre, tmp_path):
    png = D.load_meta(pre, SIZE)
    rec = D.load_meta(pre, SIZE, input_format="tfrecord")
    assert list(rec["image_id"]) == list(png["image_id"]) and rec["shard"].notna().all()
    assert layout.pick_size(pre, 32, input_format="tfrecord") == SIZE
    # a meta row without a record is dropped and logged, like a missing PNG
    import shutil

    root = tmp_path / "pre"
    shutil.copytree(pre, root)
    meta = pd.read_csv(root / "meta.csv")
    extra = meta.iloc[[0]].assign(image_id="no_record")
    pd.concat([meta, extra]).to_csv(root / "meta.csv", index=False)
    assert "no_record" not in set(D.load_meta(root, SIZE, input_format="tfrecord")["image_id"])
    with pytest.raises(FileNotFoundError, match="tfrecords"):
        layout.pick_size(root / "nowhere", 64, input_format="tfrecord")


@pytest.mark.parametrize("image_size", [SIZE, SIZE // 2])
def test_tfrecord_batch_equals_png_batch(pre, image_size):
    """Same rows, no augmentation: identical image, mask and target; boxes really paint the mask
    (also when the S-pixel images and boxes are scaled down to the training size)."""
    cfg = _cfg(image_size=image_size)
    png = D.load_meta(pre, SIZE, "train")
    rec = D.load_meta(pre, SIZE, "train", input_format="tfrecord")
    rec = rec[rec["fold"] == 1].reset_index(drop=True)  # one fold's shard + a shuffled row order
    rec = rec.sample(frac=1.0, random_state=0).reset_index(drop=True)
    order = D.record_order(rec)  # the order the shards yield rows when not training
    want = png.set_index("image_id").loc[rec["image_id"].to_numpy()[order]].reset_index()
    xp, mp, cp = _batch(want, cfg)
    xr, mr, cr = _batch(rec, replace(cfg, input_format="tfrecord"))
    np.testing.assert_array_equal(xr, xp)
    np.testing.assert_array_equal(mr, mp)
    np.testing.assert_array_equal(cr, cp)
    assert mp.sum() > 0 and any(len(b) for b in want["boxes_src"])


def test_tfrecord_training_stream_pairs_images_with_their_rows(pre):
    """Training (shuffled, interleaved, repeated): one epoch holds every row once, each image with
    its own row's (soft) target and mask, found through the row table."""
    rec = D.load_meta(pre, SIZE, "train", input_format="tfrecord")
    n = len(rec)
    targets = np.zeros((n, 4), np.float32)
    targets[:, 0] = np.arange(n) / 100.0  # a row tag
    targets[:, 1] = 1.0 - targets[:, 0]
    still = dict(hflip=False, shift=0.0, scale=0.0, rotate=0.0, brightness=0.0, contrast=0.0, randaug_n=0)
    cfg = _cfg(image_size=SIZE, input_format="tfrecord", **still)
    x, y = next(iter(D.make_train_dataset(rec, targets, cfg, SIZE, training=True, batch_size=n)))
    tags = np.round(y["cls"].numpy()[:, 0] * 100).astype(int)
    assert sorted(tags) == list(range(n)) and list(tags) != list(range(n))  # a permutation, shuffled
    xp, mp, _ = _batch(D.load_meta(pre, SIZE, "train").iloc[tags].reset_index(drop=True), _cfg(image_size=SIZE))
    np.testing.assert_array_equal(x.numpy(), xp)
    np.testing.assert_array_equal(y["seg"].numpy(), mp)
    with pytest.raises(ValueError, match="load_meta"):
        D.make_train_dataset(D.load_meta(pre, SIZE, "train"), targets, cfg, SIZE)


def test_prediction_order_follows_the_rows(pre):
    """Shards yield rows in shard order; predictions come back in df order (keyed by image_id)."""
    inp = tf.keras.Input((SIZE, SIZE, 3))
    # a fixed function of the pixels: image mean and a left/right difference -> softmax
    mean = tf.keras.layers.GlobalAveragePooling2D()(inp)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(4, activation="softmax",
                                                      kernel_initializer="glorot_uniform")(mean * 50.0))
    cfg = _cfg(image_size=SIZE, batch_size=4)
    png = D.load_meta(pre, SIZE)
    rec = D.load_meta(pre, SIZE, input_format="tfrecord").sample(frac=1.0, random_state=1).reset_index(drop=True)
    a = P.predict_frame(model, png, cfg).set_index("image_id")
    b = P.predict_frame(model, rec, cfg)
    assert list(b["image_id"]) == list(rec["image_id"])
    np.testing.assert_allclose(b[PROB_COLS + TTA_COLS].to_numpy(),
                               a.loc[b["image_id"], PROB_COLS + TTA_COLS].to_numpy(), rtol=1e-5, atol=1e-6)
    assert np.ptp(b[PROB_COLS[0]]) > 0  # the probe model does tell images apart


@pytest.fixture(scope="module")
def runs(pre, tmp_path_factory):
    from siimcovid.classify.backbones import export_tiny_savedmodel
    from siimcovid.study import train as T

    root = tmp_path_factory.mktemp("study_tfr_work")
    hub = str(export_tiny_savedmodel(root / "hub", endpoints=True))
    base = dict(hub_handle=hub, preprocess=str(pre), workdir=str(root / "work"), batch_size=4, verbose=0,
                fold=0, epochs=1, steps_per_epoch=2, image_size=SIZE)
    out = {}
    for fmt in ("png", "tfrecord"):
        out[fmt] = T.train_fold(_cfg(name=f"r1_{fmt}", input_format=fmt, **base))
    # round 2 on fold 1: its training images (fold 0) are round 1's out-of-fold images
    out["r2"] = T.train_fold(_cfg(name="r2_tfrecord", input_format="tfrecord", round=2,
                                  teacher=str(root / "work" / "r1_tfrecord"), soft_weight=0.5, **{**base, "fold": 1}))
    out["work"] = root / "work"
    return out


def test_fold_trains_from_tfrecords_and_writes_the_same_ids(runs, pre):
    work = runs["work"]
    assert runs["tfrecord"]["data"]["input_format"] == "tfrecord"
    for name in ("oof.csv", "test.csv"):
        p = pd.read_csv(work / "r1_png/fold0" / name, dtype={"image_id": str})
        r = pd.read_csv(work / "r1_tfrecord/fold0" / name, dtype={"image_id": str})
        assert list(r["image_id"]) == list(p["image_id"]) and len(r)
        assert list(r["study_id"]) == list(p["study_id"])
        np.testing.assert_allclose(r[PROB_COLS].sum(axis=1), 1.0, rtol=1e-4)
    meta = pd.read_csv(pre / "meta.csv", dtype={"image_id": str})
    oof = pd.read_csv(work / "r1_tfrecord/fold0/oof.csv", dtype={"image_id": str})
    assert set(oof["image_id"]) == set(meta.query("split == 'train' and fold == 0")["image_id"])
    hist = pd.read_csv(work / "r1_tfrecord/fold0/history.csv")
    assert len(hist) == 1 and np.isfinite(hist["loss"]).all()


def test_noisy_student_round2_reads_soft_targets_with_tfrecords(runs, pre):
    info = runs["r2"]["data"]
    assert info["input_format"] == "tfrecord"
    assert info["n_soft"] == info["n_train"] > 0 and info["n_without_teacher"] == 0
    n_test = (pd.read_csv(pre / "meta.csv")["split"] == "test").sum()
    assert info["n_pseudo_test"] == n_test  # test records join training with the teacher's targets
    assert (runs["work"] / "r2_tfrecord/fold1/oof.csv").exists()
