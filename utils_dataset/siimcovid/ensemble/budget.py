"""Will the ensemble fit in the 9-hour inference limit? Time per image per member, projected.

The inference kernel times each member on a few test images (after a warm-up call, which pays
for building the model) BEFORE predicting the whole set, and prints the projection for the
hidden test set (about the size of train: 6334 images in 6054 studies) against the limit.
``kaggle plan --budget FILE`` (siimcovid.kaggle) reads the same figures per stage
(:func:`stage_budget`) to warn before anything is pushed. Beside each timing it prints what the
cost model (:mod:`siimcovid.costs`, the one ``kaggle plan`` projects with) expects of that member on
a T4, so a run on Kaggle's GPU calibrates the model (docs/costs.md).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..costs import (HIDDEN_TEST_IMAGES, HIDDEN_TEST_STUDIES, INFERENCE_LIMIT_H, INFERENCE_MARGIN,
                     variant_seconds_per_image)

LIMIT_S = INFERENCE_LIMIT_H * 3600.0
MARGIN = 1.0 - INFERENCE_MARGIN  # plan for 70 % of the limit, as kaggle plan does (siimcovid.costs)


@dataclass
class Timing:
    """One member's cost: ``seconds_per_image`` for ONE fold / model on one image, TTA included,
    times ``units`` (its folds) gives the member's cost per image."""
    name: str
    kind: str
    seconds_per_image: float
    units: int = 1
    n_timed: int = 0
    load_s: float = 0.0  # once per fold (model build, weights), whatever the number of images

    @property
    def per_image(self) -> float:
        return self.seconds_per_image * self.units

    def total(self, n_images: int) -> float:
        return (self.load_s + self.seconds_per_image * n_images) * self.units


def time_call(fn: Callable[[Sequence], Any], items: Sequence, *, warmup: int = 1) -> tuple[float, int]:
    """Seconds per item of ``fn(items)``, after ``fn`` ran once on the first ``warmup`` items
    (model build, graph tracing, first-batch costs are not per image). -> (s/item, items timed)."""
    items = list(items)
    if not items:
        return 0.0, 0
    if warmup:
        fn(items[:warmup])
    timed = items[warmup:] or items
    t0 = time.perf_counter()
    fn(timed)
    return (time.perf_counter() - t0) / len(timed), len(timed)


@dataclass
class Projection:
    n_images: int
    limit_s: float
    margin: float
    overhead_s: float
    members: list = field(default_factory=list)
    total_s: float = 0.0

    @property
    def fits(self) -> bool:
        return self.total_s <= self.margin * self.limit_s

    def as_dict(self) -> dict:
        return {**asdict(self), "fits": self.fits}

    def lines(self) -> list[str]:
        out = [f"budget: projected {self.total_s / 3600:.2f} h for {self.n_images} test images "
               f"(limit {self.limit_s / 3600:.0f} h, planning margin {self.margin:.0%}: "
               f"{'fits' if self.fits else 'DOES NOT FIT'})"]
        for m in sorted(self.members, key=lambda m: -m["total_s"]):
            model = m.get("model_s_per_image")
            out.append(f"  {m['kind']:<10} {m['name']:<28} {m['seconds_per_image']:8.3f} s/image "
                       f"+ {m['load_s']:5.1f} s load, x {m['units']} fold(s) -> {m['total_s'] / 3600:6.2f} h"
                       + (f"  (cost model, T4: {model:.3f} s/image)" if model is not None else ""))
        if self.overhead_s:
            out.append(f"  {'overhead':<10} {'(preprocess, merge, write)':<28} -> {self.overhead_s / 3600:6.2f} h")
        return out


def project(timings: Sequence[Timing], *, n_images: int = HIDDEN_TEST_IMAGES, overhead_s: float = 0.0,
            overhead_per_image: float = 0.0, limit_s: float = LIMIT_S, margin: float = MARGIN) -> Projection:
    """Total projected time: every member's per-image cost x ``n_images``, plus overheads
    (``overhead_per_image``: e.g. DICOM decoding, measured by the test preprocess)."""
    p = Projection(n_images, limit_s, margin, overhead_s + overhead_per_image * n_images)
    for t in timings:
        total = t.total(n_images)
        p.members.append({"name": t.name, "kind": t.kind, "seconds_per_image": t.seconds_per_image,
                          "load_s": t.load_s, "units": t.units, "n_timed": t.n_timed, "total_s": total,
                          "model_s_per_image": variant_seconds_per_image(t.name)})
        p.total_s += total
    p.total_s += p.overhead_s
    return p


def warn_if_over(p: Projection, log=None) -> bool:
    """Print the projection; a loud warning when it does not fit. -> fits."""
    import sys

    lines = p.lines()
    if not p.fits:
        lines.append(f"WARNING budget: this ensemble is projected at {p.total_s / 3600:.1f} h, above "
                     f"{p.margin:.0%} of the {p.limit_s / 3600:.0f} h limit: drop members or TTA before submitting")
    for line in lines:
        if log is None:
            print(line, file=sys.stderr)
        else:
            (log.warning if line.startswith("WARNING") else log.info)(line)
    return p.fits


# Kind of member -> the kernel-graph stage (kernel-metadata/<template>.json) whose kernels produce it.
STAGE_OF_KIND = {"study": "train-study-fold", "binary": "train-binary-fold", "detect": "train-det-fold"}


def stage_budget(timings: Sequence[Timing]) -> dict[str, float]:
    """{stage: seconds per test image per kernel}, the shape ``kaggle plan --budget`` reads
    (``orchestrate.graph.budget_warnings``: every upstream kernel of a stage counts once). One
    kernel = one fold, so the figure is a fold's cost; the slowest member of a stage is taken."""
    out: dict[str, float] = {}
    for t in timings:
        stage = STAGE_OF_KIND.get(t.kind, t.kind)
        out[stage] = max(out.get(stage, 0.0), float(t.seconds_per_image))
    return out


def write_budget(path: str | Path, timings: Sequence[Timing], projection: Projection | None = None) -> Path:
    """``budget.json``: the per-stage figures for ``kaggle plan --budget`` + the measured detail."""
    path = Path(path)
    data = stage_budget(timings)
    detail = {"timings": [asdict(t) for t in timings], "projection": projection.as_dict() if projection else None}
    path.write_text(json.dumps(data, indent=1) + "\n")
    path.with_name(path.stem + "_detail.json").write_text(json.dumps(detail, indent=1, default=float) + "\n")
    return path


def read_budget(path: str | Path) -> Mapping[str, float]:
    return json.loads(Path(path).read_text())
