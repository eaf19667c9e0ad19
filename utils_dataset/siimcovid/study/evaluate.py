"""Study predictions: image -> study aggregation and the study mAP (the study task's
validation metric). Merging a study classifier's folds (``study-merge``) is the ensemble's:
:mod:`siimcovid.ensemble.study_merge`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..data import STUDY_CLASSES


# --------------------------------------------------------------------------- aggregation + metric
def aggregate_study(df: pd.DataFrame, cols: Sequence[str], how: str = "mean") -> pd.DataFrame:
    """Image rows -> one row per study (mean or max of each column), rows renormalised to 1."""
    if how not in ("mean", "max"):
        raise ValueError(f"study aggregation must be mean or max, got {how!r}")
    g = df.groupby("study_id", sort=True)[list(cols)]
    out = g.mean() if how == "mean" else g.max()
    vals = out.to_numpy(dtype=np.float64)
    out[list(cols)] = vals / np.clip(vals.sum(axis=1, keepdims=True), 1e-12, None)
    return out.reset_index()


def study_ap(study_ids: Sequence[str], probs: np.ndarray, labels: Sequence[int]) -> dict[str, float]:
    """Per-class AP (the competition's study part: one 0 0 1 1 detection per class and study)
    and ``map`` (mean of the classes that have ground truth): ``siimcovid.scoring.StudyMAP``."""
    from ..scoring import StudyMAP

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    ids = list(study_ids)
    if probs.shape != (len(ids), len(STUDY_CLASSES)) or len(labels) != len(ids):
        raise ValueError(f"study_ap: {len(ids)} ids, probs {probs.shape}, {len(labels)} labels")
    return StudyMAP(labels)(probs)


def study_map_from_images(df: pd.DataFrame, cols: Sequence[str], how: str = "mean") -> dict[str, float]:
    """Image predictions with ``study_label`` -> study APs."""
    agg = aggregate_study(df, cols, how)
    labels = df.groupby("study_id", sort=True)["study_label"].first().reindex(agg["study_id"])
    return study_ap(agg["study_id"], agg[list(cols)].to_numpy(), labels.to_numpy())
