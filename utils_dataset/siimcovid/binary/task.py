"""The binary `none` classifier as a task of the shared core (:mod:`siimcovid.classify`).

One sigmoid output, P(no opacity) (column ``p_none``, hflip TTA ``p_none_tta``); targets and the
training selection from :mod:`.labels`; loss label-smoothed BCE or focal; validation metric the
competition's `none` AP on the fold's images (:func:`.ensemble.none_ap`, through siimcovid.metric).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..classify.task import Task
from . import labels
from .config import BinaryConfig


class BinaryTask(Task):
    name = "binary"
    columns = ("p_none",)
    activation = "sigmoid"
    label_columns = (labels.HAS_BOX,)
    metric_name = "val_none_ap"
    metric_title = "validation none AP"

    def split(self, meta: pd.DataFrame, cfg: BinaryConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
        lab = labels.label_images(meta, drop_unboxed_of_boxed_studies=cfg.drop_unboxed_of_boxed_studies)
        return labels.train_val_split(lab, cfg.fold)

    def targets(self, train: pd.DataFrame, test: pd.DataFrame,
                cfg: BinaryConfig) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict]:
        y = train[labels.TARGET].to_numpy(np.float32).reshape(-1, 1)
        info = {"n_train": len(train), "n_train_none": int(y.sum()), "n_train_boxed": int(len(y) - y.sum()),
                "drop_unboxed_of_boxed_studies": cfg.drop_unboxed_of_boxed_studies}
        return train, y, np.ones(len(train), bool), info  # every train image's boxes (mask) are known

    def loss(self, cfg: BinaryConfig):
        from ..classify.runtime import keras

        K = keras()
        if cfg.loss == "focal":
            return K.losses.BinaryFocalCrossentropy(gamma=cfg.focal_gamma, label_smoothing=cfg.label_smoothing)
        return K.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing)

    def metric(self, pred: pd.DataFrame, cols: Sequence[str], cfg: BinaryConfig) -> float:
        from ..scoring import none_ap

        has_box = pred[labels.HAS_BOX].to_numpy()
        if not pd.Series(has_box).isin((0, 1)).all():
            raise ValueError("binary metric: has_box must be 0 or 1 (test images have no truth)")
        return none_ap(pred[cols[0]].to_numpy(), has_box.astype(bool))

    def scores(self, oof: pd.DataFrame, cfg: BinaryConfig) -> dict[str, float]:
        return {"oof_none_ap": self.metric(oof, self.columns, cfg),
                "oof_none_ap_tta": self.metric(oof, self.tta_columns, cfg)}


BINARY = BinaryTask()
