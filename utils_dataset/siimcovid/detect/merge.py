"""Merge the folds of one detector (``python -m siimcovid det-merge``), and fuse prediction tables.

``det-merge --work <workdir>/<exp>`` reads every ``fold*/`` (oof.csv, test.csv, config.json) and
writes beside them ``oof_boxes.csv`` (each train image once, from the fold that held it out),
``test_boxes.csv`` (the folds fused with WBF per test image) and ``scores.json``: OOF opacity AP
and the `none` AP derived from the boxes (1 - max score; product rule), with and without TTA,
over every held-out image, per fold and overall. A fold whose files are missing or broken is
skipped and recorded (exit 1). ``--truth DATA`` also scores the test boxes (synthetic sets hold
the test truth).

For the ensemble: :func:`member_tables` gives one member's fold tables, :func:`fuse_tables`
fuses tables of several members in two levels (folds, then models) through wbf.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import EXIT_OK, EXIT_PARTIAL, UserError, reraise_interrupts
from ..layout import META_CSV, find_preprocess
from ..log import get_logger
from .predict import PRED_COLUMNS, figures, read_predictions, write_predictions
from ..runs import CONFIG_JSON, OOF_CSV, TEST_CSV
from ..wbf import WBFParams, fuse_two_level

OOF_BOXES = "oof_boxes.csv"
TEST_BOXES = "test_boxes.csv"
SCORES = "scores.json"


def member_tables(exp_dir: str | Path) -> tuple[dict[int, pd.DataFrame], dict[int, pd.DataFrame], dict, list[dict]]:
    """(fold -> OOF table, fold -> test table, the first fold's resolved config, skipped folds)."""
    exp_dir = Path(exp_dir)
    fold_dirs = sorted((p for p in exp_dir.glob("fold*") if p.is_dir() and p.name[4:].isdigit()),
                       key=lambda p: int(p.name[4:]))
    if not fold_dirs:
        raise UserError(f"{exp_dir}: no fold*/ folders (pass --work <workdir>/<exp>)")
    oof, test, skipped, config = {}, {}, [], {}
    for d in fold_dirs:
        k = int(d.name[4:])
        try:
            cfg = json.loads((d / CONFIG_JSON).read_text())
            o, t = read_predictions(d / OOF_CSV), read_predictions(d / TEST_CSV)
        except BaseException as exc:  # noqa: BLE001 - one broken fold must not stop the merge
            reraise_interrupts(exc)
            skipped.append({"fold": k, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        oof[k], test[k] = o, t
        config = config or cfg
    return oof, test, config, skipped


def fuse_tables(members: Mapping[str, Sequence[pd.DataFrame]], *, columns=("boxes", "boxes_notta"),
                score_scale: Mapping[str, float] | None = None, model_weights: Mapping[str, float] | None = None,
                folds: Mapping | WBFParams | None = None, models: Mapping | WBFParams | None = None) -> pd.DataFrame:
    """Prediction tables of several members (name -> its fold tables) -> one table, fused per image
    in two levels. An image missing from a table counts as "no box" in that list."""
    sizes: dict[str, tuple[int, int]] = {}
    for tables in members.values():
        for t in tables:
            sizes.update({i: (int(h), int(w)) for i, h, w in zip(t["image_id"], t["orig_h"], t["orig_w"])})
    lookups = {name: [{c: dict(zip(t["image_id"], t[c])) for c in columns} for t in tables]
               for name, tables in members.items()}
    rows = []
    empty = np.zeros((0, 5))
    for iid, (h, w) in sizes.items():
        row = {"image_id": iid, "orig_h": h, "orig_w": w}
        for c in columns:
            per_member = {name: [lk[c].get(iid, empty) for lk in lks] for name, lks in lookups.items()}
            row[c] = fuse_two_level(per_member, h, w, score_scale=score_scale, model_weights=model_weights,
                                    folds=folds, models=models)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(PRED_COLUMNS[:3]) + list(columns))


def _truth_from_meta(pre_dir) -> dict:
    from ..layout import read_meta

    meta = read_meta(pre_dir)
    return dict(zip(meta["image_id"], meta["boxes"]))


def _truth_from_data(data_dir) -> dict:
    from ..data import read_image_csv
    from ..metric import find_truth_files

    try:
        _, image_csv = find_truth_files(data_dir)
    except FileNotFoundError as exc:
        raise UserError(f"--truth: {exc}") from None
    df = read_image_csv(image_csv)
    return dict(zip(df["image_id"], df["boxes"]))


def merge(exp_dir: str | Path, *, preprocess=None, truth=None) -> dict:
    log = get_logger()
    exp_dir = Path(exp_dir)
    oof, test, config, skipped = member_tables(exp_dir)
    if not oof:
        raise UserError(f"{exp_dir}: no fold could be read: {skipped}")
    pre = preprocess or config.get("preprocess")
    if not pre or not (Path(pre) / META_CSV).exists():
        pre = find_preprocess(pre)
    train_truth = _truth_from_meta(pre)
    test_truth = _truth_from_data(truth) if truth else None  # before writing: a bad path writes nothing

    oof_all = pd.concat(list(oof.values()), ignore_index=True)
    dup = oof_all["image_id"][oof_all["image_id"].duplicated()]
    if len(dup):
        raise UserError(f"{exp_dir}: image {dup.iloc[0]} is out-of-fold in two folds: folds from different runs?")
    wbf = config.get("siim", {}).get("wbf", {})
    test_all = fuse_tables({"member": list(test.values())}, folds=wbf, models=wbf)
    write_predictions(oof_all.to_dict("records"), exp_dir / OOF_BOXES)
    write_predictions(test_all.to_dict("records"), exp_dir / TEST_BOXES)

    scores = {"exp": exp_dir.name, "folds": sorted(oof), "skipped": skipped,
              "oof": figures(oof_all, train_truth),
              "per_fold": {str(k): figures(v, train_truth) for k, v in oof.items()},
              "wbf": wbf, "score_scale": config.get("siim", {}).get("score_scale", 1.0)}
    if test_truth is not None:
        scored = test_all[test_all["image_id"].isin(test_truth)]
        scores["test"] = figures(scored, test_truth)
    (exp_dir / SCORES).write_text(json.dumps(scores, indent=1, default=float))
    log.info("det-merge %s: %s", exp_dir, format_scores(scores))
    return scores


def format_scores(scores: dict) -> str:
    parts = []
    for part in ("oof", "test"):
        f = scores.get(part)
        if f:
            parts.append(f"{part}: opacity AP {f['opacity_ap_tta']:.3f} (no TTA {f['opacity_ap_notta']:.3f}), "
                         f"none AP max {f['none_ap_max_tta']:.3f} / prod {f['none_ap_prod_tta']:.3f} "
                         f"on {f['n_images']} images")
    if scores.get("skipped"):
        parts.append(f"skipped folds {[s['fold'] for s in scores['skipped']]}")
    return "; ".join(parts)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="siimcovid det-merge", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="<workdir>/<exp>: the folder holding fold*/")
    p.add_argument("--preprocess", default=None, help="preprocess output for the OOF truth (default: as trained)")
    p.add_argument("--truth", default=None, help="data folder holding truth/ (synthetic sets): score the test boxes")
    args = p.parse_args(argv)
    scores = merge(args.work, preprocess=args.preprocess, truth=args.truth)
    print(format_scores(scores), file=sys.stdout)
    return EXIT_PARTIAL if scores["skipped"] else EXIT_OK
