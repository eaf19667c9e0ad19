"""The project metric's partial scores on prediction tables, through ``siimcovid.metric``: the
one scorer of the merges, the ensemble's fit and the stages' validation metrics.

Fitting a merge calls the APs thousands of times, so the matching (which detection is a true
positive) is done ONCE with ``metric.match_detections`` and each call only re-ranks and runs the
metric's own ``precision_recall`` + ``voc_ap``. That is exact as long as a call changes scores
without changing their order inside a row:

- study classes and ``none``: one full-box detection per row, a true positive exactly when the
  row holds that class, whatever its confidence (:class:`FullBoxAP`);
- opacity: boxes re-scored as ``conf ** a * m[image]`` with ``a > 0`` and ``m >= 0`` keep their
  order inside an image, and greedy matching inside a row depends only on that order
  (:class:`OpacityAP`). Every merge rule of :mod:`siimcovid.ensemble.rules` re-scores boxes this way.

Tests check both against ``metric.average_precision`` on the same inputs.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from .data import STUDY_CLASSES
from .metric import combine_partials, match_detections, nanmean, precision_recall, voc_ap
from .submission import FULL_BOX


def _ranked_ap(scores: np.ndarray, tp: np.ndarray, n_truth: int) -> float:
    if n_truth == 0:
        return math.nan
    order = np.argsort(-scores, kind="stable")  # metric.match_detections' ranking
    recall, precision = precision_recall(scores[order], tp[order], n_truth)
    return voc_ap(recall, precision)


class FullBoxAP:
    """AP of a class scored with one full-box detection per row: ``FullBoxAP(is_true)(scores)``
    equals ``metric.average_precision`` of ``(row, score, 0, 0, 1, 1)`` detections against the
    full box in every row where ``is_true``."""

    def __init__(self, is_true: Sequence[bool]):
        truth = np.asarray(is_true, dtype=bool)
        self.n = len(truth)
        self.n_truth = int(truth.sum())
        truths = {k: [FULL_BOX] for k in np.flatnonzero(truth)}
        dets = [(k, 0.0, *FULL_BOX) for k in range(self.n)]
        _, tp_sorted = match_detections(dets, truths)  # all scores equal: sorted order = input order
        self.tp = np.asarray(tp_sorted, dtype=bool)

    def __call__(self, scores: Sequence[float]) -> float:
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != (self.n,):
            raise ValueError(f"FullBoxAP: {self.n} rows but scores of shape {s.shape}")
        return _ranked_ap(s, self.tp, self.n_truth)


class StudyMAP:
    """``StudyMAP(labels)(probs)`` -> per-class AP and ``map`` of (N, 4) study probabilities
    (columns in ``STUDY_CLASSES`` order), labels = class index per study."""

    def __init__(self, labels: Sequence[int]):
        labels = np.asarray(labels, dtype=int)
        self.n = len(labels)
        self.classes = [FullBoxAP(labels == k) for k in range(len(STUDY_CLASSES))]

    def __call__(self, probs) -> dict[str, float]:
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != (self.n, len(STUDY_CLASSES)):
            raise ValueError(f"StudyMAP: {self.n} studies but probabilities of shape {p.shape}")
        ap = {c: f(p[:, k]) for k, (c, f) in enumerate(zip(STUDY_CLASSES, self.classes))}
        ap["map"] = nanmean([ap[c] for c in STUDY_CLASSES])
        return ap


class OpacityAP:
    """Opacity AP of per-image boxes re-scored as ``conf ** a * m[image]``.

    ``boxes``: one (N, 5) array [x0, y0, x1, y1, score] per image (original pixels);
    ``truth``: per image its (M, 4) opacity boxes (original pixels, empty for none)."""

    def __init__(self, boxes: Sequence[np.ndarray], truth: Sequence[Iterable]):
        if len(boxes) != len(truth):
            raise ValueError(f"OpacityAP: {len(boxes)} prediction rows but {len(truth)} truth rows")
        self.n_images = len(boxes)
        img, conf, dets = [], [], []
        for i, b in enumerate(boxes):
            b = np.asarray(b, dtype=np.float64).reshape(-1, 5)
            b = b[np.argsort(-b[:, 4], kind="stable")]  # best first inside the image
            for row in b:
                dets.append((i, float(row[4]), *map(float, row[:4])))
                img.append(i)
                conf.append(float(row[4]))
        truths = {i: np.asarray(t, dtype=np.float64).reshape(-1, 4) for i, t in enumerate(truth) if len(t)}
        self.n_truth = int(sum(len(t) for t in truths.values()))
        self.img = np.asarray(img, dtype=int)
        self.conf = np.asarray(conf, dtype=np.float64)
        _, tp_sorted = match_detections(dets, truths)
        order = np.argsort(-self.conf, kind="stable")
        self.tp = np.zeros(len(dets), dtype=bool)
        self.tp[order] = tp_sorted

    def scores(self, a: float = 1.0, mult: Sequence[float] | None = None) -> np.ndarray:
        if a <= 0:
            raise ValueError(f"OpacityAP: exponent a={a} must be > 0 (a <= 0 reorders boxes inside an image)")
        s = np.power(np.clip(self.conf, 0.0, 1.0), float(a))
        if mult is not None:
            m = np.asarray(mult, dtype=np.float64)
            if m.shape != (self.n_images,) or (m < 0).any():
                raise ValueError(f"OpacityAP: multipliers must be {self.n_images} values >= 0, got shape {m.shape}")
            s = s * m[self.img]
        return s

    def __call__(self, a: float = 1.0, mult: Sequence[float] | None = None) -> float:
        return _ranked_ap(self.scores(a, mult), self.tp, self.n_truth)


def final(study_map: float, opacity_ap: float, none_ap: float) -> float:
    """(4 x study mAP + opacity AP + none AP) / 6 (``metric.combine_partials``); NaN when a part is."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (study_map, opacity_ap, none_ap)):
        return math.nan
    return combine_partials(study_map, opacity_ap, none_ap)


def none_ap(none: Sequence[float], has_box: Sequence[bool]) -> float:
    """`none` AP of per-image P(none) (truth: the image has no opacity box)."""
    return FullBoxAP(~np.asarray(has_box, dtype=bool))(none)


def opacity_ap(boxes: Sequence[np.ndarray], truth: Sequence[Iterable]) -> float:
    return OpacityAP(boxes, truth)()


def study_map(probs, labels: Sequence[int]) -> dict[str, float]:
    return StudyMAP(labels)(probs)


def truth_lookup(meta_rows: Mapping[str, Iterable], ids: Sequence[str]) -> list[list]:
    """Per id its truth boxes ([] when the id is unknown or has none)."""
    return [list(meta_rows.get(i, []) or []) for i in ids]
