"""NIH ChestX-ray14 (Kaggle dataset), read as published.

``Data_Entry_2017.csv``: header ``Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,
Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],`` -- the
brackets hold commas, so they split into the columns ``OriginalImage[Width`` / ``Height]`` and
``OriginalImagePixelSpacing[x`` / ``y]``, and the trailing comma adds an unnamed one. ``Finding
Labels`` joins findings with ``|`` or says ``No Finding``. ``BBox_List_2017.csv``: ``Image Index,
Finding Label,Bbox [x,y,w,h],,,`` (x, y, w, h in the 1024 px PNG's pixels). Images:
``images_<NNN>/images/<Image Index>`` (1024 px PNGs, a few RGBA).

Opacity: an image with a finding of ``opacity_findings``; boxes are those of ``box_findings``
(the box list spells some findings differently, e.g. ``Infiltrate``). Only the images the box
list names are box-labelled, and of those a positive only when it has an opacity box (one boxed
for another finding alone has unknown opacity boxes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .base import ExternalConfig, Item, check_header

NAME = "nih"
MARKER = "Data_Entry_2017.csv"
ENTRY_HEADER = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
                "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", "")
BBOX_CSV = "BBox_List_2017.csv"
BBOX_HEADER = ("Image Index", "Finding Label", "Bbox [x", "y", "w", "h]", "", "", "")
NO_FINDING = "No Finding"


@dataclass
class NihConfig(ExternalConfig):
    """NIH settings (configs/external/nih.yaml):

    opacity_findings: Finding Labels entries that make an image opacity-positive
    box_findings: BBox_List Finding Label entries whose boxes are opacity boxes
    """

    handle: str = "nih-chest-xrays/data"
    opacity_findings: list[str] = field(default_factory=lambda: ["Pneumonia", "Consolidation", "Infiltration"])
    box_findings: list[str] = field(default_factory=lambda: ["Pneumonia", "Infiltrate", "Infiltration"])


Config = NihConfig


def image_files(src: Path) -> dict[str, Path]:
    """Image Index -> file, over every ``images*/images/`` folder (and a flat ``images/``)."""
    found: dict[str, Path] = {}
    for d in sorted(src.glob("images*")):
        for sub in (d / "images", d):
            if sub.is_dir():
                with os.scandir(sub) as it:
                    for e in it:
                        if e.name.lower().endswith(".png"):
                            found.setdefault(e.name, Path(e.path))
    return found


def read(src: Path, cfg: NihConfig) -> tuple[list[Item], list[dict]]:
    check_header(src / MARKER, ENTRY_HEADER)
    df = pd.read_csv(src / MARKER, dtype=str, keep_default_na=False)
    boxes: dict[str, list] = {}
    listed: set[str] = set()
    if (src / BBOX_CSV).is_file():
        check_header(src / BBOX_CSV, BBOX_HEADER)
        b = pd.read_csv(src / BBOX_CSV, dtype=str, keep_default_na=False).iloc[:, :6]
        b.columns = ["image", "finding", "x", "y", "w", "h"]
        for r in b.itertuples(index=False):
            listed.add(r.image)
            if r.finding in cfg.box_findings:
                x, y, w, h = (float(v) for v in (r.x, r.y, r.w, r.h))
                boxes.setdefault(r.image, []).append([x, y, x + w, y + h])
    files = image_files(src)
    items = []
    for r in df.itertuples(index=False):
        name, findings = r[0], [f for f in r[1].split("|") if f and f != NO_FINDING]
        stem = Path(name).stem
        path = files.get(name, src / "images" / name)
        opacity = int(any(f in cfg.opacity_findings for f in findings))
        # listed in the box list, and its boxes agree with its labels: a positive without an opacity
        # box was boxed for another finding only, so its opacity boxes are unknown
        box_labelled = name in listed and (opacity == 0 or bool(boxes.get(name)))
        items.append(Item(image_id=stem, file=path, rel=str(path.relative_to(src)) if path.is_relative_to(src) else name,
                          study_id=stem, group=r[3], opacity=opacity,
                          labels={"Finding Labels": r[1], "Follow-up #": r[2]}, boxes=boxes.get(name, []),
                          box_labelled=box_labelled, view=r[6]))
    return items, []
