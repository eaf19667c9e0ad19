"""TFRecord shards of the preprocess output, for the TPU kernels (TensorFlow imported lazily).

``OUT/tfrecords/<S>/<split>-<shard>-<n>.tfrec``; each record is one image with the features of
:data:`FEATURES` (the PNG bytes as written, not re-encoded). Train shards are grouped by fold
(``train-f<k>-...``) so a fold's validation set is a glob.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..layout import image_path, parse_boxes, tfrecord_dir

# name -> (kind, meaning); boxes are the flattened [x0, y0, x1, y1, ...] of boxes_<S>
FEATURES = {
    "image": ("bytes", "PNG, 8-bit grey, S x S"),
    "image_id": ("bytes", "SOPInstanceUID"),
    "study_id": ("bytes", "StudyInstanceUID"),
    "study_label": ("int64", "index into STUDY_CLASSES, -1 for test"),
    "fold": ("int64", "-1 for test"),
    "orig_h": ("int64", "original height"),
    "orig_w": ("int64", "original width"),
    "boxes": ("float", "flattened xyxy boxes in the S-pixel frame"),
}


def write_tfrecords(out: str | Path, meta: pd.DataFrame, sizes: Sequence[int], per_shard: int = 256) -> list[Path]:
    """Rebuild ``OUT/tfrecords/<S>/`` for each size from the PNGs of ``meta``'s rows (meta.csv as
    :func:`siimcovid.preprocess.convert.build_meta` makes it; ``boxes_<S>`` as lists or JSON text).
    Returns the shard paths written. Missing PNGs stop it before any shard is touched, naming them."""
    import tensorflow as tf

    def b(v): return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
    def i(v): return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
    def f(v): return tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in v]))

    out = Path(out)
    written = []
    for size in sizes:
        missing = [str(p) for p in (image_path(out, size, r.split, r.image_id) for r in meta.itertuples())
                   if not p.is_file()]
        if missing:  # checked up front: a shard cut short would still carry its full count in its name
            raise FileNotFoundError(f"{out}: {len(missing)} PNG(s) of meta.csv rows missing at {size} px, "
                                    f"e.g. {missing[:3]}; re-run preprocess (it rewrites missing PNGs)")
        folder = tfrecord_dir(out, size)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.tfrec"):
            old.unlink()  # shards are rebuilt from the PNGs each run
        groups = meta.groupby(["split", "fold"], sort=True)
        for (split, fold), df in groups:
            prefix = split if split == "test" else f"{split}-f{fold}"
            for k in range(0, len(df), per_shard):
                part = df.iloc[k:k + per_shard]
                path = folder / f"{prefix}-{k // per_shard:03d}-{len(part)}.tfrec"
                with tf.io.TFRecordWriter(str(path)) as w:
                    for r in part.itertuples():
                        boxes = parse_boxes(getattr(r, f"boxes_{size}"), f"meta.csv image {r.image_id}")
                        ex = tf.train.Example(features=tf.train.Features(feature={
                            "image": b(image_path(out, size, r.split, r.image_id).read_bytes()),
                            "image_id": b(r.image_id.encode()), "study_id": b(r.study_id.encode()),
                            "study_label": i(r.study_label), "fold": i(r.fold),
                            "orig_h": i(r.orig_h), "orig_w": i(r.orig_w),
                            "boxes": f([x for box in boxes for x in box]),
                        }))
                        w.write(ex.SerializeToString())
                written.append(path)
    return written
