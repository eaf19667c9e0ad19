"""Each member kind's test-time predictor, behind one signature, and the budget probe.

``predict(kind, fold_dirs, pre_test, options) -> (fold tables, info)``: the fold tables have the
shape of that stage's own ``test.csv`` (docs/contracts.md), so the merge reads test predictions
made in the kernel exactly like the OOF tables it was fitted on. The stages own their prediction
code; this module only adapts their calls. A fold that cannot predict is skipped and recorded
in ``info``; a kind whose predictor is absent raises :class:`MemberUnavailable` (the caller
reports it and merges the other members).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..layout import read_meta, write_subset
from .budget import Timing


class MemberUnavailable(RuntimeError):
    """No test-time predictor for this kind of member in this package version."""


# ------------------------------------------------------------------------------------ study
def predict_study(fold_dirs: Sequence[Path], pre_test: Path, options: dict) -> tuple[list[pd.DataFrame], dict]:
    """study/predict.py's predict_folds (image rows per fold, ``source`` = the fold folder)."""
    try:
        from ..study.predict import predict_folds
    except ImportError as exc:
        raise MemberUnavailable(f"study members: siimcovid.study.predict.predict_folds is not in this package ({exc})"
                                ) from None
    allp, info = predict_folds(list(fold_dirs), Path(pre_test), train_pre=options.get("train_pre"),
                               hub=options.get("hub"), batch_size=options.get("batch_size"),
                               tta=options.get("tta"), threads=options.get("threads", 0),
                               progress=options.get("progress", True))
    tables = [g.drop(columns="source").reset_index(drop=True) for _, g in allp.groupby("source", sort=True)]
    return tables, info


# ------------------------------------------------------------------------------------ binary
def predict_binary(fold_dirs: Sequence[Path], pre_test: Path, options: dict) -> tuple[list[pd.DataFrame], dict]:
    """binary/predict.py's predict_folds (tables shaped like a fold's test.csv)."""
    from ..binary.predict import predict_folds

    return predict_folds(fold_dirs, pre_test, hub=options.get("hub"), batch_size=options.get("batch_size"),
                         tta=options.get("tta"), threads=int(options.get("threads") or 0))


# ------------------------------------------------------------------------------------ detect
def predict_detect(fold_dirs: Sequence[Path], pre_test: Path, options: dict) -> tuple[list[pd.DataFrame], dict]:
    """detect/predict.py's predict_folds (boxes in original pixels, with and without flip TTA)."""
    from ..detect.predict import predict_folds

    return predict_folds(fold_dirs, pre_test, device=options.get("device"), batch_size=options.get("batch_size"),
                         progress=options.get("progress", True))


PREDICTORS: dict[str, Callable] = {"study": predict_study, "binary": predict_binary, "detect": predict_detect}


def predict(kind: str, fold_dirs: Sequence[Path], pre_test: Path, options: dict | None = None):
    return PREDICTORS[kind](list(fold_dirs), Path(pre_test), dict(options or {}))


# ------------------------------------------------------------------------------------ budget probe
def make_probe(pre_test: Path, out: Path, n: int) -> Path:
    """A preprocess-shaped folder holding the first ``n`` test images of ``pre_test`` (meta rows +
    links to their PNGs at every size), for timing a member before the full set."""
    return write_subset(pre_test, out, split="test", n=n)


def time_member(kind: str, name: str, fold_dirs: Sequence[Path], pre_test: Path, work: Path, options: dict,
                n_small: int = 1, n_large: int = 9) -> Timing:
    """Time ONE fold of a member on ``n_small`` then ``n_large`` test images: the difference gives
    seconds per image, the rest is the per-fold load cost; the member costs that times its folds.
    A first, untimed call on ``n_small`` images pays the one-off costs (imports, library set-up)
    that would otherwise be counted as the first fold's load."""
    fold = [list(fold_dirs)[0]]
    opts = {**options, "progress": False}
    elapsed = {}
    predict(kind, fold, make_probe(pre_test, Path(work) / "probe_warmup", n_small), opts)
    for n in (n_small, n_large):
        probe = make_probe(pre_test, Path(work) / f"probe_{n}", n)
        n_real = len(read_meta(probe))
        t0 = time.perf_counter()
        tables, info = predict(kind, fold, probe, opts)
        elapsed[n_real] = time.perf_counter() - t0
        if not tables:
            reasons = [v.get("reason") for v in (info.get("folds") or {}).values() if v.get("reason")]
            raise RuntimeError(f"{kind}:{name}: the fold {fold[0]} predicted nothing on the probe images "
                               f"({'; '.join(reasons) or 'no reason given'})")
    (n1, t1), (n2, t2) = sorted(elapsed.items())
    if n2 > n1 and t2 > t1:
        per = (t2 - t1) / (n2 - n1)
        load = max(0.0, t1 - per * n1)
    else:  # noise larger than the per-image cost (tiny models, a busy machine): the safe upper bound
        per, load = t2 / max(n2, 1), 0.0
    return Timing(name, kind, per, units=len(list(fold_dirs)), n_timed=n2, load_s=load)
