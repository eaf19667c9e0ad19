"""The pretrained-weights folder (the weights kernel's output): its file names, its manifest, and
the one reader of both. Written by :mod:`siimcovid.kaggle.weights`; read by the training stages.

    W/keras/<Keras's own file name>.h5     W/mmdet/<model-zoo file name>.pth
    W/siimcovid-weights.json              the manifest (written last: its presence means complete)

On Kaggle the folder is the weights kernel's output under /kaggle/input; locally it is absent (or a
dry run's manifest without files), and every member starts from random initialisation.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

MANIFEST = "siimcovid-weights.json"
KERAS_DIR = "keras"
MMDET_DIR = "mmdet"

# Keras notop weights by file name -> (URL, hash). The hashes are the ones the packages themselves
# check (efficientnet 1.0.0: sha256 of the AutoAugment notop files; tf_keras: md5 of EfficientNetV2's);
# tests/test_weights.py checks this table against the installed packages.
_EFN = "https://github.com/Callidior/keras-applications/releases/download/efficientnet/"
_EFN2 = "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"
KERAS_FILES: dict[str, tuple[str, str]] = {
    **{f"efficientnet-{b}_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5": (
        f"{_EFN}efficientnet-{b}_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5", h) for b, h in (
        ("b5", "9d197bc2bfe29165c10a2af8c2ebc67507f5d70456f09e584c71b822941b1952"),
        ("b6", "1d0923bb038f2f8060faaf0a0449db4b96549a881747b7c7678724ac79f427ed"),
        ("b7", "60b56ff3a8daccc8d96edfd40b204c113e51748da657afd58034d54d3cec2bac"))},
    **{f"efficientnetv2-{v}_notop.h5": (f"{_EFN2}efficientnetv2-{v}_notop.h5", h) for v, h in (
        ("s", "af0682fb74e8c54910f2d4393339c070"),
        ("m", "1b8dc055df72dde80d614482840fe342"),
        ("l", "b0b66b5c863aef5b46e8608fe1711615"))},
}


class WeightsError(RuntimeError):
    """A pretrained file that is missing, could not be fetched, or does not match its published hash."""


def rel_path(kind: str, file: str) -> str:
    """Where a file of ``kind`` (keras | mmdet) lives inside the folder."""
    return f"{KERAS_DIR if kind == 'keras' else MMDET_DIR}/{file}"


def write_manifest(out: str | os.PathLike, manifest: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)
    return out / MANIFEST


def mounted() -> tuple[Path, dict] | None:
    """(folder, manifest) of the weights kernel output under the search roots (SIIM_INPUT,
    /kaggle/input), None when none is mounted."""
    from .paths import find_input

    try:
        folder = find_input(MANIFEST)
    except FileNotFoundError:
        return None
    try:
        return folder, json.loads((folder / MANIFEST).read_text())
    except ValueError as exc:
        raise WeightsError(f"{folder / MANIFEST}: not JSON ({exc})") from None


def mounted_file(file: str, what: str) -> Path | None:
    """The mounted copy of ``file`` (None: no weights folder is mounted, or only a dry run's plan).
    A mounted folder that lacks it is a :class:`WeightsError` naming both (``what``: who asked)."""
    found = mounted()
    if found is None or found[1].get("dry_run"):
        return None
    folder, manifest = found
    row = (manifest.get("files") or {}).get(file)
    if row is None:
        raise WeightsError(f"{folder / MANIFEST}: no {file} ({what}); re-run the weights kernel")
    path = folder / row["path"]
    if not path.is_file():
        raise WeightsError(f"{path}: listed in {folder / MANIFEST} but missing")
    return path
