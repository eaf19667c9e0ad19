"""COCO files for one fold, from the preprocess output (boxes in the resized frame).

mmdet reads COCO; the preprocess output (docs/contracts.md) has ``meta.csv`` with ``boxes_<size>``
(xyxy in the ``size`` px frame) and the PNGs. Training images are the train split outside the fold;
box-less images are left out unless ``empty_rate`` > 0 (that share of them, drawn with the seed);
round 2 adds pseudo-labelled test images (boxes in original pixels, brought into the frame here).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..boxes import Resize, as_array, xyxy_to_xywh
from ..errors import UserError
from ..folds import split_fold
from ..layout import META_CSV, image_path, read_meta

CLASSES = ("opacity",)
CATEGORY_ID = 1


def load_meta(pre_dir: str | Path, size: int) -> pd.DataFrame:
    """meta.csv with boxes parsed, ``boxes_frame`` (the ``size`` frame) and ``path`` added."""
    pre_dir = Path(pre_dir)
    if not (pre_dir / META_CSV).exists():
        raise UserError(f"{pre_dir}: no {META_CSV} (pass the preprocess output folder)")
    meta = read_meta(pre_dir)
    col = f"boxes_{size}"
    if col not in meta.columns:
        sizes = sorted(int(c.split("_")[1]) for c in meta.columns if c.startswith("boxes_") and c[6:].isdigit())
        raise UserError(f"{pre_dir}: no images at {size} px (has {sizes}); pass --size one of them "
                        f"or preprocess with --size {size}")
    meta = meta.copy()
    meta["boxes_frame"] = meta[col]
    meta["path"] = [str(image_path(pre_dir, size, s, i)) for s, i in zip(meta["split"], meta["image_id"])]
    return meta


def select_training(rows: pd.DataFrame, empty_rate: float = 0.0, seed: int = 42) -> pd.DataFrame:
    """Boxed images, plus ``empty_rate`` of the box-less ones (random, fixed by ``seed``)."""
    if not 0.0 <= float(empty_rate) <= 1.0:
        raise UserError(f"empty_rate={empty_rate}: use a share between 0 and 1")
    boxed = rows["boxes_frame"].map(len) > 0
    empty = rows[~boxed]
    n = int(round(len(empty) * float(empty_rate)))
    keep = empty.sample(n=n, random_state=seed) if n else empty.iloc[:0]
    return pd.concat([rows[boxed], keep]).sort_index()


def pseudo_rows(meta: pd.DataFrame, pseudo: pd.DataFrame, size: int) -> pd.DataFrame:
    """Test rows of ``meta`` with the pseudo-label boxes (original px, [x0,y0,x1,y1(,score)]) in the frame."""
    test = meta[meta["split"] == "test"].set_index("image_id")
    missing = sorted(set(pseudo["image_id"]) - set(test.index))
    if missing:
        raise UserError(f"pseudo labels name {len(missing)} image(s) not in the test split, e.g. {missing[:3]}")
    rows = test.loc[list(pseudo["image_id"])].reset_index()
    frames = []
    for r, boxes in zip(rows.itertuples(index=False), pseudo["boxes"]):
        b = as_array([list(x)[:4] for x in (json.loads(boxes) if isinstance(boxes, str) else boxes)])
        plan = Resize.plan(int(r.orig_h), int(r.orig_w), size, bool(r.keep_aspect))
        frames.append(plan.to_resized(b).round(3).tolist())
    rows["boxes_frame"] = frames
    return rows


def to_coco(rows: pd.DataFrame, size: int) -> dict:
    """COCO dict (absolute file names; image ids are row numbers, ``siim_id`` keeps the image id)."""
    images, anns = [], []
    for i, r in enumerate(rows.itertuples(index=False), start=1):
        images.append({"id": i, "file_name": str(r.path), "height": int(size), "width": int(size),
                       "siim_id": r.image_id})
        for x, y, w, h in xyxy_to_xywh(r.boxes_frame):
            if w <= 0 or h <= 0:
                continue
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": CATEGORY_ID,
                         "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": CATEGORY_ID, "name": CLASSES[0]}]}


def write_fold(meta: pd.DataFrame, fold: int, size: int, out_dir: str | Path, *, empty_rate: float = 0.0,
               seed: int = 42, pseudo: pd.DataFrame | None = None) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """Write ``out_dir/train.json``; return (its path, training rows, held-out rows)."""
    train, held = split_fold(meta, fold)
    train = select_training(train, empty_rate, seed)
    if pseudo is not None and len(pseudo):
        train = pd.concat([train, pseudo_rows(meta, pseudo, size)], ignore_index=True)
    if not len(train):
        raise UserError(f"fold {fold}: no training image with a box")
    missing = [p for p in train["path"] if not Path(p).exists()]
    if missing:
        raise UserError(f"{len(missing)} training image(s) missing, e.g. {missing[0]}: re-run preprocess")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train.json"
    # under torchrun every rank writes the same file: write aside, then rename (atomic)
    tmp = out / f"train.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(to_coco(train, size)))
    tmp.replace(path)
    return path, train, held


def count_boxes(coco: dict) -> dict:
    return {"images": len(coco["images"]), "boxes": len(coco["annotations"]),
            "images_without_box": len({i["id"] for i in coco["images"]} - {a["image_id"] for a in coco["annotations"]})}

