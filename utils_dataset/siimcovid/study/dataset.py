"""Study-task input: which rows train and validate a fold. The tf.data pipeline, augmentation and
the meta reader are the shared classifier core's (:mod:`siimcovid.classify.data`, re-exported
here for the study stage's callers)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..classify.data import *  # noqa: F401,F403  (the core's input pipeline, re-exported)
from ..classify.data import (  # noqa: F401  (private helpers the tests reach)
    _parse_record, _record_rows, _transform, onehot as _onehot,
)
from ..data import STUDY_CLASSES


def onehot(labels: np.ndarray, n: int = len(STUDY_CLASSES)) -> np.ndarray:
    return _onehot(labels, n)


def train_val_split(meta: pd.DataFrame, fold: int, positive_boxed_only: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train rows of the other folds (optionally negatives + boxed images only) and this fold's rows."""
    train = meta[meta["split"] == "train"]
    if (train["fold"] < 0).any():
        bad = train.loc[train["fold"] < 0, "image_id"].head(3).tolist()
        raise ValueError(f"meta.csv: train images without a fold, e.g. {bad} (preprocess with folds.csv)")
    unlabelled = ~train["study_label"].between(0, len(STUDY_CLASSES) - 1)
    if unlabelled.any():
        bad = train.loc[unlabelled, "image_id"].head(3).tolist()
        raise ValueError(f"meta.csv: {int(unlabelled.sum())} train images without a study label, e.g. {bad}")
    if fold not in set(train["fold"]):
        raise ValueError(f"fold {fold} not in meta.csv folds {sorted(set(train['fold']))}")
    tr = train[train["fold"] != fold]
    va = train[train["fold"] == fold].reset_index(drop=True)
    if positive_boxed_only:
        # The unboxed extra images of a positive study mostly carry no sign of it: they teach noise.
        keep = (tr["study_label"] == 0) | (tr["boxes_src"].map(len) > 0)
        tr = tr[keep]
    return tr.reset_index(drop=True), va


