"""Pseudo-labels for the next detector round (``python -m siimcovid det-pseudo``).

From an ensemble's test boxes (a prediction table: det-merge's ``test_boxes.csv`` or the
ensemble's) and the study predictions of the same test images (``study_id`` + the four class
columns, e.g. study-merge's ``test_study.csv``). Default: the 1st place's rule -- keep a test
image when its study's negative < 0.3 and max(typical, indeterminate, atypical) > 0.7, take its
top 2 WBF boxes, and skip it when the lower of their scores is < 0.2. The next round trains on
train + these images: ``det-train --round 2 --pseudo pseudo_labels.csv``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from .. import variants
from ..data import STUDY_CLASSES
from ..errors import UserError
from ..tables import boxes_json, read_detector
from ..wbf import as_pred

PSEUDO_CSV = "pseudo_labels.csv"


@dataclass(frozen=True)
class PseudoRule:
    negative_max: float = 0.3  # study P(negative) must be below this
    positive_min: float = 0.7  # and the largest positive class above this
    top_k: int = 2  # boxes kept per image (best first)
    min_box_score: float = 0.2  # skip the image when a kept box scores below this

    @classmethod
    def from_dict(cls, d: Mapping | Iterable[str] | None) -> "PseudoRule":
        """A dict or ``["key=value", ...]`` over the defaults, typed and checked by variants."""
        return variants.load("pseudo-label", None, d, cls)


def select(boxes: pd.DataFrame, studies: pd.DataFrame, image_study: Mapping[str, str],
           rule: PseudoRule = PseudoRule()) -> pd.DataFrame:
    """-> image_id, study_id, negative, positive, n_boxes, boxes (JSON, original px, with scores)."""
    negative, *positives = STUDY_CLASSES
    missing = {"study_id", negative, *positives} - set(studies.columns)
    if missing:
        raise UserError(f"study predictions lack columns {sorted(missing)} (need study_id + {list(STUDY_CLASSES)})")
    probs = studies.set_index(studies["study_id"].astype(str))
    rows = []
    for iid, pred in zip(boxes["image_id"], boxes["boxes"]):
        sid = image_study.get(iid)
        if sid is None or sid not in probs.index:
            continue
        neg = float(probs.at[sid, negative])
        pos = float(max(probs.at[sid, c] for c in positives))
        if not (neg < rule.negative_max and pos > rule.positive_min):
            continue
        pred = as_pred(pred)
        top = pred[np.argsort(-pred[:, 4], kind="stable")][: rule.top_k]
        if not len(top) or top[:, 4].min() < rule.min_box_score:
            continue
        rows.append({"image_id": iid, "study_id": sid, "negative": neg, "positive": pos, "n_boxes": len(top),
                     "boxes": boxes_json(top)})
    return pd.DataFrame(rows, columns=["image_id", "study_id", "negative", "positive", "n_boxes", "boxes"])


def cli(argv: list[str]) -> int:
    from ..layout import META_CSV, read_meta

    p = argparse.ArgumentParser(prog="siimcovid det-pseudo", description=__doc__.split("\n\n")[0])
    p.add_argument("--boxes", required=True, help="test prediction table (det-merge's test_boxes.csv or the ensemble's)")
    p.add_argument("--study", required=True, help="test study predictions: study_id + the four class columns")
    p.add_argument("--preprocess", required=True, help="preprocess output (meta.csv: which study each image is in)")
    p.add_argument("--out", required=True, help=f"output CSV (e.g. {PSEUDO_CSV})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"rule keys: {[f.name for f in fields(PseudoRule)]}")
    args = p.parse_args(argv)
    rule = PseudoRule.from_dict(args.set)
    for path in (args.boxes, args.study, Path(args.preprocess) / META_CSV):
        if not Path(path).exists():
            raise UserError(f"{path}: no such file")
    meta = read_meta(args.preprocess)
    image_study = dict(zip(meta["image_id"], meta["study_id"].astype(str)))
    out = select(read_detector(args.boxes), pd.read_csv(args.study, dtype={"study_id": str}), image_study, rule)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(args.out, index=False)
    print(json.dumps({"rule": asdict(rule), "images": int(len(out)), "boxes": int(out["n_boxes"].sum())}))
    return 0
