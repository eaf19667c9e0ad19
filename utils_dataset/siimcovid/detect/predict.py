"""Detector prediction: flip TTA fused with WBF, boxes back in ORIGINAL pixels, and the AP figures.

The rows it predicts are those of a detector prediction table (``image_id, orig_h, orig_w, boxes,
boxes_notta``: ``boxes`` with TTA, ``boxes_notta`` the plain image, ``[x0, y0, x1, y1, score]`` in
the image's original pixels, best first); :mod:`siimcovid.tables` writes and reads them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..boxes import Resize
from .. import scoring
from ..tables import DET_COLUMNS
from ..wbf import as_pred, flip_boxes, fuse

NONE_RULES = ("max", "prod")


# ------------------------------------------------------------------------------------ model
def load_model(cfg, checkpoint: str | Path, device: str = "cpu"):
    """The detector of ``cfg`` with weights from ``checkpoint`` (the run's plain-tensor model.pth)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.runner import load_checkpoint

    register_all_modules()
    cfg = cfg.copy()
    cfg.model.get("backbone", {})["init_cfg"] = None  # weights come from the checkpoint
    model = MODELS.build(cfg.model)
    load_checkpoint(model, str(checkpoint), map_location="cpu", strict=True, logger="silent")
    model.cfg = cfg
    model.dataset_meta = {"classes": ("opacity",)}
    model.to(device).eval()
    return model


def _pipeline(cfg):
    from mmcv.transforms import Compose

    steps = [dict(s) for s in cfg.test_pipeline]
    steps[0] = dict(type="mmdet.LoadImageFromNDArray")
    return Compose(steps)


def infer(model, images: Sequence[np.ndarray], batch: int = 8) -> list[np.ndarray]:
    """Raw detections per image, (N, 5) in that image's own pixels."""
    import torch
    from mmengine.dataset import pseudo_collate

    pipe = _pipeline(model.cfg)
    out: list[np.ndarray] = []
    for i in range(0, len(images), max(1, int(batch))):
        data = pseudo_collate([pipe(dict(img=img, img_id=i + j)) for j, img in enumerate(images[i:i + batch])])
        with torch.no_grad():
            results = model.test_step(data)
        for r in results:
            inst = r.pred_instances
            b = inst.bboxes.detach().cpu().numpy().astype(np.float64)
            s = inst.scores.detach().cpu().numpy().astype(np.float64)
            out.append(np.c_[b, s] if len(b) else np.zeros((0, 5)))
    return out


def flips(tta: dict) -> list[tuple[bool, bool]]:
    """(hflip, vflip) of each TTA view; the plain image first."""
    views = [(False, False)]
    if tta.get("hflip", True):
        views.append((True, False))
    if tta.get("vflip", False):
        views.append((False, True))
    return views


def predict_images(model, meta_rows: pd.DataFrame, size: int, *, tta: dict, wbf: dict, batch: int = 8,
                   progress: bool = True) -> list[dict]:
    """Prediction rows (see module doc) for ``meta_rows`` (with ``path``, orig_h/w, keep_aspect)."""
    import cv2
    from tqdm.auto import tqdm

    views = flips(tta)
    rows = []
    chunk = max(1, int(batch))
    it = range(0, len(meta_rows), chunk)
    for start in tqdm(it, desc="predict", disable=not progress, total=len(it)):
        part = meta_rows.iloc[start:start + chunk]
        imgs = []
        for p in part["path"]:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise FileNotFoundError(f"{p}: cannot read image")
            imgs.append(img)
        per_view = []
        for hf, vf in views:
            view_imgs = [np.ascontiguousarray(im[::-1 if vf else 1, ::-1 if hf else 1]) for im in imgs]
            preds = infer(model, view_imgs, batch=chunk)
            per_view.append([flip_boxes(p, im.shape[0], im.shape[1], hf, vf) for p, im in zip(preds, imgs)])
        for k, r in enumerate(part.itertuples(index=False)):
            h, w = int(r.orig_h), int(r.orig_w)
            plan = Resize.plan(h, w, (imgs[k].shape[0], imgs[k].shape[1]), bool(getattr(r, "keep_aspect", False)))
            views_orig = [np.c_[plan.to_original(v[k][:, :4]), v[k][:, 4]] for v in per_view]
            plain = views_orig[0][np.argsort(-views_orig[0][:, 4], kind="stable")]
            fused = fuse(views_orig, h, w, **wbf) if len(views_orig) > 1 else plain
            rows.append({"image_id": r.image_id, "orig_h": h, "orig_w": w, "boxes": fused, "boxes_notta": plain})
    return rows


# ------------------------------------------------------------------------------------ figures
def none_score(pred, rule: str = "max") -> float:
    """P(no opacity) from boxes: 1 - max score, or the product of (1 - score)."""
    s = as_pred(pred)[:, 4]
    if rule == "max":
        return float(1.0 - s.max()) if len(s) else 1.0
    if rule == "prod":
        return float(np.prod(1.0 - s))
    raise ValueError(f"none rule {rule!r}: use one of {NONE_RULES}")


def opacity_ap(preds: pd.DataFrame, truth: dict[str, Iterable], column: str = "boxes") -> float:
    """Project metric's opacity AP over every image of ``preds`` (truth: image_id -> original-px
    boxes), through ``siimcovid.scoring``."""
    return scoring.opacity_ap(list(preds[column]), [truth.get(i, []) for i in preds["image_id"]])


def none_ap(preds: pd.DataFrame, truth: dict[str, Iterable], column: str = "boxes", rule: str = "max") -> float:
    """AP of the `none` class when its score is derived from the boxes (``rule``)."""
    has_box = np.array([len(truth.get(i, [])) > 0 for i in preds["image_id"]], dtype=bool)
    return scoring.none_ap([none_score(p, rule) for p in preds[column]], has_box)


def figures(preds: pd.DataFrame, truth: dict[str, Iterable]) -> dict:
    """Opacity AP and `none` AP (both rules), with and without TTA."""
    out = {"n_images": int(len(preds)), "n_truth_boxes": int(sum(len(truth.get(i, [])) for i in preds["image_id"]))}
    for col, tag in (("boxes", "tta"), ("boxes_notta", "notta")):
        out[f"opacity_ap_{tag}"] = opacity_ap(preds, truth, col)
        for rule in NONE_RULES:
            out[f"none_ap_{rule}_{tag}"] = none_ap(preds, truth, col, rule)
    return out


def predict_folds(fold_dirs: Sequence[Path], pre_test: Path, *, device: str | None = None,
                  batch_size: int | None = None, progress: bool = True) -> tuple[list[pd.DataFrame], dict]:
    """The inference kernel's detector members: each fold's ``model.pth`` with its resolved mmdet
    config, flip TTA fused with WBF as the fold was trained to, boxes in original pixels.
    -> (one table per fold that predicted: image_id, orig_h, orig_w, boxes, boxes_notta; info with
    each fold's status, ``used`` and ``skipped``). A fold that cannot predict is skipped and recorded."""
    import time

    from mmengine.config import Config

    from ..errors import reraise_interrupts
    from ..layout import read_meta
    from ..runs import MODEL_PTH, FoldReport, read_config, src_size

    tables, report = [], FoldReport("detector")
    device = device or _torch_device()
    for d in fold_dirs:
        t0 = time.time()
        try:
            resolved = read_config(d)
            cfg = Config(resolved["mmdet_config"])
            s = resolved.get("siim") or dict(cfg.get("siim", {}))
            size = src_size(d)
            if not size:
                raise ValueError(f"{d}: its config.json records no src_size nor siim.size")
            meta = read_meta(pre_test, size, split="test")
            model = load_model(cfg, Path(d) / MODEL_PTH, device=device)
            rows = predict_images(model, meta, size, tta=dict(s.get("tta", {"hflip": True})), wbf=dict(s.get("wbf", {})),
                                  batch=int(batch_size or s.get("predict_batch", 8)), progress=progress)
        except BaseException as exc:  # noqa: BLE001 - one fold that cannot predict never stops the kernel
            reraise_interrupts(exc)
            report.skipped(d, exc)
            continue
        tables.append(pd.DataFrame(rows, columns=DET_COLUMNS))
        report.used(d, len(rows), time.time() - t0)
    return tables, report.info


def _torch_device() -> str:
    from ..accelerator import torch_device

    return torch_device()
