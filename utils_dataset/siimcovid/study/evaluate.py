"""Study predictions: hflip TTA, image -> study aggregation, study mAP, and the fold merge.

``python -m siimcovid study-merge --work W/<exp>`` reads every ``fold*/`` below it and writes
``oof_study.csv``, ``test_study.csv`` (study_id + four probabilities, the study predictions CSV
of docs/contracts.md) and ``scores.json`` (OOF study mAP and per-class AP, TTA on and off,
per fold, and the prior-only baseline's study mAP on the same studies).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from ..data import STUDY_CLASSES
from ..log import get_logger

if TYPE_CHECKING:
    from .config import StudyConfig

from ..tables import PROB_COLS, TTA_COLS, read_study  # noqa: E402

STUDY_COLS = list(STUDY_CLASSES)  # column names of the study predictions CSV
from ..runs import CONFIG_JSON, OOF_CSV, TEST_CSV  # noqa: E402  (a run folder's file names live in runs.py)


# --------------------------------------------------------------------------- prediction
def predict_frame(model, df: pd.DataFrame, cfg: "StudyConfig", tta: bool | None = None) -> pd.DataFrame:
    """image_id, study_id, fold, p_* (plain) and p_*_tta (mean of plain and hflip; equal to the
    plain columns when TTA is off), study_label when known: the core's prediction, study task."""
    from ..classify.predict import predict_frame as predict
    from .task import STUDY

    return predict(model, df, cfg, STUDY, tta)


# --------------------------------------------------------------------------- aggregation + metric
def aggregate_study(df: pd.DataFrame, cols: Sequence[str], how: str = "mean") -> pd.DataFrame:
    """Image rows -> one row per study (mean or max of each column), rows renormalised to 1."""
    if how not in ("mean", "max"):
        raise ValueError(f"study aggregation must be mean or max, got {how!r}")
    g = df.groupby("study_id", sort=True)[list(cols)]
    out = g.mean() if how == "mean" else g.max()
    vals = out.to_numpy(dtype=np.float64)
    out[list(cols)] = vals / np.clip(vals.sum(axis=1, keepdims=True), 1e-12, None)
    return out.reset_index()


def study_ap(study_ids: Sequence[str], probs: np.ndarray, labels: Sequence[int]) -> dict[str, float]:
    """Per-class AP (the competition's study part: one 0 0 1 1 detection per class and study)
    and ``map`` (mean of the classes that have ground truth), computed with ``siimcovid.metric``."""
    from ..metric import FULL_BOX, nanmean, average_precision

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    ids = list(study_ids)
    if probs.shape != (len(ids), len(STUDY_CLASSES)) or len(labels) != len(ids):
        raise ValueError(f"study_ap: {len(ids)} ids, probs {probs.shape}, {len(labels)} labels")
    ap = {}
    for k, cls in enumerate(STUDY_CLASSES):
        dets = [(sid, float(p), *FULL_BOX) for sid, p in zip(ids, probs[:, k])]
        truths = {sid: [FULL_BOX] for sid, y in zip(ids, labels) if y == k}
        ap[cls] = average_precision(dets, truths)
    ap["map"] = nanmean(list(ap.values()))
    return ap


def study_map_from_images(df: pd.DataFrame, cols: Sequence[str], how: str = "mean") -> dict[str, float]:
    """Image predictions with ``study_label`` -> study APs."""
    agg = aggregate_study(df, cols, how)
    labels = df.groupby("study_id", sort=True)["study_label"].first().reindex(agg["study_id"])
    return study_ap(agg["study_id"], agg[list(cols)].to_numpy(), labels.to_numpy())


def prior_baseline(study_ids: Sequence[str], labels: Sequence[int], priors: np.ndarray | None = None) -> dict[str, float]:
    """APs of the prior-only submission (every study gets the same class probabilities)."""
    labels = np.asarray(labels, dtype=int)
    if priors is None:
        priors = np.bincount(labels, minlength=len(STUDY_CLASSES)) / max(len(labels), 1)
    probs = np.tile(np.asarray(priors, dtype=np.float64), (len(labels), 1))
    return study_ap(study_ids, probs, labels)


# --------------------------------------------------------------------------- merge
def fold_dirs(work: str | os.PathLike, problems: list[str] | None = None) -> list[Path]:
    """The finished fold folders under ``work``; unfinished ones are named in ``problems``."""
    from ..runs import find_runs

    return find_runs([work], problems=problems)


def ensemble_study(images: pd.DataFrame | None, cols: Sequence[str], how: str = "mean") -> tuple[pd.DataFrame, pd.Series]:
    """Image predictions of several folds (a ``source`` column names the fold) -> the study
    predictions CSV (study_id + STUDY_CLASSES): each fold's images -> studies, then the mean over
    the folds that predicted the study. Also returns how many folds predicted each study. The
    one ensembling rule for study-merge and the inference kernel."""
    if images is None or len(images) == 0:
        return pd.DataFrame(columns=["study_id", *STUDY_COLS]), pd.Series(dtype=int)
    per = pd.concat([aggregate_study(g, cols, how) for _, g in images.groupby("source")], ignore_index=True)
    mean = per.groupby("study_id", sort=True)[list(cols)].mean()
    out = pd.DataFrame({"study_id": mean.index})
    out[STUDY_COLS] = mean[list(cols)].to_numpy()
    return out, per.groupby("study_id").size()


def merge(work: str | os.PathLike, how: str = "mean", use_tta: bool = True, out_dir: str | os.PathLike | None = None) -> dict:
    """Merge the folds found under ``work``; write oof_study.csv, test_study.csv, scores.json.

    A fold without a readable oof.csv (or test.csv) is left out and named in ``problems``; the
    merge goes on with the others."""
    work = Path(work)
    out_dir = Path(out_dir) if out_dir else work
    out_dir.mkdir(parents=True, exist_ok=True)
    found_problems: list[str] = []
    dirs = fold_dirs(work, found_problems)
    if not dirs:
        raise FileNotFoundError(f"{work}: no fold*/ with {OOF_CSV} (run study-train first)")
    log = get_logger()
    oofs, tests, per_fold, problems = [], [], {}, [p.removeprefix("runs: ") for p in found_problems]
    for d in dirs:
        if not (d / OOF_CSV).exists():
            problems.append(f"{d}: no {OOF_CSV} (fold unfinished?)")
            continue
        try:
            oof = read_study(d / OOF_CSV)
        except (OSError, ValueError) as exc:
            problems.append(str(exc))
            continue
        if "study_label" not in oof:
            problems.append(f"{d / OOF_CSV}: no study_label column")
            continue
        oofs.append(oof)
        per_fold[d.name] = {
            "map": study_map_from_images(oof, PROB_COLS, how)["map"],
            "map_tta": study_map_from_images(oof, TTA_COLS, how)["map"],
            "n_images": len(oof),
        }
        if (d / TEST_CSV).exists():
            try:
                t = read_study(d / TEST_CSV)
            except (OSError, ValueError) as exc:
                problems.append(str(exc))
                continue
            t["source"] = d.name
            tests.append(t)
    if not oofs:
        raise FileNotFoundError(f"{work}: no readable {OOF_CSV}: {problems}")
    oof = pd.concat(oofs, ignore_index=True)
    dup = oof["image_id"].duplicated()
    if dup.any():
        log.warning("%d images appear in several folds' OOF; averaging them", int(dup.sum()))
        firsts = {c: "first" for c in ("study_label", "fold") if c in oof}
        oof = oof.groupby(["image_id", "study_id"], as_index=False).agg(
            {**{c: "mean" for c in PROB_COLS + TTA_COLS}, **firsts})
    ap_plain = study_map_from_images(oof, PROB_COLS, how)
    ap_tta = study_map_from_images(oof, TTA_COLS, how)
    cols = TTA_COLS if use_tta else PROB_COLS
    st = aggregate_study(oof, cols, how)
    labels = oof.groupby("study_id", sort=True)["study_label"].first().reindex(st["study_id"]).to_numpy()
    prior = prior_baseline(st["study_id"], labels)
    oof_study = pd.DataFrame({"study_id": st["study_id"], "study_label": labels})
    oof_study[STUDY_COLS] = st[cols].to_numpy()
    oof_study.to_csv(out_dir / "oof_study.csv", index=False)

    # test: mean over folds of each fold's study-level predictions
    test_study, n_folds_of = ensemble_study(pd.concat(tests, ignore_index=True) if tests else None, cols, how)
    if (n_folds_of < len(tests)).any():
        problems.append(f"{int((n_folds_of < len(tests)).sum())} test studies are not predicted by every "
                        f"fold (e.g. {n_folds_of[n_folds_of < len(tests)].index[0]}): averaged over the folds "
                        "that have them")
    test_study.to_csv(out_dir / "test_study.csv", index=False)
    for p in problems:
        log.warning(p)

    scores = {
        "work": str(work), "folds": per_fold, "n_folds": len(oofs), "aggregation": how, "use_tta": use_tta,
        "n_oof_images": len(oof), "n_oof_studies": len(st), "n_test_studies": len(test_study),
        "n_test_folds": len(tests),
        "oof_study_map": ap_plain["map"], "oof_study_map_tta": ap_tta["map"],
        "ap": {c: ap_plain[c] for c in STUDY_CLASSES}, "ap_tta": {c: ap_tta[c] for c in STUDY_CLASSES},
        "prior_baseline_study_map": prior["map"], "problems": problems,
    }
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=2, default=float))
    return scores


def format_scores(s: dict) -> str:
    lines = [f"{s['n_folds']} fold(s), {s['n_oof_studies']} OOF studies ({s['n_oof_images']} images), "
             f"{s['n_test_studies']} test studies from {s['n_test_folds']} fold(s)"]
    lines.append(f"OOF study mAP  no TTA {s['oof_study_map']:.4f}   hflip TTA {s['oof_study_map_tta']:.4f}   "
                 f"prior-only baseline {s['prior_baseline_study_map']:.4f}")
    for c in STUDY_CLASSES:
        lines.append(f"  {c:<14} AP {s['ap'][c]:.4f}   TTA {s['ap_tta'][c]:.4f}")
    for k, v in s["folds"].items():
        lines.append(f"  {k}: mAP {v['map']:.4f}  TTA {v['map_tta']:.4f}  ({v['n_images']} images)")
    return "\n".join(lines)


def configured_agg(dirs: Sequence[Path]) -> str:
    """The folds' own ``study_agg`` (the rule their best epoch was chosen with), else "mean"."""
    aggs = set()
    for d in dirs:
        cfg = Path(d) / CONFIG_JSON
        if cfg.exists():
            aggs.add(json.loads(cfg.read_text()).get("study_agg", "mean"))
    if len(aggs) > 1:
        raise ValueError(f"folds disagree on study_agg {sorted(aggs)}: pass --agg")
    return aggs.pop() if aggs else "mean"


def cli(argv: list[str]) -> int:
    """Merge study-classifier folds: OOF study mAP with TTA on/off, test_study.csv."""
    ap = argparse.ArgumentParser(prog="python -m siimcovid study-merge", description=cli.__doc__)
    ap.add_argument("--work", required=True, help="the experiment folder holding fold*/ (W/<exp>), or any parent")
    ap.add_argument("--out", default=None, help="where to write (default: --work)")
    ap.add_argument("--agg", default=None, choices=["mean", "max"],
                    help="image -> study aggregation (default: the folds' study_agg, else mean)")
    ap.add_argument("--no-tta", action="store_true", help="write plain (not hflip-TTA) probabilities")
    a = ap.parse_args(argv)
    from ..errors import EXIT_OK, EXIT_PARTIAL, UserError

    # user mistakes are one line before anything is written (a merge of nothing writes nothing)
    if not Path(a.work).is_dir():
        raise UserError(f"--work {a.work}: no such folder (pass the study-train output: W/<exp> or a parent)")
    dirs = fold_dirs(a.work)
    if not dirs:
        raise UserError(f"--work {a.work}: no fold*/ holding {OOF_CSV} below it (run study-train first)")
    try:
        how = a.agg or configured_agg(dirs)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    scores = merge(a.work, how=how, use_tta=not a.no_tta, out_dir=a.out)
    print(format_scores(scores))
    print(f"wrote {Path(a.out or a.work) / 'oof_study.csv'}, test_study.csv, scores.json")
    return EXIT_PARTIAL if scores["problems"] else EXIT_OK
