"""CheXpert v1.0 small (as shared on Kaggle; which dataset is a setting), read as published.

``CheXpert-v1.0-small/train.csv``: ``Path,Sex,Age,Frontal/Lateral,AP/PA,`` then 14 observations;
values ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, blank not mentioned. ``Path`` is
relative to the folder ABOVE ``CheXpert-v1.0-small`` (the source folder here), e.g.
``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``. No boxes.

Opacity: an observation of ``opacity_findings`` positive; uncertain ones follow ``uncertain``:
``u_ones`` (positive), ``u_zeros`` (negative) or ``ignore`` (opacity -1, unknown, unless another
observation is positive); blank counts as negative. image_id: the Path's parts below ``train/``
joined by ``_`` (``patient00001_study1_view1_frontal``); study_id ``patient00001_study1``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from ...errors import UserError
from .base import ExternalConfig, Item, check_header

NAME = "chexpert"
ROOT = "CheXpert-v1.0-small"
MARKER = f"{ROOT}/train.csv"
OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices")
HEADER = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS)
POLICIES = ("u_ones", "u_zeros", "ignore")


@dataclass
class ChexpertConfig(ExternalConfig):
    """CheXpert settings (configs/external/chexpert.yaml):

    opacity_findings: observations that make an image opacity-positive
    uncertain: the uncertain-label (-1.0) policy: u_ones, u_zeros or ignore
    """

    handle: str = "ashery/chexpert"
    opacity_findings: list[str] = field(default_factory=lambda: ["Lung Opacity", "Consolidation", "Pneumonia"])
    uncertain: str = "u_ones"

    def validate(self) -> None:
        super().validate()
        if self.uncertain not in POLICIES:
            raise UserError(f"--uncertain {self.uncertain!r}: one of {list(POLICIES)}")
        unknown = set(self.opacity_findings) - set(OBSERVATIONS)
        if unknown:
            raise UserError(f"--opacity-findings {sorted(unknown)}: not CheXpert observations {list(OBSERVATIONS)}")


Config = ChexpertConfig


def opacity_of(values: dict, cfg: ChexpertConfig) -> int:
    """1 / 0 / -1 (unknown) from one row's observations (text as in the CSV)."""
    marks = [values.get(f, "") for f in cfg.opacity_findings]
    if any(m == "1.0" for m in marks):
        return 1
    if any(m == "-1.0" for m in marks):
        return {"u_ones": 1, "u_zeros": 0, "ignore": -1}[cfg.uncertain]
    return 0


def read(src: Path, cfg: ChexpertConfig) -> tuple[list[Item], list[dict]]:
    check_header(src / MARKER, HEADER)
    df = pd.read_csv(src / MARKER, dtype=str, keep_default_na=False)
    items = []
    for r in df.to_dict("records"):
        parts = PurePosixPath(r["Path"]).parts
        below = parts[2:] if len(parts) > 2 else parts  # below CheXpert-v1.0-small/train/
        image_id = "_".join([*below[:-1], PurePosixPath(below[-1]).stem])
        labels = {k: float(r[k]) for k in OBSERVATIONS if r[k] != ""}
        view = "LATERAL" if r["Frontal/Lateral"] == "Lateral" else r["AP/PA"]
        items.append(Item(image_id=image_id, file=src / r["Path"], rel=r["Path"], study_id="_".join(below[:-1]),
                          group=below[0], opacity=opacity_of(r, cfg), labels=labels, view=view))
    return items, []
