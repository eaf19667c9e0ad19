"""Train one fold of the study classifier (``python -m siimcovid study-train``) on the shared core.

The fit loop, model, input pipeline and outputs are :mod:`siimcovid.classify` (see its train
module for the fold folder); the study task (:mod:`.task`) adds the classes, targets and metric.

Noisy student: with ``teacher=`` (the previous round's output: any folder holding its
``fold*/oof.csv`` and ``test.csv``, e.g. its kernel outputs under /kaggle/input) the training
targets become ``soft_weight * teacher + (1 - soft_weight) * one-hot`` and, with
``pseudo_test``, the test images join the training set with the teacher's fold-averaged
predictions as targets (their mask is unknown and left out of the mask loss).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

# the strategy / precision rules (and the guard against an attached but unusable accelerator)
# live in siimcovid.accelerator (the core calls them through classify.runtime); the names stay
# importable from here
from ..accelerator import get_strategy, set_precision, tpu_present  # noqa: F401
from ..classify.runtime import set_threads  # noqa: F401
from ..classify.train import plot_history  # noqa: F401  (re-exported)
from .config import StudyConfig
from ..runs import OOF_CSV, TEST_CSV
from ..tables import PROB_COLS, TTA_COLS, read_study


# --------------------------------------------------------------------------- noisy student
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
                if p.parent.name.startswith("fold"):
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
    from .dataset import onehot

    hard = onehot(train["study_label"].to_numpy())
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


def train_fold(cfg: StudyConfig) -> dict:
    """Train (or resume) one study fold through the shared core. -> fold summary."""
    from ..classify.train import train_fold as core_train_fold
    from .task import STUDY

    return core_train_fold(cfg, STUDY)


def stage():
    """The study stage as the core's fold runner sees it."""
    from ..classify.runner import Stage

    return Stage("study", StudyConfig, train_fold, "oof_study_map", "OOF study mAP")


def run(config: str | Path | None, folds: Sequence[int] = (0,), overrides: dict | None = None, *,
        preprocess: str | None = None, workdir: str | None = None, teacher: str | None = None,
        make_tiny_hub: str | None = None) -> tuple[list[StudyConfig], list[dict]]:
    """The train-study kernel: the variant's folds, in turn. -> (configs, fold summaries)."""
    from ..classify import runner

    opts = runner.kernel_overrides(overrides, preprocess=preprocess, workdir=workdir, teacher=teacher,
                                   make_tiny_hub=make_tiny_hub)
    return runner.run(stage(), [config], list(folds), opts)


def _tiny_hub_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--make-tiny-hub", metavar="DIR", default=None,
                    help="write a tiny local hub-style SavedModel to DIR (for CPU demos/tests) and exit")
    ap.add_argument("--tiny-width", type=int, default=16, help="channels of the first stage (x2 per stage)")


def _make_tiny_hub(a: argparse.Namespace) -> int | None:
    if not a.make_tiny_hub:
        return None
    from .model import export_tiny_savedmodel

    print(f"wrote {export_tiny_savedmodel(a.make_tiny_hub, width=a.tiny_width)}")
    return 0


def cli(argv: list[str]) -> int:
    """Train one fold of the study classifier (resumes when its folder holds a checkpoint)."""
    from ..classify.runner import train_cli

    return train_cli(stage(), argv, cli.__doc__, add_args=_tiny_hub_args, early=_make_tiny_hub)
