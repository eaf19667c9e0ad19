"""Study-classifier models: a TF Hub backbone or an sm FPN, both with the auxiliary mask head.

Outputs are a dict ``{"cls": (B, 4) softmax, "seg": (B, S, S, 1) sigmoid}`` (``seg`` only with
``aux_seg``), float32 under mixed precision.

Hub backbone and the aux decoder. The TF Hub EfficientNetV2 ``feature_vector/2`` models follow
the Reusable SavedModel "image feature vector" API: ``__call__`` maps images to ONE pooled
``(B, 1280)`` tensor; the automl export keeps no intermediate endpoints in that signature
(``EffNetV2Model.call`` returns ``[head] + reduction_i`` endpoints, the hub export serves the
head only). So the decoder takes what the SavedModel offers:
  * a SavedModel whose ``__call__`` returns a dict with 4-D tensors (``reduction_*``
    endpoints, as ``export_tiny_savedmodel`` writes, or a re-export of a backbone with its
    endpoints) gets a light FPN decoder over those maps (top-down 1x1 laterals + sum + 3x3);
  * a model that returns a 4-D map (no pooling) gets the decoder on that map;
  * a pooled vector only (the real EfficientNetV2 feature vectors) gets a side decoder: a
    small strided conv encoder of the image whose features are modulated (FiLM: scale and
    shift per channel) by the backbone's pooled features. The mask loss then reaches the
    backbone through its pooled features: a weaker signal than a decoder on its feature
    maps, but the real model's weights stay trainable and no download or re-export is needed.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

from ..data import STUDY_CLASSES
from ..log import get_logger

if TYPE_CHECKING:
    from .config import StudyConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def keras():
    """tf_keras, checked to be what ``tf.keras`` (hence segmentation_models) resolves to."""
    import tensorflow as tf
    import tf_keras

    if tf.keras.layers.Layer is not tf_keras.layers.Layer:  # (tf.keras is a lazy module: compare classes)
        raise RuntimeError("tf.keras is Keras 3 here, not tf_keras: `import siimcovid` must come before the first "
                           "`import tensorflow` (it sets TF_USE_LEGACY_KERAS=1 for hub and segmentation_models)")
    return tf_keras


# --------------------------------------------------------------------------- tiny SavedModel
def export_tiny_savedmodel(path: str | os.PathLike, width: int = 8, endpoints: bool = True, seed: int = 0) -> Path:
    """Write a tiny, trainable, hub-style SavedModel (RGB in [0, 1] -> features) for tests and
    CPU demos: four stages of 2 x (3x3 conv, batch norm, ReLU), the first conv of each with
    stride 2. ``endpoints`` True: ``__call__`` returns ``{"default": pooled (B, 8 * width),
    "reduction_1".."reduction_4": maps at strides 2..16}``; False: the pooled vector only, like
    the real TF Hub feature-vector models. Saved from a Keras model, so the SavedModel carries
    ``variables`` / ``trainable_variables`` and a ``training`` argument as hub.KerasLayer
    expects. Returns the folder."""
    import tensorflow as tf

    K = keras()
    L = K.layers
    inp = L.Input((None, None, 3), name="images")
    x = L.Rescaling(2.0, offset=-1.0)(inp)
    outs = {}
    for i, f in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for j, stride in enumerate((2, 1)):
            init = K.initializers.HeNormal(seed=seed + 2 * i + j)
            x = L.Conv2D(f, 3, strides=stride, padding="same", use_bias=False, kernel_initializer=init)(x)
            x = L.ReLU()(L.BatchNormalization()(x))
        outs[f"reduction_{i + 1}"] = x
    outs["default"] = L.GlobalAveragePooling2D()(x)
    model = K.Model(inp, outs if endpoints else outs["default"], name="tiny_backbone")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(model, str(path))
    return path


def resolve_hub_handle(handle: str) -> str:
    """A local folder as is; a URL on Kaggle (internet off) -> the mounted Kaggle Models copy."""
    if os.path.isdir(handle):
        if not (Path(handle) / "saved_model.pb").exists():
            raise FileNotFoundError(f"{handle}: no saved_model.pb (not a SavedModel folder)")
        return handle
    if handle.startswith(("http://", "https://", "gs://")):
        from ..paths import KAGGLE_INPUT, find_input

        if KAGGLE_INPUT.is_dir():
            try:
                found = str(find_input("saved_model.pb", hint=KAGGLE_INPUT, max_depth=10))
                get_logger().info("hub handle %s -> mounted %s", handle, found)
                return found
            except FileNotFoundError:
                pass
        return handle
    raise FileNotFoundError(f"hub handle {handle!r}: not a folder, not a URL")


# --------------------------------------------------------------------------- heads
def _fpn_decoder(maps: list, filters: int, out_size: int, name: str = "aux"):
    """Top-down FPN over feature maps (any order): 1x1 laterals, upsample + add, 3x3, 1x1 -> mask."""
    L = keras().layers
    maps = sorted(maps, key=lambda t: -int(t.shape[1]))[-3:]  # the 3 coarsest, finest first
    x = None
    for i, m in enumerate(reversed(maps)):  # coarsest first
        lat = L.Conv2D(filters, 1, padding="same", name=f"{name}_lat{i}")(m)
        if x is not None:
            factor = int(m.shape[1]) // int(x.shape[1])
            x = L.UpSampling2D(factor, interpolation="nearest", name=f"{name}_up{i}")(x)
            x = L.Add(name=f"{name}_add{i}")([x, lat])
        else:
            x = lat
    x = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv")(x)
    return _to_mask(x, out_size, name)


def _side_decoder(image, pooled, filters: int, out_size: int, name: str = "aux"):
    """Small conv encoder of the image at stride 8, FiLM-modulated by the pooled features."""
    L = keras().layers
    x = image
    for i, f in enumerate((filters // 2, filters, filters)):
        x = L.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"{name}_enc{i}")(x)
    gamma = L.Reshape((1, 1, filters))(L.Dense(filters, name=f"{name}_film_scale")(pooled))
    beta = L.Reshape((1, 1, filters))(L.Dense(filters, name=f"{name}_film_shift")(pooled))
    x = L.Add(name=f"{name}_film")([L.Multiply()([x, L.Lambda(lambda g: 1.0 + g)(gamma)]), beta])
    x = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv")(x)
    return _to_mask(x, out_size, name)


def _to_mask(x, out_size: int, name: str):
    L = keras().layers
    x = L.Conv2D(1, 1, padding="same", name=f"{name}_logits")(x)
    factor = out_size // int(x.shape[1])
    if factor > 1:
        x = L.UpSampling2D(factor, interpolation="bilinear", name=f"{name}_upmask")(x)
    return L.Activation("sigmoid", dtype="float32", name="seg")(x)


def _cls_head(features, dropout: float):
    L = keras().layers
    if dropout:
        features = L.Dropout(dropout, name="head_dropout")(features)
    return L.Dense(len(STUDY_CLASSES), activation="softmax", dtype="float32", name="cls")(features)


# --------------------------------------------------------------------------- builders
def build_hub_model(cfg: "StudyConfig"):
    import tensorflow_hub as hub

    K = keras()
    L = K.layers
    size = cfg.image_size
    inp = L.Input((size, size, 3), name="image")
    handle = resolve_hub_handle(cfg.hub_handle)
    # The SavedModel's graph has fixed dtypes (float32): a mixed-precision policy must not cast
    # its input, so the hub layer keeps float32 and only the heads follow the global policy.
    backbone = hub.KerasLayer(handle, trainable=True, name="backbone", dtype="float32")
    out = backbone(inp)
    maps: list = []
    if isinstance(out, dict):
        maps = [v for k, v in sorted(out.items()) if len(v.shape) == 4]
        if cfg.hub_pooled_key in out and len(out[cfg.hub_pooled_key].shape) == 2:
            pooled = out[cfg.hub_pooled_key]
        elif maps:
            pooled = L.GlobalAveragePooling2D(name="pool")(sorted(maps, key=lambda t: int(t.shape[1]))[0])
        else:
            raise ValueError(f"{handle}: dict output without key {cfg.hub_pooled_key!r} or 4-D maps: {list(out)}")
    elif len(out.shape) == 4:
        maps = [out]
        pooled = L.GlobalAveragePooling2D(name="pool")(out)
    else:
        pooled = out
    outputs = {"cls": _cls_head(pooled, cfg.dropout)}
    if cfg.aux_seg:
        if maps:
            outputs["seg"] = _fpn_decoder(maps, cfg.decoder_filters, size)
        else:
            outputs["seg"] = _side_decoder(inp, pooled, cfg.decoder_filters, size)
    model = K.Model(inp, outputs, name=f"study_hub_{cfg.name}")
    model.aux_design = "fpn_on_endpoints" if maps else ("side_film" if cfg.aux_seg else "none")
    return model


@contextlib.contextmanager
def _sm_drop_connect(factory, name: str, rate: float):
    """sm.FPN forwards only backend/layers/models/utils to the encoder, so stochastic depth
    (qubvel EfficientNet's ``drop_connect_rate``) goes in through the backbone registry."""
    entry = factory._models_update.get(name)
    if entry is None or not name.startswith("efficientnet"):
        yield
        return
    factory._models_update[name] = [functools.partial(entry[0], drop_connect_rate=rate), entry[1]]
    try:
        yield
    finally:
        factory._models_update[name] = entry


def resolve_encoder_weights(weights: str | None) -> Path | None:
    """``sm_encoder_weights``: None (random init), "imagenet" (downloaded by segmentation_models:
    internet on), or a local ``.h5`` file -- a path, or a file name found under the search roots
    (/kaggle/input, SIIM_INPUT), which is how an internet-off Kaggle kernel gets ImageNet weights."""
    if weights in (None, "", "none", "imagenet"):
        return None
    p = Path(weights)
    if p.is_file():
        return p
    from ..paths import find_input

    try:
        return find_input(p.name, hint=p.parent if str(p.parent) not in ("", ".") else None) / p.name
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"sm_encoder_weights {weights!r}: not a file and {exc}") from exc


def build_sm_model(cfg: "StudyConfig"):
    import segmentation_models as sm

    K = keras()
    L = K.layers
    size = cfg.image_size
    names = sm.get_available_backbone_names()
    if cfg.sm_backbone not in names:
        raise ValueError(f"sm backbone {cfg.sm_backbone!r} unknown; sm backbones: {', '.join(names)}")
    weights = cfg.sm_encoder_weights
    local = resolve_encoder_weights(weights)
    with _sm_drop_connect(sm.Backbones, cfg.sm_backbone, cfg.drop_path):
        fpn = sm.FPN(cfg.sm_backbone, input_shape=(size, size, 3), classes=1, activation="sigmoid",
                     encoder_weights=None if local else weights, pyramid_block_filters=cfg.pyramid_filters)
    if local:
        # The efficientnet/classification_models .h5 files name their layers as sm's encoder does.
        fpn.load_weights(str(local), by_name=True, skip_mismatch=True)
    try:
        top = fpn.get_layer("top_activation").output
    except ValueError:
        # non-EfficientNet encoders: the coarsest 4-D layer output is the encoder's top
        cands = [l.output for l in fpn.layers if len(l.output.shape) == 4 and "decoder" not in l.name]
        top = sorted(cands, key=lambda t: int(t.shape[1]))[0]
    inp = L.Input((size, size, 3), name="image")
    mean = np.array(IMAGENET_MEAN, np.float32)
    std = np.array(IMAGENET_STD, np.float32)
    x = L.Normalization(mean=mean, variance=std ** 2, name="imagenet_norm")(inp)
    body = K.Model(fpn.input, {"seg": fpn.output, "top": top}, name=f"fpn_{cfg.sm_backbone}")
    out = body(x)
    pooled = L.GlobalAveragePooling2D(name="pool")(out["top"])
    outputs = {"cls": _cls_head(pooled, cfg.dropout)}
    if cfg.aux_seg:
        outputs["seg"] = L.Activation("linear", dtype="float32", name="seg")(out["seg"])
    model = K.Model(inp, outputs, name=f"study_fpn_{cfg.name}")
    model.aux_design = "sm_fpn" if cfg.aux_seg else "none"
    return model


def build_model(cfg: "StudyConfig"):
    return build_hub_model(cfg) if cfg.model == "hub" else build_sm_model(cfg)


# --------------------------------------------------------------------------- training pieces
def masked_bce_jaccard(y_true, y_pred):
    """sm's ``bce_jaccard_loss`` over the pixels of images whose mask is known: an unknown mask
    (target UNKNOWN_MASK, e.g. a test pseudo-label) is zeroed in target and prediction, which
    adds nothing to the intersection or union and ~0 to the BCE."""
    import segmentation_models as sm
    import tensorflow as tf

    y_pred = tf.cast(y_pred, tf.float32)
    known = tf.cast(y_true >= 0.0, tf.float32)
    return sm.losses.bce_jaccard_loss(y_true * known, y_pred * known)


def lr_schedule(cfg: "StudyConfig", steps_per_epoch: int):
    import tensorflow as tf

    K = keras()
    total = max(1, int(cfg.epochs * steps_per_epoch))
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    class WarmupCosine(K.optimizers.schedules.LearningRateSchedule):
        """Linear warm-up then cosine to lr_min (or constant); follows optimizer.iterations, so
        a resumed run continues the curve."""

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            if cfg.schedule == "constant":
                decay = tf.constant(cfg.lr)
            else:
                t = tf.clip_by_value((step - warm) / max(1, total - warm), 0.0, 1.0)
                decay = cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + tf.cos(np.pi * t))
            if warm > 0:
                return tf.where(step < warm, cfg.lr * (step + 1.0) / warm, decay)
            return decay

        def get_config(self):
            return {"lr": cfg.lr, "lr_min": cfg.lr_min, "warmup_steps": warm, "total_steps": total}

    return WarmupCosine()


def compile_model(model, cfg: "StudyConfig", steps_per_epoch: int) -> None:
    K = keras()
    lr = lr_schedule(cfg, steps_per_epoch)
    if cfg.optimizer == "adamw":
        opt = K.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        opt = K.optimizers.Adam(learning_rate=lr)
    elif cfg.optimizer == "sgd":
        opt = K.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True)
    else:
        raise ValueError(f"optimizer must be adamw, adam or sgd, got {cfg.optimizer!r}")
    losses = {"cls": K.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)}
    weights = {"cls": cfg.cls_weight}
    if cfg.aux_seg:
        losses["seg"] = masked_bce_jaccard
        weights["seg"] = cfg.seg_weight
    model.compile(optimizer=opt, loss=losses, loss_weights=weights,
                  metrics={"cls": [K.metrics.CategoricalAccuracy(name="acc")]})
