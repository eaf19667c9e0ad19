"""Train one fold of the study classifier (``python -m siimcovid study-train``) on the shared core.

The fit loop, model, input pipeline and outputs are :mod:`siimcovid.classify` (see its train
module for the fold folder); the study task (:mod:`.task`) adds the classes, targets and metric.

Noisy student (``teacher=``): the targets come from :mod:`.teacher`.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

from .config import StudyConfig


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
    from ..classify.backbones import export_tiny_savedmodel

    print(f"wrote {export_tiny_savedmodel(a.make_tiny_hub, width=a.tiny_width)}")
    return 0


def cli(argv: list[str]) -> int:
    """Train one fold of the study classifier (resumes when its folder holds a checkpoint)."""
    from ..classify.runner import train_cli

    return train_cli(stage(), argv, cli.__doc__, add_args=_tiny_hub_args, early=_make_tiny_hub)
