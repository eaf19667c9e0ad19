"""Prediction with the shared core: a task's output columns for a frame of images, hflip TTA.

``predict_frame(model, df, cfg, task)`` -> image_id, study_id, fold, the task's columns (plain),
their ``_tta`` copies (mean of plain and mirrored; equal to the plain ones when TTA is off) and
the task's label columns. PNG rows read ``df["path"]``; rows of ``load_meta(...,
input_format="tfrecord")`` (with ``shard``) read the TFRecord shards and come back in ``df`` order.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .config import ClassifierConfig
    from .task import Task


def _cls_probs(out) -> np.ndarray:
    probs = out["cls"] if isinstance(out, dict) else out
    return np.asarray(probs, dtype=np.float32)


def predict_probs(model, paths: Sequence[str], size: int, batch_size: int, hflip: bool = False,
                  n_outputs: int | None = None) -> np.ndarray:
    """(N, K) outputs for the PNGs at ``paths`` (mirrored when ``hflip``)."""
    from .data import make_predict_dataset

    if len(paths) == 0:
        return np.zeros((0, n_outputs or int(model.output["cls"].shape[-1])), np.float32)
    ds = make_predict_dataset(list(paths), size, batch_size, hflip=hflip)
    return _cls_probs(model.predict(ds, verbose=0))


def predict_probs_records(model, df: pd.DataFrame, size: int, batch_size: int, hflip: bool = False,
                          n_outputs: int | None = None) -> np.ndarray:
    """(N, K) outputs for ``df``'s rows read from TFRecord shards, in ``df`` order."""
    from .data import make_predict_records

    if len(df) == 0:
        return np.zeros((0, n_outputs or int(model.output["cls"].shape[-1])), np.float32)
    ds, order = make_predict_records(df, size, batch_size, hflip=hflip)
    probs = _cls_probs(model.predict(ds, verbose=0))
    if len(probs) != len(df):
        raise RuntimeError(f"TFRecord prediction: {len(probs)} images read for {len(df)} rows "
                           f"(shards under {Path(df['shard'].iloc[0]).parent} changed?)")
    out = np.empty_like(probs)
    out[order] = probs  # shard order -> df order
    return out


def predict_frame(model, df: pd.DataFrame, cfg: "ClassifierConfig", task: "Task",
                  tta: bool | None = None) -> pd.DataFrame:
    tta = cfg.tta_hflip if tta is None else tta
    n = task.n_outputs
    if "shard" in df.columns:
        def probs(hflip):
            return predict_probs_records(model, df, cfg.image_size, cfg.batch_size, hflip=hflip, n_outputs=n)
    else:  # PNGs (also what inference on a PNG-only test preprocess gets, whatever the fold trained on)
        def probs(hflip):
            return predict_probs(model, df["path"].tolist(), cfg.image_size, cfg.batch_size, hflip=hflip,
                                 n_outputs=n)
    plain = probs(False)
    flipped = probs(True) if tta else plain
    out = pd.DataFrame({"image_id": df["image_id"].to_numpy(), "study_id": df["study_id"].to_numpy(),
                        "fold": df["fold"].to_numpy() if "fold" in df else -1})
    out[list(task.columns)] = plain
    out[task.tta_columns] = (plain + flipped) / 2.0
    for col in task.label_columns:
        if col in df:
            out[col] = df[col].to_numpy()
    return out
