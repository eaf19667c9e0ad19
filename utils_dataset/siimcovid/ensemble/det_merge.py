"""``det-merge``: one detector's folds, merged by the ensemble and scored (``python -m siimcovid det-merge``).

``det-merge --work <workdir>/<exp>`` reads every ``fold<k>/`` (oof.csv, test.csv through
:mod:`siimcovid.tables`, config.json) and writes beside them ``oof_boxes.csv`` (each train image
once, from the fold that held it out), ``test_boxes.csv`` (the folds fused per test image by the
ensemble's WBF, :func:`.rules.fuse_tables`, with the detector's own WBF settings) and
``scores.json``: OOF opacity AP and the `none` AP derived from the boxes (1 - max score; product
rule), with and without TTA, over every held-out image, per fold and overall (the detector
stage's figures, ``detect.predict.figures``, the ones its folds report). A fold whose files are
missing or broken is skipped and recorded (exit 1). ``--truth DATA`` also scores the test boxes
(synthetic sets hold the test truth).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ..atomic import write_json
from ..detect.predict import figures
from ..errors import EXIT_OK, EXIT_PARTIAL, UserError, reraise_interrupts
from ..layout import META_CSV, find_preprocess
from ..log import get_logger
from ..runs import CONFIG_JSON, OOF_CSV, TEST_CSV, fold_index
from ..tables import read_detector, write_detector
from .rules import fuse_tables

OOF_BOXES = "oof_boxes.csv"
TEST_BOXES = "test_boxes.csv"
SCORES = "scores.json"


def member_tables(exp_dir: str | Path) -> tuple[dict[int, pd.DataFrame], dict[int, pd.DataFrame], dict, list[dict]]:
    """(fold -> OOF table, fold -> test table, the first fold's resolved config, skipped folds)."""
    exp_dir = Path(exp_dir)
    fold_dirs = sorted((p for p in exp_dir.iterdir() if p.is_dir() and fold_index(p) is not None),
                       key=fold_index) if exp_dir.is_dir() else []
    if not fold_dirs:
        raise UserError(f"{exp_dir}: no fold*/ folders (pass --work <workdir>/<exp>)")
    oof, test, skipped, config = {}, {}, [], {}
    for d in fold_dirs:
        k = fold_index(d)
        try:
            cfg = json.loads((d / CONFIG_JSON).read_text())
            o, t = read_detector(d / OOF_CSV), read_detector(d / TEST_CSV)
        except BaseException as exc:  # noqa: BLE001 - one broken fold must not stop the merge
            reraise_interrupts(exc)
            skipped.append({"fold": k, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        oof[k], test[k] = o, t
        config = config or cfg
    return oof, test, config, skipped


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
    write_detector(oof_all.to_dict("records"), exp_dir / OOF_BOXES)
    write_detector(test_all.to_dict("records"), exp_dir / TEST_BOXES)

    scores = {"exp": exp_dir.name, "folds": sorted(oof), "skipped": skipped,
              "oof": figures(oof_all, train_truth),
              "per_fold": {str(k): figures(v, train_truth) for k, v in oof.items()},
              "wbf": wbf, "score_scale": config.get("siim", {}).get("score_scale", 1.0)}
    if test_truth is not None:
        scored = test_all[test_all["image_id"].isin(test_truth)]
        scores["test"] = figures(scored, test_truth)
    write_json(exp_dir / SCORES, scores, indent=1, default=float)
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


# ------------------------------------------------------------------------------ det-compare
COMPARE_COLUMNS = ("start", "folds", "oof_images", "oof_opacity_ap", "oof_opacity_ap_notta", "oof_none_ap",
                   "test_opacity_ap", "test_none_ap")


def compare(sets: dict[str, str | Path], *, preprocess=None, truth=None) -> list[dict]:
    """One row per fold set (label -> folder of fold*/, e.g. the same detector from random init and
    from pretrain-det), each merged and scored as det-merge does. The sets must hold the same folds,
    so every row is scored on the same held-out images."""
    scores = {label: merge(folder, preprocess=preprocess, truth=truth) for label, folder in sets.items()}
    folds = {label: s["folds"] for label, s in scores.items()}
    if len({tuple(f) for f in folds.values()}) > 1:
        raise UserError(f"det-compare: the sets hold different folds {folds}: their OOF figures are not comparable")
    rows = []
    for label, s in scores.items():
        oof, test = s["oof"], s.get("test") or {}
        rows.append({"start": label, "folds": s["folds"], "oof_images": oof["n_images"],
                     "oof_opacity_ap": oof["opacity_ap_tta"], "oof_opacity_ap_notta": oof["opacity_ap_notta"],
                     "oof_none_ap": oof["none_ap_max_tta"], "test_opacity_ap": test.get("opacity_ap_tta"),
                     "test_none_ap": test.get("none_ap_max_tta")})
    return rows


def format_compare(rows: list[dict]) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else "-" if v is None else str(v)

    head = f"{'start':<16}{'folds':<10}{'OOF opacity':>12}{'(no TTA)':>10}{'OOF none':>10}{'test opacity':>14}"
    lines = [head]
    for r in rows:
        lines.append(f"{r['start']:<16}{','.join(map(str, r['folds'])):<10}{cell(r['oof_opacity_ap']):>12}"
                     f"{cell(r['oof_opacity_ap_notta']):>10}{cell(r['oof_none_ap']):>10}{cell(r['test_opacity_ap']):>14}")
    return "\n".join(lines)


def cli_compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="siimcovid det-compare",
                                description="The same detector folds from different starts (random init, "
                                            "pretrain-det), merged and scored side by side")
    p.add_argument("sets", nargs="+", metavar="LABEL=FOLDER", help="a folder holding fold*/ per start")
    p.add_argument("--preprocess", default=None)
    p.add_argument("--truth", default=None, help="data folder holding truth/: score the test boxes too")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    sets = {}
    for item in a.sets:
        label, eq, folder = item.partition("=")
        if not (eq and label and folder):
            raise UserError(f"det-compare: {item!r}: use LABEL=FOLDER")
        sets[label] = folder
    rows = compare(sets, preprocess=a.preprocess, truth=a.truth)
    if a.out:
        write_json(a.out, {"rows": rows}, indent=1, default=float)
    print(format_compare(rows))
    return EXIT_OK
