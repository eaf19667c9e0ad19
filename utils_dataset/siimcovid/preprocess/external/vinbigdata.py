"""VinBigData Chest X-ray Abnormalities Detection (Kaggle competition), read as published.

``train.csv``: ``image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max``, one row per
(radiologist, finding); three radiologists read each image; ``No finding`` (class id 14) has empty
box fields. Images: ``train/<image_id>.dicom`` (12-16 bit, some MONOCHROME1, full size).

Opacity: the findings of ``opacity_findings`` (by class_name). Each reader's opacity boxes are one
list; the lists are fused with the one WBF wrapper (:mod:`siimcovid.wbf`) once the image's size is
known (every reader of the image takes part, also one who found nothing, so a box one of three
found keeps a third of the score), and a fused box stays when at least ``min_readers`` readers
found it (``fusion: union`` keeps every reader's box instead). Every image is box-labelled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import UserError
from .base import ExternalConfig, Item, check_header

NAME = "vinbigdata"
MARKER = "train.csv"
HEADER = ("image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max")
IMAGES_DIR = "train"
FUSIONS = ("wbf", "union")


@dataclass
class VinBigDataConfig(ExternalConfig):
    """VinBigData settings (configs/external/vinbigdata.yaml):

    opacity_findings: class_name values whose boxes are opacity boxes
    fusion: how the readers' boxes become one set: wbf (fused) or union (all)
    wbf_iou_thr: WBF IoU above which two readers' boxes are one finding
    min_readers: fused boxes found by fewer readers are dropped (1 = keep all)
    """

    handle: str = "vinbigdata-chest-xray-abnormalities-detection"
    opacity_findings: list[str] = field(default_factory=lambda: ["Lung Opacity", "Consolidation", "Infiltration"])
    fusion: str = "wbf"
    wbf_iou_thr: float = 0.4
    min_readers: int = 1

    def validate(self) -> None:
        super().validate()
        if self.fusion not in FUSIONS:
            raise UserError(f"--fusion {self.fusion!r}: one of {list(FUSIONS)}")
        if int(self.min_readers) < 1:
            raise UserError(f"--min-readers {self.min_readers}: at least 1")


Config = VinBigDataConfig


def read(src: Path, cfg: VinBigDataConfig) -> tuple[list[Item], list[dict]]:
    check_header(src / MARKER, HEADER)
    df = pd.read_csv(src / MARKER, dtype={"image_id": str, "class_name": str, "rad_id": str})
    items = []
    for image_id, g in df.groupby("image_id", sort=True):
        readers: dict[str, list] = {str(r): [] for r in sorted(g["rad_id"].unique())}
        for r in g[g["class_name"].isin(cfg.opacity_findings)].dropna(subset=["x_min", "y_min", "x_max", "y_max"]
                                                                      ).itertuples():
            readers[str(r.rad_id)].append([float(r.x_min), float(r.y_min), float(r.x_max), float(r.y_max)])
        found = g.groupby("class_name")["rad_id"].nunique()
        items.append(Item(image_id=image_id, file=src / IMAGES_DIR / f"{image_id}.dicom",
                          rel=f"{IMAGES_DIR}/{image_id}.dicom", study_id=image_id, group=image_id,
                          opacity=int(any(readers.values())), labels={k: int(v) for k, v in found.items()},
                          box_labelled=True, reader_boxes=readers))
    return items, []


def fuse(item: Item, height: int, width: int, cfg: VinBigDataConfig) -> list:
    """The readers' opacity boxes of one image -> one list (original pixels)."""
    from ...wbf import fuse as wbf

    lists = list((item.reader_boxes or {}).values())
    if cfg.fusion == "union":
        return [b for lst in lists for b in lst]
    preds = [np.array([[*b, 1.0] for b in lst]).reshape(-1, 5) for lst in lists]
    fused = wbf(preds, height, width, iou_thr=cfg.wbf_iou_thr, skip_box_thr=0.0, conf_type="avg")
    # with conf_type avg and every score 1, a fused box's score is (readers that found it) / (readers)
    keep = fused[:, 4] * len(lists) >= cfg.min_readers - 1e-6
    return fused[keep, :4].tolist()
