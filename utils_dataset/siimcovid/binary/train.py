"""Train one fold of a binary `none` member (``python -m siimcovid binary-train``) on the shared core.

The fit loop, model, input pipeline and fold outputs are :mod:`siimcovid.classify`; the binary
task (:mod:`.task`) adds the target, the training selection, the loss and the `none` AP metric.
A member is a config variant (``siimcovid/configs/binary/<member>.yaml``); its folds land in
``<workdir>/<member>/fold<k>/``.
"""
from __future__ import annotations

from typing import Sequence

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

from .config import STAGE, BinaryConfig


def train_fold(cfg: BinaryConfig) -> dict:
    """Train (or resume) one fold of one member through the shared core. -> fold summary."""
    from ..classify.train import train_fold as core_train_fold
    from .task import BINARY

    return core_train_fold(cfg, BINARY)


def stage():
    """The binary stage as the core's fold runner sees it."""
    from ..classify.runner import Stage

    return Stage(STAGE, BinaryConfig, train_fold, "oof_none_ap", "OOF none AP")


def run(members: Sequence[str] | None = None, folds: Sequence[int] = (0,), overrides: dict | None = None, *,
        preprocess: str | None = None, workdir: str | None = None,
        make_tiny_hub: str | None = None) -> tuple[list[BinaryConfig], list[dict]]:
    """The train-binary kernel: every member (None: the ensemble's, ``ensemble.yaml``) x fold, in
    turn. -> (configs, fold summaries)."""
    from ..classify import runner
    from .config import load_ensemble_config

    names = list(members) if members else load_ensemble_config("ensemble").members
    opts = runner.kernel_overrides(overrides, preprocess=preprocess, workdir=workdir, make_tiny_hub=make_tiny_hub)
    return runner.run(stage(), names, list(folds), opts)


def cli(argv: list[str]) -> int:
    """Train binary `none` members, one fold after another (resumes when a fold folder holds a checkpoint)."""
    from ..classify.runner import train_cli

    return train_cli(stage(), argv, cli.__doc__)
