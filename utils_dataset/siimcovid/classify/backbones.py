"""The backbone registry and the classifier builder: ``build_model(cfg, n_outputs, activation)``.

``MODELS`` maps a config's ``model`` (the backbone family) to its builder:
  * ``hub``: a TF Hub / Kaggle Models SavedModel (``hub_handle``: a URL, a local folder, or a short
    name of ``HUB_HANDLES``: EfficientNetV2 S/M/L/XL (21k -> 1k), ViT B/16, L/16);
  * ``sm_fpn``: a segmentation_models FPN (``sm_backbone``: any of sm's encoder names), the
    classifier on the encoder's top features, the FPN output as the mask head;
  * ``keras``: a ``keras.applications`` / ``efficientnet`` classifier body (``keras_backbone``: a
    name of ``KERAS_BACKBONES``: EfficientNet B0-B7 (qubvel's ``efficientnet`` package, the
    seed's choice), EfficientNetV2 B0-B3/S/M/L and ResNet101V2 (``keras.applications``)).
Weights come from a local file (``backbone_weights`` / ``sm_encoder_weights``: a path or a file
name found under /kaggle/input) or random init: the core never downloads. A wrong name is a
ConfigError listing the valid ones. Outputs are a dict ``{"cls": (B, n_outputs), "seg": (B, S,
S, 1) sigmoid}`` (``seg`` only with ``aux_seg``), float32 under mixed precision.

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

import numpy as np

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

from ..log import get_logger
from ..variants import ConfigError
from .heads import cls_head, coarse_head, fpn_decoder, side_decoder
from .runtime import keras

from .config import MODEL_FAMILIES, ClassifierConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


# --------------------------------------------------------------------------- builders
def _second_mask_head(outputs: dict, cfg: ClassifierConfig, maps: list, what: str) -> None:
    """``aux_heads: 2``: add ``seg2`` (:func:`heads.coarse_head`) on the body's coarsest map."""
    if cfg.aux_heads < 2:
        return
    if not maps:
        raise ConfigError(f"aux_heads: 2 needs a backbone that exposes feature maps; {what} gives only a "
                          "pooled vector (use aux_heads: 1)")
    outputs["seg2"] = coarse_head(maps, cfg.decoder_filters, cfg.image_size)


def build_hub_model(cfg: ClassifierConfig, n_outputs: int, activation: str):
    import tensorflow_hub as hub

    K = keras()
    L = K.layers
    size = cfg.image_size
    inp = L.Input((size, size, 3), name="image")
    handle = resolve_hub_handle(HUB_HANDLES.get(cfg.hub_handle, cfg.hub_handle))
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
    outputs = {"cls": cls_head(pooled, cfg.dropout, n_outputs, activation)}
    if cfg.aux_seg:
        if maps:
            outputs["seg"] = fpn_decoder(maps, cfg.decoder_filters, size)
        else:
            outputs["seg"] = side_decoder(inp, pooled, cfg.decoder_filters, size)
        _second_mask_head(outputs, cfg, maps, handle)
    model = K.Model(inp, outputs, name=f"{cfg.STAGE}_hub_{cfg.name}")
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
    if weights == "imagenet":
        return None
    return resolve_local_weights(weights, "sm_encoder_weights")


def build_sm_model(cfg: ClassifierConfig, n_outputs: int, activation: str):
    import segmentation_models as sm

    K = keras()
    L = K.layers
    size = cfg.image_size
    names = sm.get_available_backbone_names()
    if cfg.sm_backbone not in names:
        raise ConfigError(f"sm backbone {cfg.sm_backbone!r} unknown; sm backbones: {', '.join(names)}")
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
    outputs = {"cls": cls_head(pooled, cfg.dropout, n_outputs, activation)}
    if cfg.aux_seg:
        outputs["seg"] = L.Activation("linear", dtype="float32", name="seg")(out["seg"])
    model = K.Model(inp, outputs, name=f"{cfg.STAGE}_fpn_{cfg.name}")
    model.aux_design = "sm_fpn" if cfg.aux_seg else "none"
    return model


def _efficientnet(name: str):
    def make(**kw):
        import efficientnet.tfkeras as efn

        return getattr(efn, name)(**kw)
    return make


def _keras_app(module: str, name: str):
    def make(**kw):
        import importlib

        return getattr(importlib.import_module(f"tf_keras.applications.{module}"), name)(**kw)
    return make


# name -> (constructor(include_top, weights, input_shape, ...), input scaling): "0-255" bodies
# normalise inside (keras EfficientNetV2 takes 0-255), "-1-1" (ResNetV2), "imagenet" = the
# efficientnet package's torch-style mean/std.
KERAS_BACKBONES: dict[str, tuple] = {
    **{f"efficientnetb{k}": (_efficientnet(f"EfficientNetB{k}"), "imagenet") for k in range(8)},
    **{f"efficientnetv2{v.lower()}": (_keras_app("efficientnet_v2", f"EfficientNetV2{v}"), "0-255")
       for v in ("B0", "B1", "B2", "B3", "S", "M", "L")},
    "resnet101v2": (_keras_app("resnet_v2", "ResNet101V2"), "-1-1"),
}

# Short names of TF Hub / Kaggle Models feature vectors (RGB in [0, 1]; on Kaggle the mounted copy).
HUB_HANDLES = {
    **{f"effv2{v}": f"https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet21k_ft1k_{v}/feature_vector/2"
       for v in ("s", "m", "l", "xl")},
    "vit_b16": "https://tfhub.dev/sayakpaul/vit_b16_fe/1",
    "vit_l16": "https://tfhub.dev/sayakpaul/vit_l16_fe/1",
}


def resolve_local_weights(weights: str | None, what: str) -> Path | None:
    """None / "" / "none" -> None (random init); otherwise a local file: a path, or a file name
    found under the search roots (/kaggle/input, SIIM_INPUT). Never a download."""
    if weights in (None, "", "none"):
        return None
    if weights == "imagenet":
        raise ConfigError(f"{what}='imagenet' would download: give a local .h5 (path or file name under "
                          "/kaggle/input) or none")
    p = Path(weights)
    if p.is_file():
        return p
    from ..paths import find_input

    try:
        return find_input(p.name, hint=p.parent if str(p.parent) not in ("", ".") else None) / p.name
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{what} {weights!r}: not a file and {exc}") from exc


def for_trained_weights(cfg: ClassifierConfig) -> ClassifierConfig:
    """``cfg`` for rebuilding a trained fold whose weights file is loaded next: that file holds
    every weight, the backbone's too, so the pretrained backbone file the fold STARTED from (an
    ImageNet .h5 the inference kernel does not attach) is neither searched nor read. A hub
    SavedModel is the architecture itself and stays."""
    import dataclasses

    return dataclasses.replace(cfg, backbone_weights=None, sm_encoder_weights=None)


def build_keras_model(cfg: ClassifierConfig, n_outputs: int, activation: str):
    """A keras.applications / efficientnet body, global-average pooled; the aux mask decoder is
    the FPN over its last feature maps at strides 8, 16 and 32."""
    K = keras()
    L = K.layers
    name = cfg.keras_backbone.lower()
    if name not in KERAS_BACKBONES:
        raise ConfigError(f"keras_backbone {cfg.keras_backbone!r} unknown; valid: {', '.join(KERAS_BACKBONES)}")
    make, scaling = KERAS_BACKBONES[name]
    local = resolve_local_weights(cfg.backbone_weights, "backbone_weights")
    size = cfg.image_size
    kw = dict(include_top=False, weights=None, input_shape=(size, size, 3))
    if name.startswith("efficientnetb") and cfg.drop_path:
        kw["drop_connect_rate"] = cfg.drop_path
    body = make(**kw)
    if local:
        body.load_weights(str(local), by_name=True, skip_mismatch=True)
    inp = L.Input((size, size, 3), name="image")
    if scaling == "imagenet":
        mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
        x = L.Normalization(mean=mean, variance=std ** 2, name="imagenet_norm")(inp)
    elif scaling == "0-255":
        x = L.Rescaling(255.0, name="to_255")(inp)
    else:
        x = L.Rescaling(2.0, offset=-1.0, name="to_pm1")(inp)
    maps: list = []
    if cfg.aux_seg:
        by_stride: dict[int, object] = {}  # the last layer output at each stride
        for layer in body.layers:
            out = layer.output
            if isinstance(out, (list, tuple)) or len(out.shape) != 4 or out.shape[1] is None:
                continue
            stride = size // int(out.shape[1])
            if stride in (8, 16, 32):
                by_stride[stride] = out
        outs = K.Model(body.input, [body.output] + [by_stride[s] for s in sorted(by_stride)],
                       name=f"body_{name}")(x)
        top, maps = outs[0], list(outs[1:])
    else:
        top = body(x)
    pooled = L.GlobalAveragePooling2D(name="pool")(top)
    outputs = {"cls": cls_head(pooled, cfg.dropout, n_outputs, activation)}
    if cfg.aux_seg:
        outputs["seg"] = fpn_decoder(maps, cfg.decoder_filters, size) if maps else \
            side_decoder(inp, pooled, cfg.decoder_filters, size)
        _second_mask_head(outputs, cfg, maps, name)
    model = K.Model(inp, outputs, name=f"{cfg.STAGE}_{name}_{cfg.name}")
    model.aux_design = ("fpn_on_body" if maps else "side_film") if cfg.aux_seg else "none"
    return model


MODELS = {"hub": build_hub_model, "sm_fpn": build_sm_model, "keras": build_keras_model}


def build_model(cfg: ClassifierConfig, n_outputs: int, activation: str):
    """The classifier of ``cfg.model`` with a ``cls`` head of ``n_outputs`` (softmax / sigmoid)."""
    if cfg.model not in MODELS:
        raise ConfigError(f"model {cfg.model!r} unknown; valid: {', '.join(MODELS)}")
    if activation not in ("softmax", "sigmoid", "linear"):
        raise ValueError(f"activation must be softmax, sigmoid or linear, got {activation!r}")
    return MODELS[cfg.model](cfg, n_outputs, activation)
