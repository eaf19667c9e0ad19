"""The study classifier as a task of the shared core: four softmax classes per image, one-hot (or
noisy-student soft) targets, categorical cross-entropy, study mAP (images -> studies by
``study_agg``) as the validation metric, columns ``p_<class>``."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..classify.task import Task
from ..data import STUDY_CLASSES
from ..folds import split_fold
from ..layout import META_CSV
from .config import StudyConfig
from .evaluate import study_map_from_images
from .teacher import student_targets


class StudyTask(Task):
    name = "study"
    columns = tuple(f"p_{c}" for c in STUDY_CLASSES)
    activation = "softmax"
    label_columns = ("study_label",)
    metric_name = "val_map"
    metric_title = "validation study mAP"

    def split(self, meta: pd.DataFrame, cfg: StudyConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The fold's split (:func:`siimcovid.folds.split_fold`) of study-labelled train images;
        ``positive_boxed_only`` trains on negatives + boxed images only."""
        train = meta[meta["split"] == "train"]
        unlabelled = ~train["study_label"].between(0, len(STUDY_CLASSES) - 1)
        if unlabelled.any():
            bad = train.loc[unlabelled, "image_id"].head(3).tolist()
            raise ValueError(f"{META_CSV}: {int(unlabelled.sum())} train images without a study label, e.g. {bad}")
        tr, va = split_fold(meta, cfg.fold)
        if cfg.positive_boxed_only:
            # The unboxed extra images of a positive study mostly carry no sign of it: they teach noise.
            tr = tr[(tr["study_label"] == 0) | (tr["boxes_src"].map(len) > 0)].reset_index(drop=True)
        return tr, va

    def targets(self, train: pd.DataFrame, test: pd.DataFrame,
                cfg: StudyConfig) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict]:
        return student_targets(train, test, cfg)

    def metric(self, pred: pd.DataFrame, cols: Sequence[str], cfg: StudyConfig) -> float:
        return study_map_from_images(pred, list(cols), cfg.study_agg)["map"]

    def scores(self, oof: pd.DataFrame, cfg: StudyConfig) -> dict[str, float]:
        return {"oof_study_map": self.metric(oof, self.columns, cfg),
                "oof_study_map_tta": self.metric(oof, self.tta_columns, cfg)}


STUDY = StudyTask()
