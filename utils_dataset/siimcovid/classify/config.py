"""The shared classifier settings: one dataclass every Keras classification stage extends.

A stage's config is a subclass (``StudyConfig(ClassifierConfig)``) that adds its own fields and
may redeclare a default; its variants live in ``siimcovid/configs/<stage>/`` and load through
:mod:`siimcovid.variants`. Everything the core reads (model, data, optimisation, augmentation,
runtime) is here; ``STAGE`` names the stage (default output folder, run header).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..variants import ConfigError, opt

# ImageNet-21k pre-trained, ImageNet-1k fine-tuned EfficientNetV2-L, feature vector (RGB in [0, 1]).
TFHUB_EFFV2_L = "https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet21k_ft1k_l/feature_vector/2"
# The backbone families ``model`` may name; classify.backbones.MODELS maps each to its builder. Spelled
# here, below the builders, so that checking a config never imports Keras-side code.
MODEL_FAMILIES = ("hub", "sm_fpn", "keras")


@dataclass
class ClassifierConfig:
    STAGE: ClassVar[str] = "classify"

    name: str = "base"
    # --- data: the preprocess output (docs/contracts.md) ---
    preprocess: str | None = opt(None, "folder holding meta.csv; None = find it (SIIM_INPUT, /kaggle/input)")
    src_size: int | None = opt(None, "which images/<S>/ to read; None = the smallest S >= image_size")
    image_size: int = 512
    fold: int = 0
    max_boxes: int = opt(16, "boxes per image kept for the mask (the data has at most 8)")
    cache: bool = opt(False, "cache decoded images in memory (small sets / big RAM)")
    # png: images/<S>/<split>/*.png; tfrecord: tfrecords/<S>/*.tfrec (preprocess --tfrecords; TPU kernels)
    input_format: str = "png"
    # --- model ---
    model: str = opt("hub", "backbone family: hub (TF Hub / SavedModel) | sm_fpn (segmentation_models FPN) | "
                            "keras (keras.applications / efficientnet package); see classify.backbones")
    hub_handle: str = opt(TFHUB_EFFV2_L, "URL, local SavedModel folder, a short name of classify.backbones.HUB_HANDLES, "
                                         "or found under /kaggle/input")
    hub_pooled_key: str = opt("default", "for hub models that return a dict of outputs")
    sm_backbone: str = "efficientnetb5"
    sm_encoder_weights: str | None = opt(None, "None, 'imagenet' (downloads), or a local .h5 path / file name")
    keras_backbone: str = opt("efficientnetb7", "model=keras: a name of classify.backbones.KERAS_BACKBONES")
    backbone_weights: str | None = opt(None, "model=keras: None (random init) or a local notop .h5 (path or file "
                                             "name found under /kaggle/input); never downloaded")
    pyramid_filters: int = 128
    decoder_filters: int = opt(64, "hub aux decoder width")
    aux_seg: bool = True
    aux_heads: int = opt(1, "mask heads when aux_seg: 1 (the decoder) or 2 (plus a head on the body's coarsest "
                            "map, deep supervision; keras / hub backbones with feature maps)", choices=(1, 2))
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
    # --- runtime ---
    seed: int = 42
    mixed_precision: str = opt("auto", "auto | off | mixed_float16 | mixed_bfloat16")
    workdir: str | None = opt(None, "parent of <name>/fold<k>; None = /kaggle/working or ./work/study")
    threads: int = opt(0, "TF intra/inter op threads (0 = TF default)")
    verbose: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        problems = check_classifier(self)
        if problems:
            raise ConfigError(f"{self.STAGE} config: " + "; ".join(problems))

    def out_dir(self) -> Path:
        from ..paths import working_dir
        from ..runs import fold_dir

        root = Path(self.workdir) if self.workdir else working_dir("work") / self.STAGE
        return fold_dir(root / self.name, self.fold)


def check_classifier(cfg: ClassifierConfig) -> list[str]:
    """The problems of the core's settings (an empty list when they are fine)."""
    problems = []
    if cfg.model not in MODEL_FAMILIES:
        problems.append(f"model must be one of {', '.join(MODEL_FAMILIES)}, got {cfg.model!r}")
    if cfg.input_format not in ("png", "tfrecord"):
        problems.append(f"input_format must be png or tfrecord, got {cfg.input_format!r}")
    if cfg.optimizer not in ("adamw", "adam", "sgd"):
        problems.append(f"optimizer must be adamw, adam or sgd, got {cfg.optimizer!r}")
    if cfg.mixed_precision not in ("auto", "off", "mixed_float16", "mixed_bfloat16"):
        problems.append(f"mixed_precision must be auto, off, mixed_float16 or mixed_bfloat16, got {cfg.mixed_precision!r}")
    if cfg.schedule not in ("cosine", "constant"):
        problems.append(f"schedule must be cosine or constant, got {cfg.schedule!r}")
    if cfg.aux_heads not in (1, 2) or (cfg.aux_heads == 2 and cfg.model == "sm_fpn"):
        problems.append(f"aux_heads must be 1 or 2 (2 not with model sm_fpn), got {cfg.aux_heads}")
    if cfg.image_size < 32 or cfg.image_size % 32:
        problems.append(f"image_size must be a multiple of 32 (FPN strides), got {cfg.image_size}")
    return problems
