"""Study classifier: configs and the tf.data pipeline (mask alignment after augmentation)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import siimcovid  # noqa: F401  (before TensorFlow)
from siimcovid.boxes import Resize, paint_mask
from siimcovid import layout, variants
from siimcovid.classify import data as D
from siimcovid.study import config as C
from siimcovid.study.task import STUDY

tf = pytest.importorskip("tensorflow")


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("name", sorted(p.stem for p in C.CONFIG_DIR.glob("*.yaml")))
def test_every_variant_loads(name):
    cfg = C.load_config(name, overrides={"teacher": "x"} if "noisy" in name else None)
    assert cfg.name == name
    values = variants.read_variant(variants.variant_path(C.STAGE, name))  # with its _base_ chain
    assert values, name
    for key, value in values.items():
        if not (key == "teacher" and value is None):  # overridden above
            assert getattr(cfg, key) == variants.coerce(C.StudyConfig, key, value), key


def test_base_chain_and_sets():
    cfg = C.load_config("noisy_student_r2", sets=["teacher=/t", "image_size=128", "lr=1e-3", "src_size=none"])
    assert (cfg.round, cfg.model, cfg.image_size, cfg.teacher) == (2, "hub", 128, "/t")  # model from the base
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float) and cfg.src_size is None
    assert C.load_config("fpn_b0_aux").sm_backbone == "efficientnetb0"
    assert C.load_config("fpn_b0_aux").seg_weight == 0.6  # inherited from fpn_b5_aux


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(KeyError, match="image_sise.*valid keys"):
        C.load_config(sets=["image_sise=64"])
    with pytest.raises(ValueError, match="teacher"):
        C.load_config("noisy_student_r2")
    with pytest.raises(ValueError, match="multiple of 32"):
        C.load_config(sets=["image_size=100"])
    with pytest.raises(ValueError, match="optimizer.*'lamb'"):
        C.load_config(sets=["optimizer=lamb"])
    with pytest.raises(FileNotFoundError, match="tiny_cpu"):
        C.load_config("no_such_variant")
    bad = tmp_path / "bad.yaml"
    bad.write_text("_base_: bad.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        C.load_config(bad)


# ------------------------------------------------------------------ metadata
def test_meta_split_and_boxed_only(study_preprocess, tmp_path):
    meta = D.load_meta(study_preprocess, 64)
    assert set(meta["split"]) == {"train", "test"} and len(meta) == 22
    tr, va = STUDY.split(meta, C.StudyConfig(fold=0))
    assert set(tr["fold"]) == {1} and set(va["fold"]) == {0}
    assert not set(tr["study_id"]) & set(va["study_id"])
    # study st01 (typical) has a boxed and an unboxed image: boxed-only keeps one of them
    tr1, _ = STUDY.split(meta, C.StudyConfig(fold=0, positive_boxed_only=True))
    assert "img011" in set(tr["image_id"]) and "img011" not in set(tr1["image_id"])
    assert (tr1["study_label"] == 0).sum() == (tr["study_label"] == 0).sum()
    with pytest.raises(ValueError, match="fold 7"):
        STUDY.split(meta, C.StudyConfig(fold=7))
    unlabelled = meta.copy()
    unlabelled.loc[unlabelled["image_id"] == "img020", "study_label"] = -1
    with pytest.raises(ValueError, match=r"1 train images without a study label.*img020"):
        STUDY.split(unlabelled, C.StudyConfig(fold=0))


def test_onehot_rejects_labels_out_of_range():
    np.testing.assert_array_equal(D.onehot(np.array([3, 0]), 4), [[0, 0, 0, 1], [1, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"0\.\.3.*\[-1\]"):
        D.onehot(np.array([1, -1]), 4)  # would otherwise become "atypical"


def test_boxes_are_scaled_by_the_resize_plan():
    plan = Resize.plan(64, 64, 32)
    boxes = [[[6.0, 14.0, 26.0, 50.0], [38.0, 14.0, 58.0, 50.0]], [], [[20.0, 4.0, 44.0, 20.0]]]
    got = D.boxes_tensor(boxes, plan, max_boxes=3, ids=["a", "b", "c"])
    assert got.shape == (3, 3, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got[0, :2], plan.to_resized(boxes[0]))
    np.testing.assert_allclose(got[2, 0], plan.to_resized(boxes[2])[0])
    assert not got[1].any() and not got[0, 2].any()  # zero padding
    scale, offset = D.resize_coefficients(Resize(100, 100, 50, 50, 0.5, 0.25, pad_y=3.0, pad_x=7.0))
    np.testing.assert_allclose(scale, [0.25, 0.5, 0.25, 0.5])  # x uses scale_x, y scale_y
    np.testing.assert_allclose(offset, [7.0, 3.0, 7.0, 3.0])


def test_missing_png_is_skipped_and_bad_boxes_named(study_preprocess, tmp_path):
    import shutil

    import pandas as pd

    root = tmp_path / "pre"
    shutil.copytree(study_preprocess, root)
    (root / "images/64/train/img000.png").unlink()
    assert "img000" not in set(D.load_meta(root, 64)["image_id"])
    meta = pd.read_csv(root / "meta.csv")
    meta.loc[1, "boxes_64"] = "[[1, 2, 3]]"
    meta.to_csv(root / "meta.csv", index=False)
    with pytest.raises(ValueError, match="meta.csv image img010"):
        D.load_meta(root, 64)
    assert layout.pick_size(root, 48) == 64 and layout.pick_size(root, 512) == 64
    with pytest.raises(FileNotFoundError, match="sizes found"):
        layout.pick_size(root, 64, src_size=128)


# ------------------------------------------------------------------ masks
def test_paint_mask_tf_matches_numpy():
    boxes = np.array([[3.2, 5.7, 20.1, 30.0], [40, 40, 70, 70], [0, 0, 0, 0]], np.float32)
    got = D.paint_mask_tf(boxes, 64, 48).numpy()[..., 0]
    want = paint_mask(boxes[:2], 64, 48)
    np.testing.assert_array_equal(got, want)


def _cfg(**kw):
    base = C.load_config("tiny_cpu", sets=["mixed_precision=off"])
    return replace(base, **kw)


def _batch(study_preprocess, cfg, training):
    meta = D.load_meta(study_preprocess, 64, "train")
    boxed = meta[meta["boxes_src"].map(len) > 0].reset_index(drop=True)
    targets = D.onehot(boxed["study_label"].to_numpy(), 4)
    ds = D.make_train_dataset(boxed, targets, cfg, 64, training=training, batch_size=len(boxed))
    x, y = next(iter(ds))
    return x.numpy(), y["seg"].numpy(), y["cls"].numpy(), boxed


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_dataset_without_augmentation_aligns_exactly(study_preprocess):
    cfg = _cfg()
    x, seg, cls, boxed = _batch(study_preprocess, cfg, training=False)
    assert x.shape == (len(boxed), 64, 64, 3) and seg.shape == (len(boxed), 64, 64, 1)
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(cls, D.onehot(boxed["study_label"].to_numpy(), 4))
    for i in range(len(boxed)):
        assert _iou(x[i, ..., 0] > 0.5, seg[i, ..., 0] > 0.5) > 0.99


def test_downscaled_batch_keeps_mask_on_the_boxes(study_preprocess):
    """image_size < S: the boxes go through the resize plan with the image (32 px from 64 px PNGs)."""
    cfg = _cfg(image_size=32)
    x, seg, _, boxed = _batch(study_preprocess, cfg, training=False)
    assert x.shape[1:3] == (32, 32) and seg.shape[1:3] == (32, 32)
    plan = Resize.plan(64, 64, 32)
    for i in range(len(boxed)):
        np.testing.assert_array_equal(seg[i, ..., 0], paint_mask(plan.to_resized(boxed["boxes_src"][i]), 32, 32))
        # odd box edges land on half pixels: the mask takes them whole (floor/ceil), the antialiased
        # image has them half bright, hence not the ~1.0 of the unscaled test
        assert _iou(x[i, ..., 0] > 0.5, seg[i, ..., 0] > 0.5) > 0.8


def test_geometric_augmentation_moves_mask_with_image(study_preprocess):
    tf.random.set_seed(1)
    cfg = _cfg(rotate=25.0, scale=0.2, shift=0.15, brightness=0.0, contrast=0.0, randaug_n=0)
    x, seg, _, boxed = _batch(study_preprocess, cfg, training=True)
    ious = [_iou(x[i, ..., 0] > 0.5, seg[i, ..., 0] > 0.5) for i in range(len(x))]
    assert min(ious) > 0.8, ious
    moved = [_iou(seg[i, ..., 0] > 0.5, D.paint_mask_tf(boxed["boxes_src"][i], 64, 64).numpy()[..., 0] > 0.5)
             for i in range(len(x))]
    assert min(moved) < 0.9  # the augmentation really moved things


@pytest.mark.parametrize("op", D.RANDAUG_OPS)
def test_each_randaugment_op_keeps_alignment(op):
    img = np.full((64, 64, 1), 0.1, np.float32)
    img[10:40, 20:50] = 0.9
    mask = np.zeros((64, 64, 1), np.float32)
    mask[10:40, 20:50] = 1.0
    tf.random.set_seed(0)
    out_i, out_m = D.randaugment(tf.constant(img), tf.constant(mask), 1, 15, 64, ops=(op,))
    out_i, out_m = out_i.numpy(), out_m.numpy()
    assert out_i.shape == (64, 64, 1) and out_m.shape == (64, 64, 1)
    assert set(np.unique(out_m)) <= {0.0, 1.0}
    inside, outside = out_i[out_m > 0.5], out_i[out_m < 0.5]
    assert inside.size and outside.size
    if op not in ("solarize",):  # solarize inverts the bright box by design
        assert inside.mean() > outside.mean() + 0.2, op
    if op in ("identity", "autocontrast", "equalize", "solarize", "posterize", "contrast", "brightness", "sharpness"):
        np.testing.assert_array_equal(out_m, mask)  # colour ops leave the mask alone


def test_full_augmentation_keeps_mask_on_bright_boxes(study_preprocess):
    tf.random.set_seed(3)
    cfg = _cfg(randaug_n=2, randaug_m=15.0)
    x, seg, _, _ = _batch(study_preprocess, cfg, training=True)
    gaps = []
    for i in range(len(x)):
        m = seg[i, ..., 0] > 0.5
        if m.sum() > 20 and (~m).sum() > 20:
            gaps.append(x[i, ..., 0][m].mean() - x[i, ..., 0][~m].mean())
    assert len(gaps) >= len(x) // 2
    assert np.median(gaps) > 0.2, gaps


def test_unknown_mask_rows_are_flagged(study_preprocess):
    meta = D.load_meta(study_preprocess, 64, "train").head(4)  # img000 (no box), img010 (boxed), img011, img020 (boxed)
    assert [len(b) > 0 for b in meta["boxes_src"]] == [False, True, False, True]
    cfg = _cfg()
    known = np.array([True, False, False, True])
    ds = D.make_train_dataset(meta, D.onehot(meta["study_label"].to_numpy(), 4), cfg, 64, mask_known=known,
                              training=False, batch_size=4)
    _, y = next(iter(ds))
    seg = y["seg"].numpy()
    assert (seg[1] == D.UNKNOWN_MASK).all() and (seg[2] == D.UNKNOWN_MASK).all()  # boxed or not: unknown
    for i in (0, 3):  # known rows keep their real mask, boxed (3) or empty (0)
        np.testing.assert_array_equal(seg[i, ..., 0], paint_mask(meta["boxes_src"][i], 64, 64))
    assert seg[3].sum() > 0
