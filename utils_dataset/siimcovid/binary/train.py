"""Train one fold of a binary `none` member (``python -m siimcovid binary-train``) on the shared core.

The fit loop, model, input pipeline and fold outputs are :mod:`siimcovid.classify`; the binary
task (:mod:`.task`) adds the target, the training selection, the loss and the `none` AP metric.
A member is a config variant (``siimcovid/configs/binary/<member>.yaml``); its folds land in
``<workdir>/<member>/fold<k>/``.
"""
from __future__ import annotations

import argparse
import json

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

from .config import STAGE, BinaryConfig


def train_fold(cfg: BinaryConfig) -> dict:
    """Train (or resume) one fold of one member through the shared core. -> fold summary."""
    from ..classify.train import train_fold as core_train_fold
    from .task import BINARY

    return core_train_fold(cfg, BINARY)


def cli(argv: list[str]) -> int:
    """Train binary `none` members, one fold after another (resumes when a fold folder holds a checkpoint)."""
    from .. import variants

    ap = argparse.ArgumentParser(prog="python -m siimcovid binary-train", description=cli.__doc__)
    ap.add_argument("--fold", type=int, nargs="+", default=None, help="fold(s) to train (default: the config's)")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    variants.add_schema_args(ap, BinaryConfig, stage=STAGE, exclude=("fold",))
    a = ap.parse_args(argv)
    overrides = variants.overrides_from_args(a)
    configs = [variants.load(STAGE, a.config, [overrides, {"fold": k} if k is not None else {}], BinaryConfig)
               for k in (a.fold or [None])]  # every fold's config checked before the first trains
    for cfg in configs:
        if a.print_config:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        score = train_fold(cfg)
        print(f"{cfg.name} fold {cfg.fold}: OOF none AP {score['oof_none_ap']:.4f} "
              f"(hflip TTA {score['oof_none_ap_tta']:.4f}) -> {cfg.out_dir()}")
    return 0
