"""Study-classifier experiments: one dataclass of defaults (the schema), small variants over it.

A variant file (``siimcovid/configs/study/<name>.yaml``) holds only the keys it changes and may
name a parent with ``_base_: other.yaml``; ``--set key=value`` overrides single keys last. The
experiment's name (its output folder) is the variant's file stem unless ``name`` is set. Loading,
typing and the errors are :mod:`siimcovid.variants` (the one config system of every stage).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Iterable

from .. import variants
from ..classify.config import ClassifierConfig, check_classifier
from ..variants import opt

CONFIG_DIR = variants.stage_dir("study")


@dataclass
class StudyConfig(ClassifierConfig):
    """The study classifier: the shared classifier settings plus the study task's own."""

    STAGE: ClassVar[str] = "study"

    positive_boxed_only: bool = opt(False, "train on negatives + boxed images only (1st place)")
    study_agg: str = opt("mean", "image -> study probabilities: mean | max")
    # --- noisy student ---
    round: int = 1
    teacher: str | None = opt(None, "folder(s) (os.pathsep-separated) with the previous round's fold*/oof.csv, test.csv")
    soft_weight: float = opt(0.7, "target = soft_weight * teacher + (1 - soft_weight) * one-hot")
    pseudo_test: bool = opt(True, "add test images with the teacher's predictions as targets")

    def validate(self) -> None:
        validate(self)


FIELDS = {f.name: f for f in fields(StudyConfig)}
STAGE = "study"


def load_config(variant: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
                sets: Iterable[str] = ()) -> StudyConfig:
    """Defaults <- variant file (with its bases) <- ``overrides`` dict <- ``key=value`` strings."""
    return variants.load(STAGE, variant, [overrides or {}, list(sets)], StudyConfig)


def validate(cfg: StudyConfig) -> None:
    problems = check_classifier(cfg)
    if cfg.study_agg not in ("mean", "max"):
        problems.append(f"study_agg must be mean or max, got {cfg.study_agg!r}")
    if not 0 <= cfg.soft_weight <= 1:
        problems.append(f"soft_weight must be in [0, 1], got {cfg.soft_weight}")
    if cfg.round > 1 and not cfg.teacher:
        problems.append(f"round {cfg.round} needs teacher= (the previous round's output folder)")
    if problems:
        raise variants.ConfigError("study config: " + "; ".join(problems))


def from_json(path: str | os.PathLike) -> StudyConfig:
    """A fold's saved ``config.json`` back into a config (for prediction / merge)."""
    return variants.from_dict(StudyConfig, json.loads(Path(path).read_text()))
