"""The study classifier's model: the shared core's builder with the study task's head (four
softmax classes). Kept for the study stage's callers; the pieces live in :mod:`siimcovid.classify`."""
from __future__ import annotations

from ..classify.backbones import (  # noqa: F401  (re-exported)
    IMAGENET_MEAN, IMAGENET_STD, KERAS_BACKBONES, MODELS, export_tiny_savedmodel, resolve_encoder_weights,
    resolve_hub_handle,
)
from ..classify.runtime import keras  # noqa: F401
from ..classify.train import lr_schedule, masked_bce_jaccard  # noqa: F401
from .config import StudyConfig


def build_model(cfg: StudyConfig):
    from ..classify.backbones import build_model as build
    from .task import STUDY

    return build(cfg, STUDY.n_outputs, STUDY.activation)


def compile_model(model, cfg: StudyConfig, steps_per_epoch: int) -> None:
    from ..classify.train import compile_model as compile_
    from .task import STUDY

    compile_(model, cfg, steps_per_epoch, STUDY)
