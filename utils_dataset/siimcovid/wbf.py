"""The one Weighted Boxes Fusion wrapper: boxes in original pixels in and out, never exit().

ensemble-boxes 1.0.9 prints and calls ``exit()`` on an unknown ``conf_type`` and on lists of
different lengths (which kills a kernel without a trace), clips boxes outside [0, 1] with a
warning and returns labels as floats. Here those cases raise a clear error first, boxes are
normalised by EACH image's own size, and fusion runs in two levels (the folds of one model,
then the models), the 1st place's way; per-model score scaling happens before the second level.

With ``conf_type='avg'`` the library scales a cluster's score by min(n_lists, n_boxes) /
sum(weights): a box only one of N lists found keeps 1/N of its score. Fusing flips and folds
in one call therefore down-weights boxes few of them found; that is WBF's design, and the
reason the levels are kept apart.

A prediction is an (N, 5) array ``[x0, y0, x1, y1, score]`` in original pixels of one image.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import UserError
from .submission import as_pred_boxes as as_pred  # noqa: F401  (the one (N, 5) check; re-exported)

CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


@dataclass(frozen=True)
class WBFParams:
    iou_thr: float = 0.6
    skip_box_thr: float = 0.0001
    conf_type: str = "avg"

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "WBFParams":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"unknown WBF keys {sorted(unknown)}: valid {sorted(cls.__dataclass_fields__)}")
        p = cls(**d)
        p.check()
        return p

    def check(self) -> None:
        if self.conf_type not in CONF_TYPES:
            raise UserError(f"WBF conf_type {self.conf_type!r}: use one of {list(CONF_TYPES)}")
        if not 0.0 < float(self.iou_thr) <= 1.0:
            raise UserError(f"WBF iou_thr={self.iou_thr}: use a value in (0, 1]")
        if not 0.0 <= float(self.skip_box_thr) < 1.0:
            raise UserError(f"WBF skip_box_thr={self.skip_box_thr}: use a value in [0, 1)")

    def as_dict(self) -> dict:
        return asdict(self)


def fuse(lists: Sequence, height: float, width: float, weights: Sequence[float] | None = None,
         iou_thr: float = 0.6, skip_box_thr: float = 0.0001, conf_type: str = "avg") -> np.ndarray:
    """WBF of several predictions of ONE image (each (N, 5), original px) -> (M, 5), original px,
    sorted by score. Empty lists take part (they lower ``avg`` scores as the library intends)."""
    from ensemble_boxes import weighted_boxes_fusion

    params = WBFParams(float(iou_thr), float(skip_box_thr), conf_type)
    params.check()
    preds = [as_pred(p) for p in lists]
    if weights is not None and len(weights) != len(preds):
        raise ValueError(f"{len(weights)} weights for {len(preds)} prediction lists")
    if not height or not width or height <= 0 or width <= 0:
        raise ValueError(f"image size {height} x {width}: need positive height and width to normalise")
    if not preds or all(len(p) == 0 for p in preds):
        return np.zeros((0, 5))
    scale = np.array([width, height, width, height], dtype=np.float64)
    boxes, scores, labels = [], [], []
    for p in preds:
        b = (p[:, :4] / scale).clip(0.0, 1.0)
        # zero-area boxes would be dropped by the library with a warning; drop them here quietly
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        boxes.append(b[ok].tolist())
        scores.append(p[ok, 4].tolist())
        labels.append([0] * int(ok.sum()))
    fb, fs, _ = weighted_boxes_fusion(boxes, scores, labels, weights=None if weights is None else list(weights),
                                      iou_thr=params.iou_thr, skip_box_thr=params.skip_box_thr,
                                      conf_type=params.conf_type)
    if len(fb) == 0:
        return np.zeros((0, 5))
    out = np.concatenate([np.asarray(fb) * scale, np.asarray(fs)[:, None]], axis=1)
    return out[np.argsort(-out[:, 4], kind="stable")]


def scale_scores(pred, factor: float) -> np.ndarray:
    p = as_pred(pred).copy()
    p[:, 4] = (p[:, 4] * float(factor)).clip(0.0, 1.0)
    return p


def fuse_two_level(members: Mapping[str, Sequence], height: float, width: float, *,
                   model_weights: Mapping[str, float] | None = None,
                   score_scale: Mapping[str, float] | None = None,
                   folds: Mapping | WBFParams | None = None, models: Mapping | WBFParams | None = None) -> np.ndarray:
    """``members``: model name -> its fold predictions for this image (each (N, 5), original px).

    Level 1 fuses each model's folds (equal weights); the result's scores are multiplied by
    ``score_scale[model]``; level 2 fuses the models with ``model_weights``. ``folds`` / ``models``
    are the WBF parameters of each level (dicts or :class:`WBFParams`)."""
    p1 = folds if isinstance(folds, WBFParams) else WBFParams.from_dict(folds)
    p2 = models if isinstance(models, WBFParams) else WBFParams.from_dict(models)
    names = list(members)
    if not names:
        return np.zeros((0, 5))
    unknown = (set(model_weights or {}) | set(score_scale or {})) - set(names)
    if unknown:
        raise ValueError(f"weights/score_scale name models {sorted(unknown)} not among {names}")
    per_model = []
    for name in names:
        fold_preds = list(members[name])
        fused = fuse(fold_preds, height, width, **p1.as_dict()) if len(fold_preds) > 1 else \
            (as_pred(fold_preds[0]) if fold_preds else np.zeros((0, 5)))
        per_model.append(scale_scores(fused, (score_scale or {}).get(name, 1.0)))
    if len(per_model) == 1:
        return per_model[0][np.argsort(-per_model[0][:, 4], kind="stable")]
    weights = [float((model_weights or {}).get(n, 1.0)) for n in names]
    return fuse(per_model, height, width, weights=weights, **p2.as_dict())


def flip_boxes(pred, height: float, width: float, hflip: bool = False, vflip: bool = False) -> np.ndarray:
    """Boxes predicted on a flipped image -> the unflipped image's frame (the same call undoes it)."""
    p = as_pred(pred).copy()
    if hflip:
        p[:, [0, 2]] = width - p[:, [2, 0]]
    if vflip:
        p[:, [1, 3]] = height - p[:, [3, 1]]
    return p
