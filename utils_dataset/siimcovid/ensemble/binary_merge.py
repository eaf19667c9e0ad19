"""``binary-merge``: the binary `none` members x folds, merged, weighted and scored by the ensemble.

``python -m siimcovid binary-merge --work W [--study S] [--config ensemble]`` finds every
``<member>/fold<k>/`` below W (the member is the variant the fold was trained with; members chosen
by ``configs/binary/ensemble.yaml``), and through the ensemble's own parts (members read as
:mod:`.members` reads them, each member's folds averaged per image and the members' weighted mean
as :func:`.rules.binary_none` merges them, weights fitted by :func:`.fit.fit_simplex`, APs of
:class:`siimcovid.scoring.FullBoxAP`) writes into ``--out`` (default: the first ``--work``):

- ``oof_binary.csv``: image_id, study_id, fold, has_box, p_none (the ensemble), one
  ``p_none__<member>`` column per member, and with ``--study`` also ``negative`` (the study
  model's P(negative) of the image's study) and ``p_none_blend``;
- ``test_binary.csv``: the same for the test images (no fold / has_box);
- ``scores.json``: OOF `none` AP of every member (plain and hflip TTA, per fold too), of equal
  weights, of the fitted weights, of the ensemble used, of the prior, the weights (used and
  fitted), and with ``--study`` of the study negative and of the best blend.

A fold whose output is missing or broken is skipped and recorded (``problems``, exit status 1);
the merge goes on with the others. The weights are this command's report: the inference kernel
fits its own merge (binary weights included) on the members' fold outputs (``ensemble_fit.json``).
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..atomic import write_csv, write_json
from ..binary.config import BinaryEnsembleConfig, load_ensemble_config
from ..errors import EXIT_OK, EXIT_PARTIAL, UserError
from ..log import get_logger, run_header
from ..metric import json_ready
from ..runs import find_runs, fold_name
from ..simplex import normalize
from ..tables import HAS_BOX, P_NONE, P_NONE_TTA
from .fit import fit_share, fit_simplex
from .members import Member, collect, select
from .rules import binary_none
from ..scoring import FullBoxAP
from .study_merge import OOF_STUDY, TEST_STUDY

STAGE_TRAIN = "binary-train"  # what a binary fold's run.json names (folds of other stages are not read)
MERGED_OOF, MERGED_TEST, SCORES_JSON = "oof_binary.csv", "test_binary.csv", "scores.json"
STEPS = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005)  # the refinement of the member weights, coarse to fine


def member_col(member: str) -> str:
    return f"p_none__{member}"


def _none_ap(frame: pd.DataFrame) -> FullBoxAP:
    """The `none` AP over the rows of ``frame`` (truth: has_box == 0)."""
    return FullBoxAP(frame[HAS_BOX].astype(int).to_numpy() == 0)


# --------------------------------------------------------------------------- study negative
def read_study_negative(spec: str | os.PathLike, use_tta: bool, problems: list[str]) -> tuple[dict, dict, dict]:
    """``--study``: a study-merge folder (oof_study.csv [+ test_study.csv]), a study predictions
    CSV (study_id, negative) or a fold's per-image oof.csv (image_id, p_negative[_tta]).

    -> (OOF negative by study_id, OOF negative by image_id, test negative by study_id)."""
    path = Path(spec)
    if path.is_dir():
        if not (path / OOF_STUDY).is_file():
            raise UserError(f"binary-merge: --study {path} holds no {OOF_STUDY} (run study-merge there first, "
                            "or pass a CSV)")
        oof_path, test_path = path / OOF_STUDY, path / TEST_STUDY
    elif path.is_file():
        oof_path, test_path = path, None
    else:
        raise UserError(f"binary-merge: --study {path} not found (a study-merge folder or a CSV)")
    df = pd.read_csv(oof_path, dtype={"image_id": str, "study_id": str})
    by_study, by_image, test = {}, {}, {}
    if {"study_id", "negative"} <= set(df.columns):
        by_study = dict(zip(df["study_id"], df["negative"].astype(float)))
    else:
        col = "p_negative_tta" if use_tta and "p_negative_tta" in df else "p_negative"
        if not {"image_id", col} <= set(df.columns):
            raise UserError(f"binary-merge: {oof_path} has neither study_id+negative nor image_id+p_negative "
                            "columns (pass study-merge's oof_study.csv or a study fold's oof.csv)")
        by_image = dict(zip(df["image_id"], df[col].astype(float)))
    if test_path is not None:
        if test_path.is_file():
            t = pd.read_csv(test_path, dtype={"study_id": str})
            test = dict(zip(t["study_id"], t["negative"].astype(float)))
        else:
            problems.append(f"{test_path}: not found (test_binary.csv gets no blend)")
    return by_study, by_image, test


def _negative_of(frame: pd.DataFrame, by_study: dict, by_image: dict) -> pd.Series:
    if by_image:
        return frame["image_id"].map(by_image)
    return frame["study_id"].map(by_study)


# --------------------------------------------------------------------------- members
def find_members(roots: Sequence[Path], cfg: BinaryEnsembleConfig, problems: list[str]) -> dict[str, Member]:
    """The binary members of ``cfg`` (all found when it names none) with a readable OOF table."""
    dirs = find_runs(roots, stage=STAGE_TRAIN, problems=problems)
    if not dirs:
        raise UserError(f"binary-merge: no <member>/fold<k>/ under {[str(r) for r in roots]} "
                        "(run binary-train first, or point --work at its output)")
    present = sorted({d.parent.name for d in dirs})
    if cfg.members:  # folds of other variants under the same root are not read (nor reported)
        dirs = [d for d in dirs if d.parent.name in cfg.members]
    found = collect(None, problems, fold_dirs=dirs)["binary"]
    for name, m in sorted(found.items()):
        if not m.oof:
            problems.append(f"member {name}: no readable OOF table (left out of the ensemble)")
    found = {n: m for n, m in found.items() if m.oof}
    members = select(found, list(cfg.members) or sorted(found), "binary", problems)
    if not members:
        raise UserError(f"binary-merge: none of the members {list(cfg.members) or present} has a readable fold "
                        f"under {[str(r) for r in roots]} (members there: {present}; choose with "
                        f"--set members=[...]): {problems}")
    return members


def member_scores(m: Member) -> tuple[pd.DataFrame, dict]:
    """(one row per OOF image: image_id, study_id, fold, has_box, p_none, p_none_tta: the mean over
    the folds holding it; the member's OOF none APs, overall and per fold)."""
    frames = [m.oof[k] if "fold" in m.oof[k] else m.oof[k].assign(fold=k) for k in sorted(m.oof)]
    per = {c: binary_none({m.name: frames}, None, tta=c == P_NONE_TTA).set_index("image_id")[P_NONE]
           for c in (P_NONE, P_NONE_TTA)}
    keys = pd.concat(frames, ignore_index=True).groupby("image_id", sort=True)[["study_id", "fold", HAS_BOX]].first()
    table = keys.assign(**{c: per[c].reindex(keys.index) for c in per}).reset_index()
    ap = _none_ap(table)
    folds = {}
    for k, f in zip(sorted(m.oof), frames):
        fa = _none_ap(f)
        folds[fold_name(k)] = {"none_ap": fa(f[P_NONE].to_numpy()), "none_ap_tta": fa(f[P_NONE_TTA].to_numpy()),
                             "n_images": len(f)}
    return table, {"none_ap": ap(table[P_NONE].to_numpy()), "none_ap_tta": ap(table[P_NONE_TTA].to_numpy()),
                   "n_images": len(table), "folds": folds}


# --------------------------------------------------------------------------- merge
def merge(work: Sequence[str | os.PathLike] | str | os.PathLike, cfg: BinaryEnsembleConfig | None = None,
          study: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None) -> dict:
    """Merge every member x fold found under ``work``; write the tables and scores; return the scores."""
    cfg = cfg or BinaryEnsembleConfig()
    roots = [work] if isinstance(work, (str, os.PathLike)) else list(work)
    if not roots:
        raise UserError("binary-merge: give --work (the folder holding <member>/fold<k>/)")
    out_dir = Path(out_dir or roots[0])
    log = get_logger()
    problems: list[str] = []
    found = find_members([Path(r) for r in roots], cfg, problems)
    members = list(found)
    negative = read_study_negative(study, cfg.use_tta, problems) if study else None
    col = P_NONE_TTA if cfg.use_tta else P_NONE

    # One row per OOF image: the truth from any member, each member's mean over its folds.
    scores_members, oof = {}, None
    keys = ["image_id", "study_id", "fold", HAS_BOX]
    for name in members:
        per, scores_members[name] = member_scores(found[name])
        n_dup = sum(len(f) for f in found[name].oof.values()) - len(per)
        if n_dup:
            problems.append(f"member {name}: {n_dup} OOF images appear in several folds (averaged)")
        part = per[[*keys, col]].rename(columns={col: member_col(name)})
        oof = part if oof is None else oof.merge(part, on=keys, how="outer")
    if oof["image_id"].duplicated().any():
        raise UserError(f"binary-merge: members disagree on an image's study, fold or boxes "
                        f"(e.g. {oof.loc[oof['image_id'].duplicated(), 'image_id'].iloc[0]}): "
                        "they were trained on different preprocess outputs; merge them separately")
    oof = oof.sort_values("image_id").reset_index(drop=True)
    mcols = [member_col(m) for m in members]

    # Weights are fitted where every member has a prediction.
    full = oof[mcols].notna().all(axis=1).to_numpy()
    if not full.all():
        problems.append(f"{int((~full).sum())} of {len(oof)} OOF images lack some member's prediction: "
                        "weights fitted on the others, those images ensembled over the members present")
    preds, fit_ap = oof.loc[full, mcols].to_numpy(dtype=np.float64), _none_ap(oof.loc[full])
    fit = fit_simplex(lambda w: fit_ap(preds @ w), len(members), margin=cfg.fit_margin, steps=STEPS,
                      n_random=cfg.n_random, seed=cfg.seed, project=normalize)
    weights = dict(zip(members, fit["weights"]))

    def ensemble(split: str) -> pd.DataFrame:  # image_id, p_none: the ensemble's merge of each split
        tables = {n: [getattr(found[n], split)[k] for k in sorted(getattr(found[n], split))] for n in members}
        return binary_none({n: t for n, t in tables.items() if t}, weights, tta=cfg.use_tta)

    oof[P_NONE] = oof["image_id"].map(ensemble("oof").set_index("image_id")[P_NONE])
    test = None
    if any(found[n].test for n in members):
        test = ensemble("test")
        for n in members:
            if found[n].test:
                t = binary_none({n: [found[n].test[k] for k in sorted(found[n].test)]}, None, tta=cfg.use_tta)
                test[member_col(n)] = test["image_id"].map(t.set_index("image_id")[P_NONE])
        study_of = pd.concat([f[["image_id", "study_id"]] for n in members for f in found[n].test.values()])
        test.insert(1, "study_id", test["image_id"].map(study_of.drop_duplicates("image_id").set_index("image_id")
                                                        ["study_id"]))
    scorer = _none_ap(oof)
    has = oof[HAS_BOX].astype(int).to_numpy()
    scores = {
        "work": [str(r) for r in roots], "members": scores_members, "n_oof_images": len(oof),
        "n_fit_images": int(full.sum()), "n_test_images": 0 if test is None else len(test),
        "none_ap": {
            **{m: scores_members[m]["none_ap_tta" if cfg.use_tta else "none_ap"] for m in members},
            "equal_weights_fit_set": fit["score_equal"], "fitted_weights_fit_set": fit["score_fitted"],
            "ensemble": scorer(oof[P_NONE].to_numpy()),
            "prior": scorer(np.full(len(oof), float((has == 0).mean()))),
        },
        "weights": weights, "method": fit["method"], "fitted_weights": dict(zip(members, fit["fitted_weights"])),
        "prediction_column": col,
    }

    if negative is not None:
        by_study, by_image, test_neg = negative
        oof["negative"] = _negative_of(oof, by_study, by_image)
        have = oof["negative"].notna().to_numpy()
        if not have.any():
            raise UserError(f"binary-merge: --study {study} covers none of the {len(oof)} OOF images "
                            "(another data set or preprocess?)")
        if not have.all():
            problems.append(f"--study: {int((~have).sum())} OOF images have no study negative "
                            "(study and binary scores compare on the images both predicted)")
        sub = oof[have]
        sub_scorer = _none_ap(sub)
        p_ens, p_neg = sub[P_NONE].to_numpy(np.float64), sub["negative"].to_numpy(np.float64)
        w, ap_blend = fit_share(lambda w: sub_scorer(w * p_ens + (1 - w) * p_neg), grid=cfg.blend_grid)
        oof["p_none_blend"] = w * oof[P_NONE] + (1 - w) * oof["negative"]
        scores["none_ap"].update({
            "study_negative": sub_scorer(p_neg), "ensemble_same_images": sub_scorer(p_ens),
            "blend": ap_blend, "blend_weight": w,
        })
        scores["n_study_images"] = int(have.sum())
        if test is not None and test_neg:
            test["negative"] = test["study_id"].map(test_neg)
            test["p_none_blend"] = w * test[P_NONE] + (1 - w) * test["negative"]
    if test is not None:
        front = ["image_id", "study_id", P_NONE]
        test = test[front + [c for c in test.columns if c not in front]].sort_values("image_id")
    else:
        problems.append("no member wrote test predictions: test_binary.csv is empty")
        test = pd.DataFrame(columns=["image_id", "study_id", P_NONE, *mcols])
    front = [*keys, P_NONE]
    oof = oof[front + [c for c in oof.columns if c not in front]]

    scores["problems"] = problems
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(oof, out_dir / MERGED_OOF)  # the ensemble and cv-report read these: atomically
    write_csv(test, out_dir / MERGED_TEST)
    write_json(out_dir / SCORES_JSON, json_ready(scores), indent=2)
    for p in problems:
        log.warning(p)
    return scores


def format_scores(s: dict) -> str:
    ap = s["none_ap"]

    def f(v):
        return "  n/a " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    lines = [f"OOF none AP on {s['n_oof_images']} images ({s['method']} weights, fitted on {s['n_fit_images']})"]
    for m, v in s["members"].items():
        lines.append(f"  member {m:<18} {f(v['none_ap'])}  hflip TTA {f(v['none_ap_tta'])}  "
                     f"weight {s['weights'].get(m, 0):.3f}  ({len(v['folds'])} folds)")
    lines.append(f"  equal weights           {f(ap['equal_weights_fit_set'])}   fitted {f(ap['fitted_weights_fit_set'])}"
                 "   (on the images every member predicted)")
    lines.append(f"  ensemble                {f(ap['ensemble'])}   prior (constant) {f(ap['prior'])}")
    if "study_negative" in ap:
        lines.append(f"  study negative          {f(ap['study_negative'])}   ensemble on the same images "
                     f"{f(ap['ensemble_same_images'])}")
        lines.append(f"  blend                   {f(ap['blend'])}   (w = {ap['blend_weight']:.2f} on the ensemble)")
    if s["problems"]:
        lines.append(f"{len(s['problems'])} problem(s): " + "; ".join(s["problems"]))
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    """Merge binary `none` members x folds: fitted member weights, OOF none AP, test predictions."""
    ap = argparse.ArgumentParser(prog="python -m siimcovid binary-merge", description=cli.__doc__)
    ap.add_argument("--work", action="append", required=True,
                    help="folder holding <member>/fold<k>/ (repeatable: e.g. every fold kernel's output)")
    ap.add_argument("--out", default=None, help="where to write (default: the first --work)")
    ap.add_argument("--config", default="ensemble",
                    help="ensemble variant in siimcovid/configs/binary/ or a YAML path (default: ensemble)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an ensemble key, e.g. --set members=[effb7_640] --set fit_margin=0.005")
    ap.add_argument("--study", default=None,
                    help="study-merge output folder (oof_study.csv, test_study.csv) or a study OOF CSV: "
                         "adds the study negative's none AP and the best blend")
    a = ap.parse_args(argv)
    cfg = load_ensemble_config(a.config, list(a.set))
    run_header("binary-merge", {**asdict(cfg), "work": a.work, "study": a.study})
    scores = merge(a.work, cfg, study=a.study, out_dir=a.out)
    print(format_scores(scores))
    out = Path(a.out or a.work[0])
    print(f"wrote {out / MERGED_OOF}, {MERGED_TEST}, {SCORES_JSON}")
    return EXIT_PARTIAL if scores["problems"] else EXIT_OK
