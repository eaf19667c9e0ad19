"""Ensemble weights on the simplex (>= 0, summing to 1): the one local search the binary member
ensemble and the inference merge both fit with."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def refine(score: Callable[[np.ndarray], float], start: np.ndarray, start_score: float,
           steps: Sequence[float], project: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, float]:
    """Move ``step`` of weight from member j to member i while that raises ``score``, for each step
    size in turn (coarse to fine) -> (weights, score). Deterministic: members visited in order,
    an improvement must beat the best by more than 1e-12."""
    best, s_best = np.asarray(start, dtype=np.float64).copy(), float(start_score)
    m = len(best)
    for step in steps:
        improved = True
        while improved:
            improved = False
            for i in range(m):
                for j in range(m):
                    if i == j or best[j] <= 0:
                        continue
                    w = best.copy()
                    d = min(step, w[j])
                    w[i] += d
                    w[j] -= d
                    if project is not None:
                        w = project(w)
                    s = float(score(w))
                    if s > s_best + 1e-12:
                        best, s_best, improved = w, s, True
    return best, s_best


def normalize(w: np.ndarray) -> np.ndarray:
    """Weights clipped at 0 and rescaled to sum 1 (a move's rounding drift taken out)."""
    w = np.clip(w, 0.0, None)
    return w / w.sum()
