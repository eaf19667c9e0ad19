"""Which members take part in the ensemble and how they merge: one config variant.

Variants are ``siimcovid/configs/ensemble/<name>.yaml`` over the defaults below (``_base_`` and
``--set key=value`` through ``siimcovid.variants``). A member list of ``null`` means
every member of that kind found under the inputs; weights of members not listed are 1; a weight
or parameter left ``null`` with ``fit: true`` is fitted on the out-of-fold predictions.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import variants
from ..errors import UserError
from .rules import PRESETS

RULE_CHOICES = ("auto", *PRESETS)


def _wbf(iou: float) -> dict:
    return {"iou_thr": iou, "skip_box_thr": 0.0001, "conf_type": "avg"}


@dataclass
class EnsembleConfig:
    """name: the variant's name (the fitted merge is saved under it)
    study_members: study classifier members (null: every one found)
    study_weights: member -> weight (missing: 1; fitted when fit and fit_study_weights)
    study_tta: use the hflip TTA columns of the study members
    study_how: image -> study aggregation (mean | max)
    image_evidence: a in negative = (1 - a) negative + a mean(image none); null: fitted
    binary_members: binary none members (null: every one found)
    binary_weights: member -> weight
    binary_tta: use p_none_tta
    det_members: detector members (null: every one found)
    det_weights: detector -> weight at the second WBF level (models)
    det_score_scale: detector -> factor on its fused fold scores before the second level
    det_tta: use the detectors' TTA boxes (flips fused) rather than the plain image's
    wbf_folds: WBF parameters of the first level (one model's folds)
    wbf_models: WBF parameters of the second level (the models)
    rule: image rule preset (auto: the best preset on OOF)
    rule_params: parameters of the rule (fixed when fit is off; the search's start otherwise)
    fit: fit weights and parameters on the OOF predictions
    fit_study_weights: fit the study member weights (with fit)
    fit_binary_weights: fit the binary member weights (with fit)
    fit_margin: fitted values are kept only when they beat the defaults by this much on OOF
    seed: seed of the weight search"""
    name: str = "default"
    study_members: Optional[list] = None
    study_weights: dict = field(default_factory=dict)
    study_tta: bool = True
    study_how: str = "mean"
    image_evidence: Optional[float] = None
    binary_members: Optional[list] = None
    binary_weights: dict = field(default_factory=dict)
    binary_tta: bool = True
    det_members: Optional[list] = None
    det_weights: dict = field(default_factory=dict)
    det_score_scale: dict = field(default_factory=dict)
    det_tta: bool = True
    wbf_folds: dict = field(default_factory=lambda: _wbf(0.6))
    wbf_models: dict = field(default_factory=lambda: _wbf(0.625))
    rule: str = "auto"
    rule_params: dict = field(default_factory=dict)
    fit: bool = True
    fit_study_weights: bool = True
    fit_binary_weights: bool = True
    fit_margin: float = 0.002
    seed: int = 0

    def validate(self) -> None:
        if self.rule not in RULE_CHOICES:
            raise UserError(f"ensemble rule {self.rule!r}: use one of {', '.join(RULE_CHOICES)}")
        if self.rule != "auto":
            unknown = set(self.rule_params) - set(PRESETS[self.rule])
            if unknown:
                raise UserError(f"ensemble rule_params {sorted(unknown)} are not parameters of {self.rule} "
                                f"(valid: {sorted(PRESETS[self.rule]) or 'none'})")
        if self.study_how not in ("mean", "max"):
            raise UserError(f"ensemble study_how {self.study_how!r}: use mean or max")
        if self.image_evidence is not None and not 0.0 <= float(self.image_evidence) <= 1.0:
            raise UserError(f"ensemble image_evidence={self.image_evidence}: use a value in [0, 1] or null (fit)")
        from ..wbf import WBFParams

        for key in ("wbf_folds", "wbf_models"):
            WBFParams.from_dict(getattr(self, key))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def load(variant: str | Path | None = None, overrides: Any = None) -> EnsembleConfig:
    """Defaults <- variant file <- overrides (dict or ``["key=value", ...]``) -> EnsembleConfig."""
    return variants.load("ensemble", variant, overrides, EnsembleConfig, default_name="default")
