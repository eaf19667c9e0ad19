"""Targets of the binary `none` task: which images train, which are only predicted.

Per image the target is ``none`` = 1 when the image has no opacity box, 0 when it has one (the
model's single sigmoid output is then P(none) directly, the submission's ``none`` confidence).

In a study that has a boxed image, the unboxed images are left OUT OF TRAINING: they are
mostly extra views of a positive study (lateral, repeated or rotated films) whose opacity the
readers boxed on another view, so as "none" examples they teach noise (the 1st place and
another top team drop them). They stay in the validation fold and in every prediction table:
the competition scores every image, so the OOF `none` AP counts them too.

Folds are the shared patient-grouped table as written into meta.csv's ``fold`` column by
``preprocess`` (never re-derived here).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..folds import split_fold

TARGET = "target_none"  # 1.0 = no box on the image
HAS_BOX = "has_box"  # 1 = at least one opacity box, 0 = none, -1 = unknown (test)
TRAINABLE = "trainable"  # False for an unboxed image of a study that has a boxed image


def _box_count(boxes: object, image_id: str) -> int:
    if isinstance(boxes, (list, tuple, np.ndarray)):
        return len(boxes)
    raise ValueError(f"image {image_id}: boxes must be a parsed list (read meta.csv through the "
                     f"preprocess reader), got {type(boxes).__name__}")


def label_images(meta: pd.DataFrame, *, drop_unboxed_of_boxed_studies: bool = True) -> pd.DataFrame:
    """A copy of ``meta`` with ``has_box``, ``target_none`` and ``trainable`` set.

    ``meta``: rows of the preprocess meta (``image_id``, ``study_id``, ``split`` and the boxes as
    parsed lists: ``boxes_src`` (the core's frame) or ``boxes``; the count is the same in every
    frame). Test rows get ``has_box`` -1, target NaN and ``trainable`` False."""
    col = "boxes_src" if "boxes_src" in meta.columns else "boxes"
    missing = {"image_id", "study_id", "split", col} - set(meta.columns)
    if missing:
        raise ValueError(f"binary labels: meta lacks columns {sorted(missing)}")
    out = meta.copy()
    is_train = (out["split"] == "train").to_numpy()
    n_boxes = np.array([_box_count(b, i) for b, i in zip(out[col], out["image_id"])], dtype=int)
    has = np.where(is_train, (n_boxes > 0).astype(int), -1)
    out[HAS_BOX] = has
    out[TARGET] = np.where(is_train, 1.0 - (n_boxes > 0), np.nan)
    trainable = is_train.copy()
    if drop_unboxed_of_boxed_studies:
        boxed_studies = set(out.loc[has == 1, "study_id"])
        trainable &= ~((has == 0) & out["study_id"].isin(boxed_studies).to_numpy())
    out[TRAINABLE] = trainable
    return out


def train_val_split(labelled: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows) of ``fold`` from :func:`label_images` output.

    Training: trainable train images of the other folds. Validation: EVERY train image of the
    fold (the dropped extra views included: they are predicted and scored like any image)."""
    if TRAINABLE not in labelled:
        raise ValueError("binary train_val_split: label the meta first (binary.labels.label_images)")
    tr, va = split_fold(labelled, fold)
    tr = tr[tr[TRAINABLE]].reset_index(drop=True)
    if tr[TARGET].nunique() < 2:
        raise ValueError(f"fold {fold}: the training images hold only one class ({len(tr)} images)")
    return tr, va


def summary(labelled: pd.DataFrame) -> dict:
    """Counts for logs and fold_score.json: images, boxed, none, dropped from training."""
    train = labelled[labelled["split"] == "train"]
    return {
        "n_train_images": int(len(train)),
        "n_boxed": int((train[HAS_BOX] == 1).sum()),
        "n_none": int((train[HAS_BOX] == 0).sum()),
        "n_dropped_from_training": int((~train[TRAINABLE]).sum()),
        "n_test_images": int((labelled["split"] == "test").sum()),
    }
