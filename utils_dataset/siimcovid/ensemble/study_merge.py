"""``study-merge``: one study classifier's folds, merged and scored by the ensemble.

``python -m siimcovid study-merge --work W/<exp>`` reads every ``fold*/`` below it (tables through
:mod:`siimcovid.tables`) and writes ``oof_study.csv``, ``test_study.csv`` (study_id + four
probabilities, the study predictions CSV of docs/contracts.md) and ``scores.json`` (OOF study mAP
and per-class AP, TTA on and off, per fold, and the prior-only baseline's study mAP on the same
studies). The rows are the ensemble's study rows of this one member (:func:`.rules.study_rows`:
per image the mean over the folds holding it, image -> study), the very rows the inference
kernel's merge makes of it; the APs are :class:`siimcovid.scoring.StudyMAP`'s.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..atomic import write_csv, write_json
from ..data import STUDY_CLASSES
from ..errors import EXIT_OK, EXIT_PARTIAL, UserError
from ..log import get_logger
from ..runs import CONFIG_JSON, OOF_CSV, TEST_CSV, find_runs
from ..tables import read_study
from .rules import STUDY_COLS, member_image_probs, study_rows, to_study
from ..scoring import StudyMAP

OOF_STUDY, TEST_STUDY, SCORES_JSON = "oof_study.csv", "test_study.csv", "scores.json"


def fold_dirs(work: str | os.PathLike, problems: list[str] | None = None) -> list[Path]:
    """The fold folders under ``work``; unfinished ones are named in ``problems``."""
    return find_runs([work], problems=problems)


def study_scores(frames: Sequence[pd.DataFrame], tta: bool, how: str) -> tuple[pd.DataFrame, dict]:
    """OOF tables (with ``study_label``) -> (study rows with study_label, per-class AP and ``map``)."""
    study = to_study(member_image_probs(frames, tta), how)
    labels = pd.concat(frames, ignore_index=True).groupby("study_id", sort=True)["study_label"].first()
    study.insert(1, "study_label", labels.reindex(study["study_id"]).to_numpy())
    return study, StudyMAP(study["study_label"])(study[STUDY_COLS])


def prior_baseline(labels: Sequence[int]) -> dict[str, float]:
    """APs of the prior-only submission (every study gets the class shares of ``labels``)."""
    labels = np.asarray(labels, dtype=int)
    priors = np.bincount(labels, minlength=len(STUDY_CLASSES)) / max(len(labels), 1)
    return StudyMAP(labels)(np.tile(priors, (len(labels), 1)))


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
        per_fold[d.name] = {"map": study_scores([oof], False, how)[1]["map"],
                            "map_tta": study_scores([oof], True, how)[1]["map"], "n_images": len(oof)}
        if (d / TEST_CSV).exists():
            try:
                tests.append(read_study(d / TEST_CSV))
            except (OSError, ValueError) as exc:
                problems.append(str(exc))
    if not oofs:
        raise FileNotFoundError(f"{work}: no readable {OOF_CSV}: {problems}")
    n_oof_images = len(pd.concat(oofs)["image_id"].unique())
    if n_oof_images < sum(len(o) for o in oofs):
        log.warning("%d images appear in several folds' OOF; averaging them", sum(len(o) for o in oofs) - n_oof_images)
    _, ap_plain = study_scores(oofs, False, how)
    _, ap_tta = study_scores(oofs, True, how)
    oof_study, _ = study_scores(oofs, use_tta, how)
    prior = prior_baseline(oof_study["study_label"])
    write_csv(oof_study, out_dir / OOF_STUDY)

    # test: the ensemble's study rows of this member (every fold's images)
    test_study = study_rows({work.name: member_image_probs(tests, use_tta)}, None, how)
    if len(tests) > 1:
        n_folds_of = pd.concat([t[["study_id"]].drop_duplicates() for t in tests])["study_id"].value_counts()
        short = n_folds_of[n_folds_of < len(tests)].sort_index()
        if len(short):
            problems.append(f"{len(short)} test studies are not predicted by every fold (e.g. {short.index[0]}): "
                            "averaged over the folds that have them")
    write_csv(test_study, out_dir / TEST_STUDY)
    for p in problems:
        log.warning(p)

    scores = {
        "work": str(work), "folds": per_fold, "n_folds": len(oofs), "aggregation": how, "use_tta": use_tta,
        "n_oof_images": n_oof_images, "n_oof_studies": len(oof_study), "n_test_studies": len(test_study),
        "n_test_folds": len(tests),
        "oof_study_map": ap_plain["map"], "oof_study_map_tta": ap_tta["map"],
        "ap": {c: ap_plain[c] for c in STUDY_CLASSES}, "ap_tta": {c: ap_tta[c] for c in STUDY_CLASSES},
        "prior_baseline_study_map": prior["map"], "problems": problems,
    }
    write_json(out_dir / SCORES_JSON, scores, indent=2, default=float)
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
    print(f"wrote {Path(a.out or a.work) / OOF_STUDY}, {TEST_STUDY}, {SCORES_JSON}")
    return EXIT_PARTIAL if scores["problems"] else EXIT_OK
