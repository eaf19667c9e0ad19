"""mmdet's model zoo: the COCO checkpoint a detector variant starts from.

A variant inherits one of mmdet's configs (``_base_ = 'mmdet::dcn/...py'``, possibly through our
own variants); mmdet ships a metafile beside its configs with the checkpoint URL of each. The
weights kernel fetches those files; a training kernel whose ``siim.weights`` is ``"auto"`` loads the
mounted copy (:func:`resolve_weights`) and, where none is mounted (local runs), starts from random
initialisation.
"""
from __future__ import annotations

from pathlib import Path

from ..pretrained import WeightsError, mounted_file

AUTO = "auto"


def det_base(variant: str | Path) -> str | None:
    """The ``mmdet::`` config a detector variant inherits (through its own ``_base_`` chain); None
    for a variant that inherits none."""
    from ..variants import base_chain, variant_path

    _files, packages = base_chain(variant_path("det", variant))
    return next((p for p in packages if p.startswith("mmdet::")), None)


def zoo_url(base: str) -> str:
    """The model-zoo checkpoint URL of an mmdet config (``mmdet::dcn/x.py``), from mmdet's metafile."""
    import importlib.util

    import yaml

    # found, not imported: mmdet's __init__ imports mmcv, which the CPU weights kernel does not install
    spec = importlib.util.find_spec("mmdet")
    if spec is None or not spec.origin:
        raise WeightsError("mmdet is not installed: its model-zoo metafiles name the COCO checkpoints")
    rel = base.split("::", 1)[-1]
    meta = Path(spec.origin).parent / ".mim" / "configs" / Path(rel).parent / "metafile.yml"
    if not meta.is_file():
        raise WeightsError(f"mmdet ships no {meta}: no model-zoo checkpoint known for {base}")
    for e in (yaml.safe_load(meta.read_text()) or {}).get("Models") or []:
        if str(e.get("Config", "")).endswith(rel) and e.get("Weights"):
            return str(e["Weights"])
    raise WeightsError(f"{meta}: no Weights entry for {rel}")


def checkpoint_file(variant: str | Path) -> str | None:
    """The model zoo's file name of the variant's COCO checkpoint (None: no mmdet base)."""
    base = det_base(variant)
    return zoo_url(base).rsplit("/", 1)[-1] if base else None


def resolve_weights(weights: str | None, variant: str | Path) -> str | None:
    """``siim.weights``: ``"auto"`` -> the mounted COCO checkpoint of the variant (None when no weights
    kernel output is mounted); anything else as given (a path, or None for random init)."""
    if weights != AUTO:
        return weights or None
    name = checkpoint_file(variant)
    path = mounted_file(name, f"COCO checkpoint of detector {variant}") if name else None
    return str(path) if path else None
