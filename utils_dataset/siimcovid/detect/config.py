"""Detector configs: mmdet's own config, the project layer, the variant, then ``--set`` overrides.

A variant (``siimcovid/configs/det/<name>.py``) names mmdet's config (``_base_ = 'mmdet::...'``) or
another variant of ours as its ``_base_``. The layers, last wins:

1. mmdet's config (with its own ``_base_`` chain, read by mmengine);
2. ``configs/det/_base_/siim.py``: each of its top-level keys REPLACES mmdet's (dataset, pipelines,
   schedule, hooks), ``siim`` holds the project keys (size, fold, weights, TTA, WBF, rounds);
3. the variant files of the chain, root first, each merged key by key (mmengine's merge: dicts
   merge, lists and other values replace, ``_delete_=True`` replaces a dict);
4. ``--set key.sub=value`` overrides (values parsed as YAML; a path the config lacks is an error).

Finding a variant, its ``_base_`` chain, each file's own keys, the ``--set`` parsing and the check
of override paths are :mod:`siimcovid.variants`'; this module keeps what is mmdet's: the model-zoo
base, the layering above, the single-class check and :func:`prepare`.

Then :func:`prepare` fills what follows from the ``siim`` keys (image size into the pipelines,
the COCO file paths, workers, AMP, weights, the cosine's length), so each is set in one place.
"""
from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import variants as V
from ..errors import UserError

STAGE = "det"  # the variants live in configs/det/
CONFIG_DIR = V.stage_dir(STAGE)
PROJECT_BASE = CONFIG_DIR / "_base_" / "siim.py"
DEFAULT_VARIANT = "faster_rcnn_r50_dcn"
TINY_VARIANT = "tiny_cpu"
MMDET = "mmdet::"


def variants() -> list[str]:
    return V.list_variants(STAGE)


def _mmdet_config(name: str) -> Path:
    import mmdet

    path = Path(mmdet.__file__).parent / ".mim" / "configs" / name
    if not path.exists():
        raise UserError(f"mmdet has no config {name!r} (looked in {path.parent})")
    return path


def _chain(path: Path) -> tuple[Path, list[Path]]:
    """(mmdet's config, the variant files root first). The project layer goes between mmdet's
    config and ours, so the chain must be a line ending in one mmdet config."""
    files, packages = V.base_chain(path)
    for f in reversed(files):  # the variant itself first: the error names the file the user wrote
        bases = V.base_files(f)
        if not bases:
            raise UserError(f"{f}: no _base_ (name mmdet's config, e.g. 'mmdet::dcn/...', or another variant)")
        if len(bases) > 1:
            raise UserError(f"{f}: a detector variant takes ONE _base_ (mmdet's config or another variant)")
    if not packages[0].startswith(MMDET):
        raise UserError(f"{files[0]}: _base_ {packages[0]!r}: a detector variant builds on an {MMDET} config")
    return _mmdet_config(packages[0][len(MMDET):]), files


def load(variant: str | Path | None = None, overrides: Iterable[str] | Mapping[str, Any] | None = None):
    """The mmengine Config of a variant with the project layer and overrides applied (see module doc)."""
    from mmengine.config import Config

    path = V.variant_path(STAGE, variant or DEFAULT_VARIANT)
    mm_path, chain = _chain(path)
    cfg = Config.fromfile(str(mm_path))
    project = V.own_keys(PROJECT_BASE)
    for key, value in project.items():
        if key == "siim":
            continue
        cfg[key] = copy.deepcopy(value)
    siim = copy.deepcopy(project["siim"])
    for file in chain:
        own = V.own_keys(file)
        siim.update(own.pop("siim", {}) or {})
        cfg.merge_from_dict(own)
    cfg["siim"] = siim
    cfg["siim"]["variant"] = path.stem
    cfg["siim"]["variant_file"] = str(path)  # where siim.weights="auto" looks up the mmdet base
    sets = V.tree_overrides(overrides)
    V.check_paths(cfg, sets)
    cfg.merge_from_dict(sets)
    check_single_class(cfg)
    return cfg


def _num_classes(node: Any, where: str = "model") -> list[tuple[str, int]]:
    found = []
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k == "num_classes":
                found.append((f"{where}.{k}", v))
            else:
                found += _num_classes(v, f"{where}.{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            found += _num_classes(v, f"{where}[{i}]")
    return found


def check_single_class(cfg) -> None:
    """Every head predicts the one class `opacity` (Cascade has three heads, each must say so)."""
    wrong = [(k, v) for k, v in _num_classes(cfg.model) if v != 1]
    if wrong:
        raise UserError(f"config {cfg.siim.get('variant')}: heads not single-class: {wrong}; set num_classes=1")


def _set_resize(pipeline: list, size: int) -> None:
    for step in pipeline or []:
        if step.get("type") in ("Resize", "mmdet.Resize"):
            step["scale"] = (size, size)
            step["keep_ratio"] = False


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


_RUNS = itertools.count()


def prepare(cfg, run_dir: str | Path, train_json: str | Path | None = None):
    """Fill the run-specific fields from ``cfg.siim`` (in place; returns cfg)."""
    s = cfg.siim
    size = int(s["size"])
    for key in ("train_pipeline", "test_pipeline"):
        _set_resize(cfg.get(key), size)
    ds = cfg.train_dataloader.dataset
    _set_resize(ds.get("pipeline"), size)
    ds.ann_file = str(train_json) if train_json else ""
    workers = int(s.get("workers", 0))
    cfg.train_dataloader.num_workers = workers
    cfg.train_dataloader.persistent_workers = workers > 0
    cfg.work_dir = str(run_dir)
    # mmdet's runtime names its visualizer 'visualizer', a process-wide instance: the second run of one
    # process (the next fold of a kernel) would log its scalars into the first run's folder
    if cfg.get("visualizer") is not None:
        cfg.visualizer.name = f"visualizer:{Path(run_dir).resolve()}:{next(_RUNS)}"
    cfg.randomness = dict(seed=int(s.get("seed", 42)), deterministic=False)
    amp = s.get("amp", "auto")
    if (amp == "auto" and cuda_available()) or amp is True:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    epochs = int(cfg.train_cfg.max_epochs)
    for sch in cfg.param_scheduler:
        if sch.get("type") == "CosineAnnealingLR" and sch.get("by_epoch", True):
            sch["end"] = epochs
            sch["T_max"] = epochs
    # No downloads on Kaggle (internet off): weights come from files or nowhere.
    backbone = cfg.model.get("backbone", {})
    if s.get("backbone_weights"):
        backbone["init_cfg"] = dict(type="Pretrained", checkpoint=str(s["backbone_weights"]))
    else:
        backbone["init_cfg"] = None
    from ..pretrain.outputs import find_init
    from .zoo import resolve_weights

    s["weights"] = resolve_weights(s.get("weights"), s.get("variant_file") or s.get("variant"))
    init = find_init(s.get("init_from"), "pretrain-det", match={"variant": s.get("variant")},
                     what=f"detector {s.get('variant')}")
    cfg.load_from = str(init.path) if init else s["weights"]
    s["init_weights"] = cfg.load_from
    # from random init (or from weights a from-scratch pre-training wrote) every stage trains and BN learns
    # (a bare .pth given as init_from is taken as trained weights)
    if (init.from_scratch if init else not (s["weights"] or s.get("backbone_weights"))):
        train_from_scratch(backbone)
    return cfg


# Backbones whose constructors take frozen_stages / norm_eval (mmdet's ResNet family, Darknet, CSPDarknet, CSPNeXt).
_SCRATCH_BACKBONES = {"ResNet", "ResNetV1d", "ResNeXt", "Res2Net", "Darknet", "CSPDarknet", "CSPNeXt", "mmdet.ResNet",
                      "mmdet.Darknet", "mmdet.CSPDarknet", "mmdet.CSPNeXt"}


def train_from_scratch(backbone: dict) -> bool:
    """mmdet's configs assume ImageNet weights: the stem and first stage frozen (frozen_stages=1) and
    BatchNorm kept in eval mode (norm_eval=True). From random init that freezes random filters and
    leaves BN normalising with its initial statistics forever, so, as mmdet's own scratch configs do,
    every stage trains and BN learns its statistics. Returns whether the backbone was changed."""
    if backbone.get("type") not in _SCRATCH_BACKBONES:
        return False
    backbone["frozen_stages"] = -1
    backbone["norm_eval"] = False
    return True
