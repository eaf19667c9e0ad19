"""Noisy student: the previous round's predictions as the study task's training targets.

With ``teacher=`` (the previous round's output: any folder holding its ``fold*/oof.csv`` and
``test.csv``, e.g. its kernel outputs under /kaggle/input) the training targets become
``soft_weight * teacher + (1 - soft_weight) * one-hot`` and, with ``pseudo_test``, the test images
join the training set with the teacher's fold-averaged predictions as targets (their mask is
unknown and left out of the mask loss).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..classify.data import onehot
from ..data import STUDY_CLASSES
from ..runs import OOF_CSV, TEST_CSV, fold_index
from ..tables import PROB_COLS, TTA_COLS, read_study
from .config import StudyConfig


def _roots(spec: str) -> list[Path]:
    parts = [p for chunk in spec.split(os.pathsep) for p in chunk.split(",") if p.strip()]
    out = []
    for p in parts:
        path = Path(p.strip())
        if not path.exists():
            raise FileNotFoundError(f"teacher folder {path} not found")
        out.append(path)
    return out


def load_teacher(spec: str, use_tta: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The previous round's image-level predictions: (OOF by image_id, test averaged over folds).

    Columns image_id + p_* (the TTA columns when ``use_tta`` and present); OOF rows come from the
    fold that held the image out. Files are read with :func:`siimcovid.tables.read_study`, so a broken
    one stops the round with its path named (a student must not silently lose its targets)."""
    cols = TTA_COLS if use_tta else PROB_COLS
    parts: dict[str, list[pd.DataFrame]] = {OOF_CSV: [], TEST_CSV: []}
    for root in _roots(spec):
        for name, found in parts.items():
            for p in sorted(root.rglob(name)):
                if fold_index(p.parent) is not None:
                    df = read_study(p)  # lacking TTA columns: they are filled with the plain ones
                    found.append(df[["image_id", *cols]].set_axis(["image_id", *PROB_COLS], axis=1))
    oof_parts, test_parts = parts[OOF_CSV], parts[TEST_CSV]
    if not oof_parts:
        raise FileNotFoundError(f"teacher {spec!r}: no fold*/oof.csv found")
    oof = pd.concat(oof_parts).groupby("image_id", as_index=False)[PROB_COLS].mean()
    test = (pd.concat(test_parts).groupby("image_id", as_index=False)[PROB_COLS].mean()
            if test_parts else pd.DataFrame(columns=["image_id", *PROB_COLS]))
    return oof, test


def student_targets(train: pd.DataFrame, test: pd.DataFrame, cfg: StudyConfig) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict]:
    """Rows to train on, their class targets and whether their mask is known."""
    hard = onehot(train["study_label"].to_numpy(), len(STUDY_CLASSES))
    info: dict = {"round": cfg.round, "n_train": len(train)}
    if not cfg.teacher:
        return train, hard, np.ones(len(train), bool), info
    t_oof, t_test = load_teacher(cfg.teacher)
    soft = train[["image_id"]].merge(t_oof, on="image_id", how="left")[PROB_COLS].to_numpy(np.float32)
    have = ~np.isnan(soft).any(axis=1)
    targets = hard.copy()
    targets[have] = cfg.soft_weight * soft[have] + (1 - cfg.soft_weight) * hard[have]
    info.update(teacher=cfg.teacher, soft_weight=cfg.soft_weight, n_soft=int(have.sum()),
                n_without_teacher=int((~have).sum()))
    rows, known = train, np.ones(len(train), bool)
    if cfg.pseudo_test and len(test) and len(t_test):
        pt = test.merge(t_test, on="image_id", how="inner")
        if len(pt):
            rows = pd.concat([train, pt.drop(columns=PROB_COLS)], ignore_index=True)
            targets = np.concatenate([targets, pt[PROB_COLS].to_numpy(np.float32)])
            known = np.concatenate([known, np.zeros(len(pt), bool)])
        info["n_pseudo_test"] = len(pt)
    return rows, targets.astype(np.float32), known, info
