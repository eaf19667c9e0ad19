"""Study-classifier experiments: one dataclass of defaults (the schema), small variants over it.

A variant file (``siimcovid/configs/study/<name>.yaml``) holds only the keys it changes and may
name a parent with ``_base_: other.yaml``; ``--set key=value`` overrides single keys last. The
experiment's name (its output folder) is the variant's file stem unless ``name`` is set. Loading,
typing and the errors are :mod:`siimcovid.variants` (the one config system of every stage).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from .. import variants
from ..variants import opt

CONFIG_DIR = variants.stage_dir("study")

# ImageNet-21k pre-trained, ImageNet-1k fine-tuned EfficientNetV2-L, feature vector (RGB in [0, 1]).
TFHUB_EFFV2_L = "https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet21k_ft1k_l/feature_vector/2"


@dataclass
class StudyConfig:
    name: str = "base"
    # --- data: the preprocess output (docs/contracts.md) ---
    preprocess: str | None = opt(None, "folder holding meta.csv; None = find it (SIIM_INPUT, /kaggle/input)")
    src_size: int | None = opt(None, "which images/<S>/ to read; None = the smallest S >= image_size")
    image_size: int = 512
    fold: int = 0
    positive_boxed_only: bool = opt(False, "train on negatives + boxed images only (1st place)")
    study_agg: str = opt("mean", "image -> study probabilities: mean | max")
    max_boxes: int = opt(16, "boxes per image kept for the mask (the data has at most 8)")
    cache: bool = opt(False, "cache decoded images in memory (small sets / big RAM)")
    # png: images/<S>/<split>/*.png; tfrecord: tfrecords/<S>/*.tfrec (preprocess --tfrecords; TPU kernels)
    input_format: str = "png"
    # --- model ---
    model: str = opt("hub", "hub | sm_fpn")
    hub_handle: str = opt(TFHUB_EFFV2_L, "URL, local SavedModel folder, or found under /kaggle/input")
    hub_pooled_key: str = opt("default", "for hub models that return a dict of outputs")
    sm_backbone: str = "efficientnetb5"
    sm_encoder_weights: str | None = opt(None, "None, 'imagenet' (downloads), or a local .h5 path / file name")
    pyramid_filters: int = 128
    decoder_filters: int = opt(64, "hub aux decoder width")
    aux_seg: bool = True
    cls_weight: float = 1.0
    seg_weight: float = 0.5
    dropout: float = 0.3
    drop_path: float = opt(0.2, "stochastic depth (sm EfficientNet drop_connect_rate; hub models: fixed)")
    # --- optimisation ---
    epochs: int = 20
    batch_size: int = opt(32, "global batch (split over replicas)")
    lr: float = 2e-4
    lr_min: float = 1e-6
    warmup_epochs: float = 1.0
    schedule: str = opt("cosine", "cosine | constant")
    optimizer: str = opt("adamw", "adamw | adam | sgd")
    weight_decay: float = 1e-5
    label_smoothing: float = 0.05
    steps_per_epoch: int | None = opt(None, "None = one pass over the training images")
    # --- augmentation (tf.data, on the accelerator's host) ---
    hflip: bool = True
    shift: float = opt(0.1, "fraction of the side")
    scale: float = opt(0.15, "+- relative zoom")
    rotate: float = opt(15.0, "degrees")
    brightness: float = 0.2
    contrast: float = 0.2
    randaug_n: int = 2
    randaug_m: float = opt(12.0, "magnitude 0-30 scale as in RandAugment; 10-15 typical")
    # --- evaluation ---
    tta_hflip: bool = True
    # --- noisy student ---
    round: int = 1
    teacher: str | None = opt(None, "folder(s) (os.pathsep-separated) with the previous round's fold*/oof.csv, test.csv")
    soft_weight: float = opt(0.7, "target = soft_weight * teacher + (1 - soft_weight) * one-hot")
    pseudo_test: bool = opt(True, "add test images with the teacher's predictions as targets")
    # --- runtime ---
    seed: int = 42
    mixed_precision: str = opt("auto", "auto | off | mixed_float16 | mixed_bfloat16")
    workdir: str | None = opt(None, "parent of <name>/fold<k>; None = /kaggle/working or ./work/study")
    threads: int = opt(0, "TF intra/inter op threads (0 = TF default)")
    verbose: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        validate(self)

    def out_dir(self) -> Path:
        from ..paths import working_dir

        root = Path(self.workdir) if self.workdir else working_dir("work") / "study"
        return root / self.name / f"fold{self.fold}"


FIELDS = {f.name: f for f in fields(StudyConfig)}
STAGE = "study"


def _coerce(key: str, value: Any) -> Any:
    """A YAML/CLI value -> the field's type (ints stay ints, 'none' -> None where allowed)."""
    return variants.coerce(StudyConfig, key, value)


def variant_path(name: str | os.PathLike) -> Path:
    return variants.variant_path(STAGE, name)


def read_variant(path: Path) -> dict[str, Any]:
    """The variant's keys merged over its ``_base_`` chain (parent first)."""
    return variants.read_variant(path)


parse_sets = variants.parse_sets


def load_config(variant: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
                sets: Iterable[str] = ()) -> StudyConfig:
    """Defaults <- variant file (with its bases) <- ``overrides`` dict <- ``key=value`` strings."""
    return variants.load(STAGE, variant, [overrides or {}, list(sets)], StudyConfig)


def validate(cfg: StudyConfig) -> None:
    problems = []
    if cfg.model not in ("hub", "sm_fpn"):
        problems.append(f"model must be hub or sm_fpn, got {cfg.model!r}")
    if cfg.input_format not in ("png", "tfrecord"):
        problems.append(f"input_format must be png or tfrecord, got {cfg.input_format!r}")
    if cfg.study_agg not in ("mean", "max"):
        problems.append(f"study_agg must be mean or max, got {cfg.study_agg!r}")
    if cfg.optimizer not in ("adamw", "adam", "sgd"):
        problems.append(f"optimizer must be adamw, adam or sgd, got {cfg.optimizer!r}")
    if cfg.mixed_precision not in ("auto", "off", "mixed_float16", "mixed_bfloat16"):
        problems.append(f"mixed_precision must be auto, off, mixed_float16 or mixed_bfloat16, got {cfg.mixed_precision!r}")
    if cfg.schedule not in ("cosine", "constant"):
        problems.append(f"schedule must be cosine or constant, got {cfg.schedule!r}")
    if cfg.image_size < 32 or cfg.image_size % 32:
        problems.append(f"image_size must be a multiple of 32 (FPN strides), got {cfg.image_size}")
    if not 0 <= cfg.soft_weight <= 1:
        problems.append(f"soft_weight must be in [0, 1], got {cfg.soft_weight}")
    if cfg.round > 1 and not cfg.teacher:
        problems.append(f"round {cfg.round} needs teacher= (the previous round's output folder)")
    if problems:
        raise variants.ConfigError("study config: " + "; ".join(problems))


def from_json(path: str | os.PathLike) -> StudyConfig:
    """A fold's saved ``config.json`` back into a config (for prediction / merge)."""
    return variants.from_dict(StudyConfig, json.loads(Path(path).read_text()))
