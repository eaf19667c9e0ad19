"""Classifier input: the preprocess output -> tf.data (image, targets, box mask), for every task.

Everything after the file read runs in the tf.data graph (decode, resize, mask painting,
flips / shift-scale-rotate / brightness-contrast / RandAugment), so a TPU host or GPU box
feeds the model without Python in the loop. Geometric ops move the image and its mask with
one transform matrix (bilinear for the image, nearest for the mask), so the mask stays on the
boxes.

Two sources feed the same graph: PNG files (``images/<S>/<split>/<id>.png``, ``df["path"]``) or
the TFRecord shards of ``preprocess --tfrecords`` (``tfrecords/<S>/*.tfrec``, ``df["shard"]`` and
``df["shard_pos"]`` set by ``load_meta(..., input_format="tfrecord")``). Each source only yields
(PNG bytes, boxes, class target, mask known); decoding, mask painting and augmentation are shared.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

from ..boxes import Resize
from ..log import get_logger

if TYPE_CHECKING:
    import tensorflow as tf

    from .config import ClassifierConfig

INPUT_FORMATS = ("png", "tfrecord")
SHUFFLE_BUFFER = 1024  # encoded records held for shuffling TFRecords (~250 kB each at 512 px)
UNKNOWN_MASK = -1.0  # seg target value meaning "no mask for this image" (test pseudo-labels)


# --------------------------------------------------------------------------- metadata
def _input_root(input_format: str) -> str:
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
    return "images" if input_format == "png" else "tfrecords"


def image_sizes(pre_dir: str | os.PathLike, input_format: str = "png") -> list[int]:
    from ..layout import available_sizes

    _input_root(input_format)
    return available_sizes(pre_dir, input_format)


def parse_box_cell(cell: object, source: str) -> list[list[float]]:
    from ..layout import parse_boxes

    return parse_boxes(cell, source)


def tfrecord_index(folder: str | os.PathLike) -> pd.DataFrame:
    """image_id, shard (file path), shard_pos (record number) of every record in ``folder``/*.tfrec.

    Parses only the image ids (no PNG decode): one sequential read of the shards."""
    import tensorflow as tf

    files = sorted(str(p) for p in Path(folder).glob("*.tfrec"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.tfrec shards (run preprocess --tfrecords)")
    spec = {"image_id": tf.io.FixedLenFeature([], tf.string)}
    rows = []
    for f in files:
        try:
            ids = [r.numpy().decode() for r in tf.data.TFRecordDataset(f).map(
                lambda x: tf.io.parse_single_example(x, spec)["image_id"])]
        except tf.errors.OpError as exc:
            raise ValueError(f"{f}: unreadable TFRecord shard ({type(exc).__name__}: {exc.message})") from exc
        rows += [(i, f, k) for k, i in enumerate(ids)]
    index = pd.DataFrame(rows, columns=["image_id", "shard", "shard_pos"])
    dup = index[index["image_id"].duplicated(keep=False)]
    if len(dup):
        raise ValueError(f"{folder}: image {dup['image_id'].iloc[0]} is in several records "
                         f"({sorted(set(dup['shard'].head(4)))}); rebuild the shards (preprocess --tfrecords)")
    return index


def load_meta(pre_dir: str | os.PathLike, src_size: int, split: str | None = None,
              input_format: str = "png") -> pd.DataFrame:
    """meta.csv rows (of one split) with ``path`` to the S-pixel PNG and ``boxes_src`` (S frame).

    ``input_format="tfrecord"`` also sets ``shard`` / ``shard_pos`` (where the row's record is in
    tfrecords/<S>/) and checks records instead of PNG files. Rows whose PNG (record) is missing
    are dropped and logged (the batch goes on)."""
    from ..layout import read_meta

    _input_root(input_format)
    pre_dir = Path(pre_dir)
    df = read_meta(pre_dir, src_size, split, require=(f"boxes_{src_size}",))  # boxes parsed, path set
    df["boxes_src"] = df["boxes_frame"]
    if input_format == "tfrecord":
        folder = pre_dir / "tfrecords" / str(src_size)
        index = tfrecord_index(folder)
        df = df.drop(columns=["shard", "shard_pos"], errors="ignore").merge(index, on="image_id", how="left")
        exists = df["shard"].notna()
        if not exists.all():
            get_logger().warning("%s: %d of %d meta.csv images have no record, skipped (e.g. %s)", folder,
                                 int((~exists).sum()), len(df), df.loc[~exists, "image_id"].iloc[0])
    else:
        exists = df["path"].map(os.path.exists)
        if not exists.all():
            get_logger().warning("%s: %d of %d PNGs missing, skipped (e.g. %s)", pre_dir, int((~exists).sum()),
                                 len(df), df.loc[~exists, "path"].iloc[0])
    df = df[exists].reset_index(drop=True)
    if input_format == "tfrecord":
        df["shard_pos"] = df["shard_pos"].astype(int)
    df.attrs["src_size"] = src_size
    return df


def onehot(labels: np.ndarray, n: int) -> np.ndarray:
    """Integer labels -> (N, n) one-hot float32; a label outside 0..n-1 is an error."""
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= n)
    if bad.any():  # -1 (test / unlabelled) would otherwise index the last class silently
        raise ValueError(f"onehot: labels must be in 0..{n - 1}, got {sorted(set(labels[bad].tolist()))}")
    out = np.zeros((len(labels), n), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def boxes_tensor(boxes: list[list[list[float]]], resize: Resize, max_boxes: int,
                 ids: list[str] | None = None) -> np.ndarray:
    """Per image boxes (S frame) -> (N, max_boxes, 4) float32 in the training frame (``resize``),
    zero-padded. ``ids`` name the images in the warning about boxes past ``max_boxes``.

    Scaled in float32 with :func:`resize_coefficients`, exactly as the TFRecord route does in the
    graph, so both routes paint the same mask pixels."""
    scale, offset = resize_coefficients(resize)
    out = np.zeros((len(boxes), max_boxes, 4), dtype=np.float32)
    for i, bs in enumerate(boxes):
        if len(bs) > max_boxes:
            get_logger().warning("image %s: %d boxes, mask keeps the first %d", ids[i] if ids is not None else i,
                                 len(bs), max_boxes)
        if len(bs):
            out[i, :min(len(bs), max_boxes)] = np.asarray(bs[:max_boxes], dtype=np.float32) * scale + offset
    return out


def resize_coefficients(resize: Resize) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset), each (4,) float32, with ``resize.to_resized(b) == b * scale + offset``
    (read off the Resize itself): box scaling in float32, in the tf.data graph and boxes_tensor."""
    offset = resize.to_resized(np.zeros((1, 4)))[0]
    scale = resize.to_resized(np.ones((1, 4)))[0] - offset
    return scale.astype(np.float32), offset.astype(np.float32)


# --------------------------------------------------------------------------- graph ops
def paint_mask_tf(boxes: "tf.Tensor", height: int, width: int) -> "tf.Tensor":
    """(K, 4) xyxy boxes -> (H, W, 1) float mask; same pixel rule as ``siimcovid.boxes.paint_mask``."""
    import tensorflow as tf

    b = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    c0 = tf.maximum(tf.floor(b[:, 0]), 0.0)
    r0 = tf.maximum(tf.floor(b[:, 1]), 0.0)
    c1 = tf.minimum(tf.math.ceil(b[:, 2]), float(width))
    r1 = tf.minimum(tf.math.ceil(b[:, 3]), float(height))
    rows = tf.range(height, dtype=tf.float32)[None, :, None]
    cols = tf.range(width, dtype=tf.float32)[None, None, :]
    inside = ((rows >= r0[:, None, None]) & (rows < r1[:, None, None])
              & (cols >= c0[:, None, None]) & (cols < c1[:, None, None]))
    mask = tf.reduce_any(inside, axis=0)
    return tf.cast(mask, tf.float32)[..., None]


def _transform(images: "tf.Tensor", matrix: "tf.Tensor", interpolation: str) -> "tf.Tensor":
    """Apply a 3x3 output->input pixel matrix to an (H, W, C) image, zeros outside."""
    import tensorflow as tf

    flat = tf.reshape(matrix, [9])[:8] / matrix[2, 2]
    shape = tf.shape(images)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images[None], transforms=flat[None], output_shape=shape[:2],
        fill_value=0.0, interpolation=interpolation, fill_mode="CONSTANT")
    return out[0]


def affine_matrix(size: int, angle_deg, scale, shift_x, shift_y, shear_x=0.0, shear_y=0.0, flip=False) -> "tf.Tensor":
    """Output->input matrix of: flip, rotate, zoom, shear about the centre, then shift (fractions)."""
    import tensorflow as tf

    f32 = lambda v: tf.cast(v, tf.float32)  # noqa: E731
    c = (size - 1) / 2.0
    a = f32(angle_deg) * (math.pi / 180.0)
    cos, sin = tf.cos(a), tf.sin(a)
    one, zero = tf.constant(1.0), tf.constant(0.0)
    # forward map (input -> output) about the centre, then invert
    rot = tf.stack([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])
    zoom = tf.stack([[f32(scale), zero, zero], [zero, f32(scale), zero], [zero, zero, one]])
    shear = tf.stack([[one, f32(shear_x), zero], [f32(shear_y), one, zero], [zero, zero, one]])
    fl = tf.where(tf.cast(flip, tf.bool), -1.0, 1.0)
    flip_m = tf.stack([[fl, zero, zero], [zero, one, zero], [zero, zero, one]])
    to_c = tf.constant([[1.0, 0.0, -c], [0.0, 1.0, -c], [0.0, 0.0, 1.0]])
    from_c = tf.stack([[one, zero, c + f32(shift_x) * size], [zero, one, c + f32(shift_y) * size], [zero, zero, one]])
    fwd = from_c @ rot @ zoom @ shear @ flip_m @ to_c
    return tf.linalg.inv(fwd)


def geometric(image: "tf.Tensor", mask: "tf.Tensor", matrix: "tf.Tensor") -> tuple["tf.Tensor", "tf.Tensor"]:
    return _transform(image, matrix, "BILINEAR"), _transform(mask, matrix, "NEAREST")


def _rand(lo: float, hi: float) -> "tf.Tensor":
    import tensorflow as tf

    return tf.random.uniform([], lo, hi)


def _signed(v: float) -> "tf.Tensor":
    import tensorflow as tf

    return tf.where(tf.random.uniform([]) < 0.5, -v, v)


def _blend(a, b, factor):
    import tensorflow as tf

    return tf.clip_by_value(b + factor * (a - b), 0.0, 1.0)


def _equalize(img):
    import tensorflow as tf

    q = tf.cast(tf.clip_by_value(img * 255.0, 0, 255), tf.int32)
    hist = tf.math.bincount(tf.reshape(q, [-1]), minlength=256, maxlength=256, dtype=tf.float32)
    cdf = tf.cumsum(hist)
    cdf_min = tf.reduce_min(tf.where(cdf > 0, cdf, tf.reduce_max(cdf)))
    lut = (cdf - cdf_min) / tf.maximum(cdf[-1] - cdf_min, 1.0)
    return tf.gather(lut, q)


def _autocontrast(img):
    import tensorflow as tf

    lo, hi = tf.reduce_min(img), tf.reduce_max(img)
    return tf.where(hi > lo, (img - lo) / tf.maximum(hi - lo, 1e-6), img)


def _sharpness(img, factor):
    import tensorflow as tf

    k = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    blur = tf.nn.depthwise_conv2d(img[None], k[:, :, None, None], [1, 1, 1, 1], "SAME")[0]
    return _blend(img, blur, factor)


RANDAUG_OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "posterize", "contrast",
               "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")


def randaugment(image: "tf.Tensor", mask: "tf.Tensor", n: int, magnitude: float, size: int,
                ops: tuple[str, ...] = RANDAUG_OPS) -> tuple["tf.Tensor", "tf.Tensor"]:
    """RandAugment (Cubuk et al. 2019): ``n`` ops drawn uniformly, each at ``magnitude`` (0-30).

    Geometric ops move the mask with the image; colour ops touch the image only. Colour-only
    ops of the paper that mean nothing on a grey radiograph (color, invert) are left out."""
    import tensorflow as tf

    m = float(magnitude) / 30.0

    def geo(**kw):
        def f(img, msk):
            args = dict(angle_deg=0.0, scale=1.0, shift_x=0.0, shift_y=0.0)
            args.update(kw)
            return geometric(img, msk, affine_matrix(size, **{k: (v() if callable(v) else v) for k, v in args.items()}))
        return f

    table = {
        "identity": lambda i, k: (i, k),
        "autocontrast": lambda i, k: (_autocontrast(i), k),
        "equalize": lambda i, k: (_equalize(i), k),
        "rotate": geo(angle_deg=lambda: _signed(30.0 * m)),
        "solarize": lambda i, k: (tf.where(i < 1.0 - m, i, 1.0 - i), k),
        "posterize": lambda i, k: (tf.floor(i * 2.0 ** (8 - round(4 * m))) / 2.0 ** (8 - round(4 * m)), k),
        "contrast": lambda i, k: (_blend(i, tf.reduce_mean(i), 1.0 + _signed(0.9 * m)), k),
        "brightness": lambda i, k: (_blend(i, tf.zeros_like(i), 1.0 + _signed(0.9 * m)), k),
        "sharpness": lambda i, k: (_sharpness(i, 1.0 + _signed(0.9 * m)), k),
        "shear_x": geo(shear_x=lambda: _signed(0.3 * m)),
        "shear_y": geo(shear_y=lambda: _signed(0.3 * m)),
        "translate_x": geo(shift_x=lambda: _signed(0.3 * m)),
        "translate_y": geo(shift_y=lambda: _signed(0.3 * m)),
    }
    unknown = set(ops) - set(table)
    if unknown:
        raise ValueError(f"unknown RandAugment ops {sorted(unknown)}; valid: {', '.join(table)}")
    for _ in range(int(n)):
        # bind this round's tensors into each branch (default args), then pick one at random
        branches = [(lambda f, i=image, k=mask: (lambda: f(i, k)))(table[o]) for o in ops]
        idx = tf.random.uniform([], 0, len(ops), dtype=tf.int32)
        image, mask = tf.switch_case(idx, branches)
        image = tf.ensure_shape(image, [size, size, 1])
        mask = tf.ensure_shape(mask, [size, size, 1])
    return image, mask


def augment(image: "tf.Tensor", mask: "tf.Tensor", cfg: "ClassifierConfig") -> tuple["tf.Tensor", "tf.Tensor"]:
    """Flip + shift-scale-rotate (one matrix), brightness/contrast, then RandAugment."""
    import tensorflow as tf

    size = cfg.image_size
    flip = tf.random.uniform([]) < 0.5 if cfg.hflip else tf.constant(False)
    matrix = affine_matrix(
        size,
        angle_deg=_rand(-cfg.rotate, cfg.rotate) if cfg.rotate else 0.0,
        scale=_rand(1.0 - cfg.scale, 1.0 + cfg.scale) if cfg.scale else 1.0,
        shift_x=_rand(-cfg.shift, cfg.shift) if cfg.shift else 0.0,
        shift_y=_rand(-cfg.shift, cfg.shift) if cfg.shift else 0.0,
        flip=flip,
    )
    image, mask = geometric(image, mask, matrix)
    if cfg.brightness:
        image = image + _rand(-cfg.brightness, cfg.brightness)
    if cfg.contrast:
        image = _blend(image, tf.reduce_mean(image), _rand(1.0 - cfg.contrast, 1.0 + cfg.contrast))
    image = tf.clip_by_value(image, 0.0, 1.0)
    if cfg.randaug_n > 0 and cfg.randaug_m > 0:
        image, mask = randaugment(image, mask, cfg.randaug_n, cfg.randaug_m, size)
    return image, mask


def decode_bytes(data: "tf.Tensor", size: int) -> "tf.Tensor":
    """Encoded PNG (8-bit grey) -> (size, size, 1) float32 in [0, 1]."""
    import tensorflow as tf

    img = tf.io.decode_png(data, channels=1)
    img = tf.image.convert_image_dtype(img, tf.float32)
    # Same-size antialiased resizing is ~2/3 of decode+resize time at 512 px and changes nothing
    # to speak of: skip it when the stored size is the training size (the common case).
    same = tf.reduce_all(tf.shape(img)[:2] == size)
    img = tf.cond(same, lambda: img,
                  lambda: tf.image.resize(img, [size, size], method="bilinear", antialias=True))
    return tf.ensure_shape(tf.clip_by_value(img, 0.0, 1.0), [size, size, 1])


def decode(path: "tf.Tensor", size: int) -> "tf.Tensor":
    """PNG file (8-bit grey) -> (size, size, 1) float32 in [0, 1]."""
    import tensorflow as tf

    return decode_bytes(tf.io.read_file(path), size)


# --------------------------------------------------------------------------- TFRecord source
def _record_spec() -> dict:
    import tensorflow as tf

    return {"image": tf.io.FixedLenFeature([], tf.string), "image_id": tf.io.FixedLenFeature([], tf.string),
            "boxes": tf.io.VarLenFeature(tf.float32)}


def _record_rows(df: pd.DataFrame, training: bool, seed: int) -> "tf.data.Dataset":
    """(serialized record, row index into ``df``) for the records of ``df``'s rows.

    A record's row comes from a dense (shard, position) -> row grid built from ``df["shard"]`` /
    ``df["shard_pos"]`` (plain constant tensors, no lookup-table resource, so the pipeline
    distributes under any tf.distribute strategy); records of rows not in ``df`` (the other folds,
    boxed-only filtering) are dropped. Not training: shards in sorted order, read sequentially,
    so the output order is ``df`` sorted by (shard, shard_pos) (see :func:`record_order`)."""
    import tensorflow as tf

    if "shard" not in df.columns or "shard_pos" not in df.columns:
        raise ValueError("TFRecord input needs df from load_meta(..., input_format='tfrecord') (shard, shard_pos)")
    if df["image_id"].duplicated().any():
        raise ValueError(f"TFRecord input: image {df.loc[df['image_id'].duplicated(), 'image_id'].iloc[0]} "
                         "appears twice in the rows to read")
    files = sorted(df["shard"].unique())
    file_idx = df["shard"].map({f: k for k, f in enumerate(files)}).to_numpy(np.int64)
    pos = df["shard_pos"].to_numpy(np.int64)
    grid = np.full((len(files), int(pos.max()) + 1), -1, np.int64)
    grid[file_idx, pos] = np.arange(len(df))
    grid_t = tf.constant(grid)
    n_pos = grid.shape[1]

    def per_file(k, f):
        def row_of(p, rec):
            r = tf.cond(p < n_pos, lambda: grid_t[k, tf.minimum(p, n_pos - 1)], lambda: tf.constant(-1, tf.int64))
            return rec, r
        return tf.data.TFRecordDataset(f).enumerate().map(row_of)

    files_ds = tf.data.Dataset.from_tensor_slices((np.arange(len(files), dtype=np.int64), np.asarray(files, str)))
    if training:
        files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = files_ds.interleave(per_file, cycle_length=min(len(files), 16), block_length=1,
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    else:
        ds = files_ds.flat_map(per_file)
    return ds.filter(lambda rec, r: r >= 0)


def record_order(df: pd.DataFrame) -> np.ndarray:
    """Row positions of ``df`` in the order a non-training TFRecord pipeline yields them."""
    files = sorted(df["shard"].unique())
    file_idx = df["shard"].map({f: k for k, f in enumerate(files)}).to_numpy()
    return np.lexsort((df["shard_pos"].to_numpy(), file_idx))


def _parse_record(rec: "tf.Tensor", row: "tf.Tensor", ids: "tf.Tensor") -> tuple["tf.Tensor", "tf.Tensor"]:
    """-> (PNG bytes, (K, 4) boxes in the S frame); fails loudly if the record is not ``ids[row]``
    (shards rewritten after load_meta indexed them)."""
    import tensorflow as tf

    ex = tf.io.parse_single_example(rec, _record_spec())
    check = tf.debugging.assert_equal(ex["image_id"], tf.gather(ids, row),
                                      message="TFRecord shard changed since load_meta indexed it")
    with tf.control_dependencies([check]):
        data = tf.identity(ex["image"])
    boxes = tf.reshape(tf.sparse.to_dense(ex["boxes"]), [-1, 4])
    return data, boxes


# --------------------------------------------------------------------------- datasets
def make_train_dataset(df: pd.DataFrame, targets: np.ndarray, cfg: "ClassifierConfig", src_size: int,
                       mask_known: np.ndarray | None = None, training: bool = True,
                       batch_size: int | None = None) -> "tf.data.Dataset":
    """(image (S, S, 3) in [0, 1], {"cls": (K,), "seg": (S, S, 1)}) batches.

    ``targets``: (N, K) targets of the task (one-hot, soft, or K sigmoid outputs), row-aligned with ``df``. ``mask_known``
    False marks rows whose mask is unknown (test pseudo-labels): their seg target is
    UNKNOWN_MASK and the loss skips it. ``training`` shuffles, repeats and augments.
    Rows with ``shard`` / ``shard_pos`` (``cfg.input_format == "tfrecord"``) are read from the
    TFRecord shards, others from ``df["path"]``; targets of TFRecord rows are found by row index
    (so noisy-student soft targets, keyed by image_id in ``df``, work with both)."""
    import tensorflow as tf

    n = len(df)
    if n == 0:
        raise ValueError("make_train_dataset: no images")
    size = cfg.image_size
    # images/<S>/ (and the records) hold S x S PNGs that decode_bytes stretches to size x size
    resize = Resize.plan(src_size, src_size, size)
    known = np.ones(n, dtype=bool) if mask_known is None else np.asarray(mask_known, dtype=bool)
    targets = np.asarray(targets, dtype=np.float32)
    if len(targets) != n or len(known) != n:
        raise ValueError(f"make_train_dataset: {n} rows, {len(targets)} targets, {len(known)} mask flags")
    opts = tf.data.Options()
    opts.deterministic = not training

    if cfg.input_format == "tfrecord":
        # source: records of df's rows -> (PNG bytes, boxes in the training frame, target, known)
        ids_t = tf.constant(df["image_id"].to_numpy(str))
        targets_t, known_t = tf.constant(targets), tf.constant(known)
        box_scale, box_offset = resize_coefficients(resize)
        ds = _record_rows(df, training, cfg.seed).with_options(opts)
        if training:
            ds = ds.shuffle(min(n, SHUFFLE_BUFFER), seed=cfg.seed, reshuffle_each_iteration=True)

        def read(rec, row):
            data, bx = _parse_record(rec, row, ids_t)
            bx = bx[:cfg.max_boxes] * box_scale + box_offset
            return data, bx, tf.gather(targets_t, row), tf.gather(known_t, row)
    else:
        boxes = boxes_tensor(df["boxes_src"].tolist(), resize, cfg.max_boxes, df["image_id"].tolist())
        ds = tf.data.Dataset.from_tensor_slices((df["path"].to_numpy(str), boxes, targets, known)).with_options(opts)
        if training:
            ds = ds.shuffle(n, seed=cfg.seed, reshuffle_each_iteration=True)

        def read(path, bx, target, kn):
            return tf.io.read_file(path), bx, target, kn

    # shared from here on: (PNG bytes, boxes, target, known) -> decoded, masked, augmented batches
    def load(data, bx, target, kn):
        return decode_bytes(data, size), paint_mask_tf(bx, size, size), target, kn

    ds = ds.map(lambda *a: load(*read(*a)), num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.cache:
        ds = ds.cache()
    if training:
        ds = ds.repeat()

    def finish(img, msk, target, kn):
        if training:
            img, msk = augment(img, msk, cfg)
        msk = tf.where(kn, msk, tf.fill(tf.shape(msk), UNKNOWN_MASK))
        x = tf.image.grayscale_to_rgb(img)
        y = {"cls": target}
        if cfg.aux_seg:
            y["seg"] = msk
            if cfg.aux_heads > 1:
                y["seg2"] = msk
        return x, y

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size or cfg.batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)


def _predict_batches(ds: "tf.data.Dataset", size: int, batch_size: int, hflip: bool) -> "tf.data.Dataset":
    """PNG bytes -> model inputs; shared by both sources."""
    import tensorflow as tf

    def load(data):
        img = decode_bytes(data, size)
        if hflip:
            img = tf.image.flip_left_right(img)
        return tf.image.grayscale_to_rgb(img)

    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_predict_dataset(paths: list[str] | np.ndarray, size: int, batch_size: int, hflip: bool = False) -> "tf.data.Dataset":
    """Images only, in order; ``hflip`` mirrors every image (TTA)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(np.asarray(paths, dtype=str)).map(tf.io.read_file)
    return _predict_batches(ds, size, batch_size, hflip)


def make_predict_records(df: pd.DataFrame, size: int, batch_size: int,
                         hflip: bool = False) -> tuple["tf.data.Dataset", np.ndarray]:
    """Images of ``df``'s rows from the TFRecord shards -> (dataset, order): the i-th image
    yielded is row ``order[i]`` of ``df`` (shard order, not df order)."""
    import tensorflow as tf

    ids_t = tf.constant(df["image_id"].to_numpy(str))
    ds = _record_rows(df, training=False, seed=0).map(lambda rec, row: _parse_record(rec, row, ids_t)[0])
    return _predict_batches(ds, size, batch_size, hflip), record_order(df)
