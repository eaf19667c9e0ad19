"""The study classifier as a task of the shared core: four softmax classes per image, one-hot (or
noisy-student soft) targets, categorical cross-entropy, study mAP (images -> studies by
``study_agg``) as the validation metric, columns ``p_<class>``."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..classify.task import Task
from ..data import STUDY_CLASSES
from .config import StudyConfig


class StudyTask(Task):
    name = "study"
    columns = tuple(f"p_{c}" for c in STUDY_CLASSES)
    activation = "softmax"
    label_columns = ("study_label",)
    metric_name = "val_map"
    metric_title = "validation study mAP"

    def split(self, meta: pd.DataFrame, cfg: StudyConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
        from .dataset import train_val_split

        return train_val_split(meta, cfg.fold, cfg.positive_boxed_only)

    def targets(self, train: pd.DataFrame, test: pd.DataFrame,
                cfg: StudyConfig) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict]:
        from .train import student_targets

        return student_targets(train, test, cfg)

    def metric(self, pred: pd.DataFrame, cols: Sequence[str], cfg: StudyConfig) -> float:
        from .evaluate import study_map_from_images

        return study_map_from_images(pred, list(cols), cfg.study_agg)["map"]

    def scores(self, oof: pd.DataFrame, cfg: StudyConfig) -> dict[str, float]:
        return {"oof_study_map": self.metric(oof, self.columns, cfg),
                "oof_study_map_tta": self.metric(oof, self.tta_columns, cfg)}


STUDY = StudyTask()
