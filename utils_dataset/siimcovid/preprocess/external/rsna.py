"""RSNA Pneumonia Detection Challenge (Kaggle competition), read as published.

``stage_2_train_labels.csv``: ``patientId,x,y,width,height,Target``, one row per box; an image
without a box has one row with empty box fields and Target 0. Boxes are top-left x, y plus width
and height in the 1024 px image's pixels. ``stage_2_detailed_class_info.csv``: ``patientId,class``
(Lung Opacity / No Lung Opacity / Not Normal / Normal), one row per label row. Images:
``stage_2_train_images/<patientId>.dcm``. Every image is box-labelled; opacity = Target 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .base import ExternalConfig, Item, check_header

NAME = "rsna"
MARKER = "stage_2_train_labels.csv"
LABELS_HEADER = ("patientId", "x", "y", "width", "height", "Target")
CLASS_CSV = "stage_2_detailed_class_info.csv"
CLASS_HEADER = ("patientId", "class")
IMAGES_DIR = "stage_2_train_images"


@dataclass
class RsnaConfig(ExternalConfig):
    """RSNA settings (configs/external/rsna.yaml); see ExternalConfig for the shared ones."""

    handle: str = "rsna-pneumonia-detection-challenge"


Config = RsnaConfig


def read(src: Path, cfg: RsnaConfig) -> tuple[list[Item], list[dict]]:
    labels_csv = src / MARKER
    check_header(labels_csv, LABELS_HEADER)
    df = pd.read_csv(labels_csv, dtype={"patientId": str})
    classes: dict[str, str] = {}
    if (src / CLASS_CSV).is_file():
        check_header(src / CLASS_CSV, CLASS_HEADER)
        c = pd.read_csv(src / CLASS_CSV, dtype=str).drop_duplicates("patientId")
        classes = dict(zip(c["patientId"], c["class"]))
    items = []
    for pid, g in df.groupby("patientId", sort=True):
        pos = g[g["Target"].astype(int) == 1].dropna(subset=["x", "y", "width", "height"])
        boxes = [[float(r.x), float(r.y), float(r.x + r.width), float(r.y + r.height)] for r in pos.itertuples()]
        lab = {"Target": int(bool(len(boxes)))}
        if pid in classes:
            lab["class"] = classes[pid]
        items.append(Item(image_id=pid, file=src / IMAGES_DIR / f"{pid}.dcm", rel=f"{IMAGES_DIR}/{pid}.dcm",
                          study_id=pid, group=pid, opacity=int(bool(len(boxes))), labels=lab, boxes=boxes,
                          box_labelled=True))
    return items, []
