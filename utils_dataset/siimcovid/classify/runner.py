"""Running a classifier stage's folds, the part its CLI and its notebook share.

The study and binary stages are tasks on this core; each used to build its overrides from the
notebook parameters and parse its training command line on its own. A stage now names its
schema, task trainer and headline metric, and :func:`run` / :func:`train_cli` do the rest.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence


@dataclass(frozen=True)
class Stage:
    name: str  # configs/<name>/ and `python -m siimcovid <name>-train`
    schema: type
    train_fold: Callable[[Any], dict]  # config -> fold summary
    metric: str  # the summary's headline key, e.g. "oof_study_map" (its TTA twin: metric + "_tta")
    metric_label: str  # how the log line names it


def kernel_overrides(overrides: dict | None = None, *, preprocess: str | None = None,
                     workdir: str | None = None, make_tiny_hub: str | Path | None = None,
                     **keys: Any) -> dict:
    """A kernel's parameters as config overrides: ``overrides`` plus the named keys that are set.

    ``make_tiny_hub``: write a tiny local SavedModel to that folder first and use it as
    ``hub_handle`` (CPU tests and the demo; its first-stage width is ``overrides["tiny_width"]``,
    default 16, which is not a config key and is taken out)."""
    opts = dict(overrides or {})
    for key, value in dict(preprocess=preprocess, workdir=workdir, **keys).items():
        if value:
            opts[key] = value
    if make_tiny_hub:
        from .backbones import export_tiny_savedmodel

        opts["hub_handle"] = str(export_tiny_savedmodel(make_tiny_hub, width=int(opts.pop("tiny_width", 16))))
    return opts


def fold_configs(stage: Stage, variants_: Iterable[str | Path | None], folds: Sequence[int | None],
                 overrides: Any = None) -> list:
    """Every (variant, fold) config, all checked before the first one trains."""
    from .. import variants

    return [variants.load(stage.name, v, [overrides or {}, {"fold": int(k)} if k is not None else {}], stage.schema)
            for v in variants_ for k in folds]


def run(stage: Stage, variants_: Iterable[str | Path | None], folds: Sequence[int | None],
        overrides: Any = None) -> tuple[list, list[dict]]:
    """Train (or resume) every variant x fold in turn. -> (configs, fold summaries)."""
    configs = fold_configs(stage, variants_, folds, overrides)
    return configs, [stage.train_fold(cfg) for cfg in configs]


def summary_line(stage: Stage, cfg: Any, score: dict) -> str:
    return (f"{cfg.name} fold {cfg.fold}: {stage.metric_label} {score[stage.metric]:.4f} "
            f"(hflip TTA {score[stage.metric + '_tta']:.4f}) -> {cfg.out_dir()}")


def train_cli(stage: Stage, argv: list[str], description: str,
              add_args: Callable[[argparse.ArgumentParser], None] | None = None,
              early: Callable[[argparse.Namespace], int | None] | None = None) -> int:
    """``python -m siimcovid <stage>-train``: options from the schema, ``--fold`` (one or more),
    ``--print-config``. ``add_args`` adds a stage's own options; ``early(args)`` may handle them
    and return an exit status before any config is loaded."""
    from .. import variants

    ap = argparse.ArgumentParser(prog=f"python -m siimcovid {stage.name}-train", description=description)
    ap.add_argument("--fold", type=int, nargs="+", default=None, help="fold(s) to train (default: the config's)")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    if add_args:
        add_args(ap)
    variants.add_schema_args(ap, stage.schema, stage=stage.name, exclude=("fold",))
    a = ap.parse_args(argv)
    if early and (status := early(a)) is not None:
        return status
    configs = fold_configs(stage, [a.config], a.fold or [None], variants.overrides_from_args(a))
    if a.print_config:
        print(json.dumps(configs[0].to_dict(), indent=2))
        return 0
    for cfg in configs:
        print(summary_line(stage, cfg, stage.train_fold(cfg)))
    return 0
