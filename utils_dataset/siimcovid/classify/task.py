"""What a classification stage adds to the shared core: a :class:`Task`.

The core (:func:`siimcovid.classify.train.train_fold`) builds the backbone, reads the preprocess
output, feeds tf.data, runs the resumable fit loop and writes the fold's files; a task says

* ``columns``: its output columns (``p_*``; the TTA copies are ``<col>_tta``), hence the number
  of outputs, and ``activation`` (softmax over classes, or one sigmoid per column);
* ``split(meta, cfg)``: the fold's training and validation rows;
* ``targets(train, test, cfg)``: the rows to train on with their (N, K) targets and whether
  each row's box mask is known (a task may add rows, e.g. pseudo-labelled test images);
* ``loss(cfg)``: the Keras loss of the ``cls`` output;
* ``metric(pred, cols, cfg)``: the validation metric (higher is better) on a prediction frame
  (rows of ``predict_frame`` with the task's ``label_columns``); the best epoch is chosen by it;
* ``scores(oof, cfg)``: the fold's summary numbers for ``fold_score.json``.

A new stage subclasses Task in its own ``<stage>/task.py`` (see ``siimcovid.study.task``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from ..folds import split_fold

if TYPE_CHECKING:
    from .config import ClassifierConfig


class Task:
    name: str = "task"  # the stage (logs, history plot)
    columns: Sequence[str] = ()  # output columns, one per model output
    activation: str = "softmax"  # softmax | sigmoid
    label_columns: Sequence[str] = ()  # meta columns copied into the prediction frames (truth)
    metric_name: str = "val_metric"  # history column of the validation metric
    metric_title: str = "validation metric"

    @property
    def n_outputs(self) -> int:
        return len(self.columns)

    @property
    def tta_columns(self) -> list[str]:
        return [f"{c}_tta" for c in self.columns]

    def split(self, meta: pd.DataFrame, cfg: "ClassifierConfig") -> tuple[pd.DataFrame, pd.DataFrame]:
        """Default: train rows of the other folds, this fold's rows for validation."""
        return split_fold(meta, cfg.fold)

    def targets(self, train: pd.DataFrame, test: pd.DataFrame,
                cfg: "ClassifierConfig") -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict]:
        raise NotImplementedError(f"{type(self).__name__}.targets")

    def loss(self, cfg: "ClassifierConfig") -> Any:
        """Default: categorical (softmax) or binary (sigmoid) cross-entropy with label smoothing."""
        from .runtime import keras

        K = keras()
        if self.activation == "softmax":
            return K.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
        return K.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing)

    def accuracy(self) -> Any:
        from .runtime import keras

        K = keras()
        return K.metrics.CategoricalAccuracy(name="acc") if self.activation == "softmax" else \
            K.metrics.BinaryAccuracy(name="acc")

    def metric(self, pred: pd.DataFrame, cols: Sequence[str], cfg: "ClassifierConfig") -> float:
        raise NotImplementedError(f"{type(self).__name__}.metric")

    def scores(self, oof: pd.DataFrame, cfg: "ClassifierConfig") -> dict[str, float]:
        """Default: the metric without and with TTA."""
        return {f"oof_{self.metric_name.removeprefix('val_')}": self.metric(oof, list(self.columns), cfg),
                f"oof_{self.metric_name.removeprefix('val_')}_tta": self.metric(oof, self.tta_columns, cfg)}
