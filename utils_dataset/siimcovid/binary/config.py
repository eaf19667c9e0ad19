"""Binary `none` experiments: the shared classifier settings plus the binary task's own.

Variants live in ``siimcovid/configs/binary/`` (``_base_.yaml`` + a few lines per member) and load
through :mod:`siimcovid.variants`; ``ensemble.yaml`` there is not a member: it names the members
(which binary-train trains by default, which binary-merge merges) and how binary-merge fits their
weights (:class:`BinaryEnsembleConfig`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .. import variants
from ..classify.config import ClassifierConfig, check_classifier
from ..variants import opt

STAGE = "binary"
LOSSES = ("bce", "focal")


@dataclass
class BinaryConfig(ClassifierConfig):
    """One member of the binary `none` ensemble: a Keras backbone with one sigmoid output."""

    STAGE: ClassVar[str] = STAGE

    # the defaults of the shared core that differ for this task (the seed's B7 recipe)
    model: str = opt("keras", "backbone family: hub | sm_fpn | keras (see classify.backbones)")
    keras_backbone: str = opt("efficientnetb7", "model=keras: a name of classify.backbones.KERAS_BACKBONES")
    image_size: int = 640
    label_smoothing: float = opt(0.01, "BCE / focal label smoothing (the seed's B7: 0.01)")
    # --- the binary task ---
    loss: str = opt("bce", "bce (label-smoothed binary cross-entropy) | focal", choices=LOSSES)
    focal_gamma: float = opt(2.0, "loss=focal: the focusing exponent")
    drop_unboxed_of_boxed_studies: bool = opt(
        True, "leave the unboxed images of a study that has a boxed image out of training (still predicted)")

    def validate(self) -> None:
        problems = check_classifier(self)
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0 <= self.label_smoothing < 0.5:
            problems.append(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if problems:
            raise variants.ConfigError(f"{STAGE} config: " + "; ".join(problems))


def load_config(variant: str | os.PathLike | None = None, overrides=None) -> BinaryConfig:
    """Defaults <- variant (with its _base_ chain) <- overrides (dict or key=value strings)."""
    return variants.load(STAGE, variant, overrides, BinaryConfig)


def from_json(path: str | os.PathLike) -> BinaryConfig:
    """A fold's saved ``config.json`` back into a config (for prediction)."""
    return variants.from_dict(BinaryConfig, json.loads(Path(path).read_text()))


@dataclass
class BinaryEnsembleConfig:
    """configs/binary/ensemble.yaml: which members, and how binary-merge fits their weights."""

    members: list[str] = opt(default_factory=list, help="variant names; empty: every member found")
    use_tta: bool = opt(True, "ensemble the hflip-TTA columns (p_none_tta)")
    fit_margin: float = opt(0.002, "fitted weights must beat equal weights by this OOF AP, else equal weights")
    n_random: int = opt(2000, "Dirichlet samples over the simplex before the coordinate refinement")
    seed: int = 0
    blend_grid: int = opt(101, "weights tried for the ensemble vs the study negative")


def load_ensemble_config(name: str | os.PathLike | None = "ensemble", overrides=None) -> BinaryEnsembleConfig:
    """``ensemble`` (or another variant / YAML path in configs/binary/) <- overrides (dict or key=value
    strings), through siimcovid.variants: unknown keys are a UserError naming the valid ones."""
    return variants.load(STAGE, name, overrides, BinaryEnsembleConfig)
