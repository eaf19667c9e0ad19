"""``binary-merge``: every member x fold output -> merged OOF / test tables, fitted weights, scores.

``python -m siimcovid binary-merge --work W [--study S] [--config ensemble]`` finds every
``<member>/fold<k>/`` below W (the member is the variant the fold was trained with), merges each
member's folds (an image predicted by several folds of a member is averaged), fits the member
weights on the OOF `none` AP (:mod:`siimcovid.binary.ensemble`) and writes into ``--out``
(default: the first ``--work``):

- ``oof_binary.csv``: image_id, study_id, fold, has_box, p_none (the ensemble), one
  ``p_none__<member>`` column per member, and with ``--study`` also ``negative`` (the study
  model's P(negative) of the image's study) and ``p_none_blend``;
- ``test_binary.csv``: the same for the test images (no fold / has_box);
- ``ensemble.json``: members, weights (fitted or equal), method, what they were fitted on and,
  with ``--study``, the blend weight of the ensemble against the study negative;
- ``scores.json``: OOF `none` AP of every member (plain and hflip TTA, per fold too), of equal
  weights, of the fitted weights, of the ensemble used, of the prior, and with ``--study`` of the
  study negative and of the best blend.

A fold whose output is missing or broken is skipped and recorded (``problems``, exit status 1);
the merge goes on with the others. The final `none` of the submission belongs to the inference
stage: it reads ``ensemble.json`` (weights, blend weight) and the members' fold outputs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import EXIT_OK, EXIT_PARTIAL, UserError
from ..log import get_logger, run_header
from ..runs import OOF_CSV, TEST_CSV, find_runs
from ..tables import P_NONE as PRED_COL, P_NONE_TTA as TTA_COL, read_binary
from ..variants import opt
from .ensemble import NoneAP, fit_blend, fit_weights

STAGE_TRAIN = "binary-train"  # what a binary fold's run.json names (folds of other stages are not read)
MERGED_OOF, MERGED_TEST = "oof_binary.csv", "test_binary.csv"
ENSEMBLE_JSON, SCORES_JSON = "ensemble.json", "scores.json"
STUDY_OOF, STUDY_TEST = "oof_study.csv", "test_study.csv"  # study-merge's outputs


def member_col(member: str) -> str:
    return f"p_none__{member}"


# --------------------------------------------------------------------------- config
@dataclass
class EnsembleConfig:
    """configs/binary/ensemble.yaml: which members, and how their weights are fitted."""

    members: list[str] = opt(default_factory=list, help="variant names; empty: every member found")
    use_tta: bool = opt(True, "ensemble the hflip-TTA columns (p_none_tta)")
    fit_margin: float = opt(0.002, "fitted weights must beat equal weights by this OOF AP, else equal weights")
    n_random: int = opt(2000, "Dirichlet samples over the simplex before the coordinate refinement")
    seed: int = 0
    blend_grid: int = opt(101, "weights tried for the ensemble vs the study negative")


def load_ensemble_config(name: str | os.PathLike | None = "ensemble", overrides=None) -> EnsembleConfig:
    """``ensemble`` (or another variant / YAML path in configs/binary/) <- overrides (dict or key=value
    strings), through siimcovid.variants: unknown keys are a UserError naming the valid ones."""
    from .. import variants

    return variants.load("binary", name, overrides, EnsembleConfig)


# --------------------------------------------------------------------------- reading folds
def collect(fold_dirs: Sequence[Path], problems: list[str]) -> dict[str, dict]:
    """member -> {"oof": [frames], "test": [frames], "folds": {fold name: frame}} of every
    readable fold; every unreadable one goes to ``problems``."""
    members: dict[str, dict] = {}
    for d in fold_dirs:
        member = d.parent.name
        if not (d / OOF_CSV).is_file():
            problems.append(f"{member}/{d.name}: skipped: no {OOF_CSV} (fold unfinished?)")
            continue
        try:
            oof = read_binary(d / OOF_CSV, truth=True)
        except ValueError as exc:
            problems.append(f"{member}/{d.name}: skipped: {exc}")
            continue
        if "fold" not in oof:
            oof["fold"] = int(d.name[4:])
        m = members.setdefault(member, {"oof": [], "test": [], "folds": {}})
        m["oof"].append(oof)
        m["folds"][d.name] = oof
        if (d / TEST_CSV).exists():
            try:
                m["test"].append(read_binary(d / TEST_CSV))
            except ValueError as exc:
                problems.append(f"{member}/{d.name}: test predictions skipped: {exc}")
        else:
            problems.append(f"{member}/{d.name}: no {TEST_CSV} (its OOF is used, its test predictions are missing)")
    return members


def _mean_per_image(frames: list[pd.DataFrame], cols: list[str], keep: list[str]) -> pd.DataFrame:
    df = pd.concat(frames, ignore_index=True)
    agg = {**{c: "mean" for c in cols}, **{c: "first" for c in keep if c in df}}
    return df.groupby("image_id", as_index=False, sort=True).agg(agg)


# --------------------------------------------------------------------------- study negative
def read_study_negative(spec: str | os.PathLike, use_tta: bool, problems: list[str]) -> tuple[dict, dict, dict]:
    """``--study``: a study-merge folder (oof_study.csv [+ test_study.csv]), a study predictions
    CSV (study_id, negative) or a fold's per-image oof.csv (image_id, p_negative[_tta]).

    -> (OOF negative by study_id, OOF negative by image_id, test negative by study_id)."""
    path = Path(spec)
    if path.is_dir():
        if not (path / STUDY_OOF).is_file():
            raise UserError(f"binary-merge: --study {path} holds no {STUDY_OOF} (run study-merge there first, "
                            "or pass a CSV)")
        oof_path, test_path = path / STUDY_OOF, path / STUDY_TEST
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


# --------------------------------------------------------------------------- merge
def _weighted(table: pd.DataFrame, members: list[str], weights: dict[str, float]) -> np.ndarray:
    """Weighted mean over the members that predicted each image (weights renormalised there)."""
    p = table[[member_col(m) for m in members]].to_numpy(dtype=np.float64)
    w = np.array([weights[m] for m in members])
    have = np.isfinite(p)
    wsum = (have * w).sum(axis=1)
    out = np.where(have, p, 0.0) @ w / np.where(wsum > 0, wsum, 1.0)
    return np.where(wsum > 0, out, np.nan)


def merge(work: Sequence[str | os.PathLike] | str | os.PathLike, cfg: EnsembleConfig | None = None,
          study: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None) -> dict:
    """Merge every member x fold found under ``work``; write the tables and JSONs; return the scores."""
    cfg = cfg or EnsembleConfig()
    roots = [work] if isinstance(work, (str, os.PathLike)) else list(work)
    if not roots:
        raise UserError("binary-merge: give --work (the folder holding <member>/fold<k>/)")
    out_dir = Path(out_dir or roots[0])
    log = get_logger()
    problems: list[str] = []
    dirs = find_runs(roots, stage=STAGE_TRAIN, problems=problems)
    if not dirs:
        raise UserError(f"binary-merge: no <member>/fold<k>/ under {[str(r) for r in roots]} "
                        "(run binary-train first, or point --work at its output)")
    present = sorted({d.parent.name for d in dirs})
    if cfg.members:  # folds of other variants under the same root are not read (nor reported)
        dirs = [d for d in dirs if d.parent.name in cfg.members]
    members_found = collect(dirs, problems)
    wanted = list(cfg.members) or sorted(members_found)
    for m in wanted:
        if m not in members_found:
            problems.append(f"member {m}: no readable fold output found (left out of the ensemble)")
    members = [m for m in wanted if m in members_found]
    if not members:
        raise UserError(f"binary-merge: none of the members {wanted} has a readable fold under "
                        f"{[str(r) for r in roots]} (members there: {present}; choose with "
                        f"--set members=[...]): {problems}")
    negative = read_study_negative(study, cfg.use_tta, problems) if study else None
    col = TTA_COL if cfg.use_tta else PRED_COL

    # One row per OOF image: the truth from any member, each member's mean over its folds.
    scores_members, oof, test = {}, None, None
    for m in members:
        got = members_found[m]
        per = _mean_per_image(got["oof"], [PRED_COL, TTA_COL], ["study_id", "fold", "has_box"])
        n_dup = sum(len(f) for f in got["oof"]) - len(per)
        if n_dup:
            problems.append(f"member {m}: {n_dup} OOF images appear in several folds (averaged)")
        scorer = NoneAP(per["image_id"], per["has_box"].astype(int))
        scores_members[m] = {
            "none_ap": scorer(per[PRED_COL].to_numpy()), "none_ap_tta": scorer(per[TTA_COL].to_numpy()),
            "n_images": len(per),
            "folds": {name: _fold_scores(f) for name, f in sorted(got["folds"].items())},
        }
        part = per[["image_id", "study_id", "fold", "has_box", col]].rename(columns={col: member_col(m)})
        oof = part if oof is None else oof.merge(part, on=["image_id", "study_id", "fold", "has_box"], how="outer")
        if got["test"]:
            t = _mean_per_image(got["test"], [col], ["study_id"]).rename(columns={col: member_col(m)})
            test = t if test is None else test.merge(t, on=["image_id", "study_id"], how="outer")
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
    fit = fit_weights(oof.loc[full, mcols].to_numpy(), oof.loc[full, "has_box"].astype(int),
                      margin=cfg.fit_margin, n_random=cfg.n_random, seed=cfg.seed)
    weights = dict(zip(members, fit["weights"]))
    oof[PRED_COL] = _weighted(oof, members, weights)
    if test is not None:
        test[PRED_COL] = _weighted(test, members, weights)
    scorer = NoneAP(oof["image_id"], oof["has_box"].astype(int))
    has = oof["has_box"].astype(int).to_numpy()
    ensemble_info = {
        "members": members, "weights": weights, "method": fit["method"],
        "fitted_weights": dict(zip(members, fit["fitted_weights"])), "use_tta": cfg.use_tta,
        "prediction_column": col, "fit_margin": cfg.fit_margin, "n_random": cfg.n_random, "seed": cfg.seed,
        "n_fit_images": int(full.sum()),
    }
    scores = {
        "work": [str(r) for r in roots], "members": scores_members, "n_oof_images": len(oof),
        "n_fit_images": int(full.sum()), "n_test_images": 0 if test is None else len(test),
        "none_ap": {
            **{m: scores_members[m]["none_ap_tta" if cfg.use_tta else "none_ap"] for m in members},
            "equal_weights_fit_set": fit["ap_equal"], "fitted_weights_fit_set": fit["ap_fitted"],
            "ensemble": scorer(oof[PRED_COL].to_numpy()),
            "prior": scorer(np.full(len(oof), float((has == 0).mean()))),
        },
        "weights": weights, "method": fit["method"],
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
        sub_scorer = NoneAP(sub["image_id"], sub["has_box"].astype(int))
        w, ap_blend = fit_blend(sub[PRED_COL].to_numpy(), sub["negative"].to_numpy(), sub["has_box"].astype(int),
                                grid=cfg.blend_grid)
        oof["p_none_blend"] = w * oof[PRED_COL] + (1 - w) * oof["negative"]
        scores["none_ap"].update({
            "study_negative": sub_scorer(sub["negative"].to_numpy()),
            "ensemble_same_images": sub_scorer(sub[PRED_COL].to_numpy()),
            "blend": ap_blend, "blend_weight": w,
        })
        scores["n_study_images"] = int(have.sum())
        ensemble_info.update({"blend_weight": w, "blend": "p_none_blend = w * p_none + (1 - w) * negative",
                              "study": str(study)})
        if test is not None and test_neg:
            test["negative"] = test["study_id"].map(test_neg)
            test["p_none_blend"] = w * test[PRED_COL] + (1 - w) * test["negative"]
    if test is not None:
        front = ["image_id", "study_id", PRED_COL]
        test = test[front + [c for c in test.columns if c not in front]].sort_values("image_id")
    else:
        problems.append("no member wrote test predictions: test_binary.csv is empty")
        test = pd.DataFrame(columns=["image_id", "study_id", PRED_COL, *mcols])
    front = ["image_id", "study_id", "fold", "has_box", PRED_COL]
    oof = oof[front + [c for c in oof.columns if c not in front]]

    scores["problems"] = problems
    out_dir.mkdir(parents=True, exist_ok=True)
    oof.to_csv(out_dir / MERGED_OOF, index=False)
    test.to_csv(out_dir / MERGED_TEST, index=False)
    (out_dir / ENSEMBLE_JSON).write_text(json.dumps(_json_ready(ensemble_info), indent=2))
    (out_dir / SCORES_JSON).write_text(json.dumps(_json_ready(scores), indent=2))
    for p in problems:
        log.warning(p)
    return scores


def _fold_scores(f: pd.DataFrame) -> dict:
    s = NoneAP(f["image_id"], f["has_box"].astype(int))
    return {"none_ap": s(f[PRED_COL].to_numpy()), "none_ap_tta": s(f[TTA_COL].to_numpy()), "n_images": len(f)}


def _json_ready(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_ready(obj.item())
    return obj


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
    print(f"wrote {out / MERGED_OOF}, {MERGED_TEST}, {ENSEMBLE_JSON}, {SCORES_JSON}")
    return EXIT_PARTIAL if scores["problems"] else EXIT_OK
