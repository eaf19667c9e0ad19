"""Classifier heads and the auxiliary segmentation decoders (Keras functional pieces).

The class head is ``Dense(n_outputs, activation)`` in float32 (a task's softmax over classes or
sigmoid per output); the mask head is one of two decoders (see :mod:`siimcovid.classify.backbones`
for which backbone gets which): an FPN over feature maps, or a side decoder FiLM-modulated by the
pooled features when the backbone offers no maps.
"""
from __future__ import annotations

from .runtime import keras


def fpn_decoder(maps: list, filters: int, out_size: int, name: str = "aux"):
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
    return to_mask(x, out_size, name)


def side_decoder(image, pooled, filters: int, out_size: int, name: str = "aux"):
    """Small conv encoder of the image at stride 8, FiLM-modulated by the pooled features."""
    L = keras().layers
    x = image
    for i, f in enumerate((filters // 2, filters, filters)):
        x = L.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"{name}_enc{i}")(x)
    gamma = L.Reshape((1, 1, filters))(L.Dense(filters, name=f"{name}_film_scale")(pooled))
    beta = L.Reshape((1, 1, filters))(L.Dense(filters, name=f"{name}_film_shift")(pooled))
    x = L.Add(name=f"{name}_film")([L.Multiply()([x, L.Lambda(lambda g: 1.0 + g)(gamma)]), beta])
    x = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv")(x)
    return to_mask(x, out_size, name)


def coarse_head(maps: list, filters: int, out_size: int, name: str = "aux2", output: str = "seg2"):
    """A second mask head on the coarsest feature map alone (deep supervision of the top of the
    body, beside the FPN decoder's head): 3x3 conv, 1x1 -> mask, upsampled."""
    L = keras().layers
    top = sorted(maps, key=lambda t: int(t.shape[1]))[0]
    x = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv")(top)
    return to_mask(x, out_size, name, output)


def to_mask(x, out_size: int, name: str, output: str = "seg"):
    L = keras().layers
    x = L.Conv2D(1, 1, padding="same", name=f"{name}_logits")(x)
    factor = out_size // int(x.shape[1])
    if factor > 1:
        x = L.UpSampling2D(factor, interpolation="bilinear", name=f"{name}_upmask")(x)
    return L.Activation("sigmoid", dtype="float32", name=output)(x)


def cls_head(features, dropout: float, n_outputs: int, activation: str):
    """Dropout + Dense(n_outputs, activation), float32 under mixed precision, named ``cls``."""
    L = keras().layers
    if dropout:
        features = L.Dropout(dropout, name="head_dropout")(features)
    return L.Dense(n_outputs, activation=activation, dtype="float32", name="cls")(features)
