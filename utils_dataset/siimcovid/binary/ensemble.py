"""The OOF `none` AP, and member weights fitted on it.

The competition scores ``none`` like any class: each image's ``none`` confidence is a detection
of the full box 0 0 1 1 and an image without opacity holds the full box as its one ground truth
(``siimcovid.metric``). :func:`none_ap` is exactly that, through ``metric.average_precision``.

Fitting calls the AP thousands of times, so :class:`NoneAP` matches the detections ONCE with
``metric.match_detections`` (with one full-box detection per image, whether an image's
detection is a true positive does not depend on its confidence) and per call only re-ranks and
runs the metric's own ``precision_recall`` + ``voc_ap``; a test checks it equals :func:`none_ap`.

Weights (:func:`fit_weights`): non-negative, summing to 1, maximising the OOF AP, found by a
seeded Dirichlet random search over the simplex (plus equal weights and every single member)
refined by pairwise coordinate moves with shrinking steps; deterministic for a seed. The AP is a
step function of the weights and an OOF-fitted optimum is optimistic, so the fitted weights are
kept only when they beat equal weights by ``margin``; otherwise equal weights are used.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..metric import average_precision, match_detections, precision_recall, voc_ap
from ..submission import FULL_BOX


def _check(image_ids: Sequence, has_box: Sequence[int]) -> tuple[list, np.ndarray]:
    ids = list(image_ids)
    has = np.asarray(has_box, dtype=int)
    if len(ids) != len(has):
        raise ValueError(f"none AP: {len(ids)} ids but {len(has)} labels")
    if len(set(ids)) != len(ids):
        raise ValueError("none AP: image ids repeat (merge each image's predictions first)")
    if not np.isin(has, (0, 1)).all():
        raise ValueError("none AP: has_box must be 0 or 1 (test images have no truth)")
    return ids, has


def none_ap(image_ids: Sequence, p_none: Sequence[float], has_box: Sequence[int]) -> float:
    """The competition's `none` AP of per-image P(none) against the images' boxes (NaN when no
    image is box-free)."""
    ids, has = _check(image_ids, has_box)
    p = np.asarray(p_none, dtype=np.float64)
    if p.shape != (len(ids),):
        raise ValueError(f"none AP: {len(ids)} ids but predictions of shape {p.shape}")
    dets = [(i, float(s), *FULL_BOX) for i, s in zip(ids, p)]
    truths = {i: [FULL_BOX] for i, h in zip(ids, has) if h == 0}
    return average_precision(dets, truths)


class NoneAP:
    """``NoneAP(ids, has_box)(p)`` == ``none_ap(ids, p, has_box)``, fast for many calls."""

    def __init__(self, image_ids: Sequence, has_box: Sequence[int]):
        ids, has = _check(image_ids, has_box)
        self.n = len(ids)
        self.n_truth = int((has == 0).sum())
        # Each image has one full-box detection; it matches its image's full-box truth (IoU 1)
        # exactly when the image is box-free, whatever the confidences: match once, with zeros.
        truths = {k: [FULL_BOX] for k, h in enumerate(has) if h == 0}
        _, tp_sorted = match_detections([(k, 0.0, *FULL_BOX) for k in range(self.n)], truths)
        self.tp = np.asarray(tp_sorted, dtype=bool)  # all scores equal: the stable order is the input order

    def __call__(self, p_none: np.ndarray) -> float:
        if self.n_truth == 0:
            return math.nan
        p = np.asarray(p_none, dtype=np.float64)
        order = np.argsort(-p, kind="stable")  # metric.match_detections' ranking
        recall, precision = precision_recall(p[order], self.tp[order], self.n_truth)
        return voc_ap(recall, precision)


def _project(w: np.ndarray) -> np.ndarray:
    w = np.clip(w, 0.0, None)
    return w / w.sum()


def fit_weights(preds: np.ndarray, has_box: Sequence[int], *, margin: float = 0.002, n_random: int = 2000,
                seed: int = 0, steps: Sequence[float] = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005),
                image_ids: Sequence | None = None) -> dict:
    """Member weights for ``preds`` (N images x M members of P(none)).

    Returns ``weights`` (the ones to use), ``method`` ("fitted", "equal" or "single"),
    ``fitted_weights``, ``ap_fitted``, ``ap_equal``, ``ap_members``, ``ap`` (of ``weights``)."""
    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim != 2 or preds.shape[1] == 0:
        raise ValueError(f"fit_weights: predictions must be (images, members), got {preds.shape}")
    n, m = preds.shape
    score = NoneAP(range(n) if image_ids is None else image_ids, has_box)
    equal = np.full(m, 1.0 / m)
    ap_equal = score(preds @ equal)
    ap_members = [score(preds[:, j]) for j in range(m)]
    if m == 1 or math.isnan(ap_equal):
        return {"weights": equal.tolist(), "method": "single" if m == 1 else "equal",
                "fitted_weights": equal.tolist(), "ap": ap_equal, "ap_fitted": ap_equal,
                "ap_equal": ap_equal, "ap_members": ap_members, "margin": margin}

    rng = np.random.default_rng(seed)
    candidates = np.vstack([equal[None], np.eye(m), rng.dirichlet(np.ones(m), size=int(n_random))])
    aps = np.array([score(preds @ w) for w in candidates])
    k = int(np.argmax(aps))  # first best: equal weights win ties, then single members
    best, best_ap = candidates[k].copy(), float(aps[k])

    # Refinement: move `step` of weight from member j to member i while that improves the AP.
    from ..simplex import refine

    best, best_ap = refine(lambda w: score(preds @ w), best, best_ap, steps, project=_project)
    use_fitted = best_ap >= ap_equal + margin
    weights = best if use_fitted else equal
    return {"weights": weights.tolist(), "method": "fitted" if use_fitted else "equal",
            "fitted_weights": best.tolist(), "ap": best_ap if use_fitted else ap_equal, "ap_fitted": best_ap,
            "ap_equal": ap_equal, "ap_members": ap_members, "margin": margin}


def fit_blend(p_a: np.ndarray, p_b: np.ndarray, has_box: Sequence[int], *, grid: int = 101,
              image_ids: Sequence | None = None) -> tuple[float, float]:
    """The weight w in [0, 1] of ``w * p_a + (1 - w) * p_b`` with the best OOF none AP, on an
    even grid (ties: the w nearest 0.5, so a flat curve gives the even blend) -> (w, AP)."""
    p_a, p_b = np.asarray(p_a, np.float64), np.asarray(p_b, np.float64)
    score = NoneAP(range(len(p_a)) if image_ids is None else image_ids, has_box)
    ws = np.linspace(0.0, 1.0, int(grid))
    aps = np.array([score(w * p_a + (1 - w) * p_b) for w in ws])
    best = np.flatnonzero(aps >= np.nanmax(aps) - 1e-12)
    k = best[np.argmin(np.abs(ws[best] - 0.5))]
    return float(ws[k]), float(aps[k])
