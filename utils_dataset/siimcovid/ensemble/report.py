"""``python -m siimcovid cv-report``: the local score of every member and every merge rule.

The merge of the inference kernel (:func:`merge.run_merge`) runs on the members' out-of-fold
predictions, fitted as the config says (:mod:`.fit`), and is scored with the project metric:
study mAP, opacity AP, none AP and final = (4 x study + none + opacity) / 6, per member and per
merge rule, with and without TTA. Writes to ``--out``: ``cv_report.json``, ``cv_report.txt`` (the
table), ``ensemble_fit.json`` (the fitted merge the inference kernel loads) with the OOF tables it
scored, and ``cv_report.html`` with PNGs (per-class PR curves, the study confusion matrix, the
calibration of `none`, a few images with predicted and true boxes).
"""
from __future__ import annotations

import argparse
import dataclasses
import html
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..data import STUDY_CLASSES
from ..errors import EXIT_OK, EXIT_PARTIAL, UserError
from ..layout import find_preprocess
from .config import EnsembleConfig, load
from .fit import FIT_JSON, OOFScorer, Truth, fit, read_truth, save
from .members import collect, select, summary
from .merge import Settings, Tables, image_inputs, priors_from_truth, run_merge
from .rules import STUDY_COLS, binary_none, fuse_detectors, member_image_probs, study_rows
from ..scoring import FullBoxAP, OpacityAP

REPORT_JSON, REPORT_TXT, REPORT_HTML = "cv_report.json", "cv_report.txt", "cv_report.html"
COLUMNS = ("study", "opacity", "none", "final")


# ------------------------------------------------------------------------------------ inputs
def oof_tables(found: dict, cfg: EnsembleConfig, truth: Truth, problems: list[str]) -> Tables:
    pick = {k: select(found[k], getattr(cfg, f"{k if k != 'detect' else 'det'}_members"), k, problems)
            for k in ("study", "binary", "detect")}
    labels = [truth.labels[s] for s in sorted(set(truth.images["study_id"]))]
    pri, none_pri = priors_from_truth(labels, truth.has_box)
    return Tables(truth.images[["image_id", "study_id"]],
                  {n: list(m.oof.values()) for n, m in pick["study"].items() if m.oof},
                  {n: list(m.oof.values()) for n, m in pick["binary"].items() if m.oof},
                  {n: list(m.oof.values()) for n, m in pick["detect"].items() if m.oof}, pri, none_pri)


# ------------------------------------------------------------------------------------ rows
def _row(name: str, tta: bool, **v) -> dict:
    r = {"row": name, "tta": tta, **{c: v.get(c, math.nan) for c in COLUMNS}}
    r.update({k: x for k, x in v.items() if k not in COLUMNS})
    return r


def member_rows(t: Tables, scorer: OOFScorer, s: Settings) -> list[dict]:
    """Each member alone: study mAP (study), none AP (binary), opacity AP + none AP (detector)."""
    from .merge import fill_studies

    rows = []
    for tta in (True, False):
        for n, frames in t.study.items():
            st = fill_studies(study_rows({n: member_image_probs(frames, tta)}, None, s.study_how), scorer.study_ids,
                              t.study_priors)
            rows.append(_row(f"study:{n}", tta, study=scorer.study(st)["map"]))
        for n, frames in t.binary.items():
            b = binary_none({n: frames}, None, tta).set_index("image_id")["p_none"].reindex(scorer.image_ids)
            rows.append(_row(f"binary:{n}", tta, none=scorer.none(b.fillna(t.none_prior).to_numpy())))
        for n, frames in t.detect.items():
            det = fuse_detectors({n: frames}, tta=tta, oof=True, wbf_folds=s.wbf_folds, wbf_models=s.wbf_models)
            boxes = det.set_index("image_id")["boxes"].reindex(scorer.image_ids)
            boxes = [b if isinstance(b, np.ndarray) else np.zeros((0, 5)) for b in boxes]
            top = np.array([b[:, 4].max() if len(b) else 0.0 for b in boxes])
            prod = np.array([np.prod(1 - b[:, 4]) for b in boxes])
            op = OpacityAP(boxes, list(scorer.truth.images["boxes"]))()
            rows.append(_row(f"detect:{n}", tta, opacity=op, none=scorer.none(1 - top),
                             none_product=scorer.none(prod)))
    return rows


def with_tta(s: Settings, tta: bool) -> Settings:
    return dataclasses.replace(s, study_tta=tta and s.study_tta, binary_tta=tta and s.binary_tta,
                               det_tta=tta and s.det_tta)


def rule_rows(t: Tables, scorer: OOFScorer, fitted: dict, notes: list[str]) -> tuple[list[dict], dict]:
    """The whole merge per rule preset (each with its fitted parameters), TTA on and off; the
    chosen one is the row ``merge:<preset>*``. -> (rows, {tta: (study, image) of the chosen rule})."""
    base = Settings.from_dict(fitted["settings"])
    chosen = base.rule["preset"]
    rows, best = [], {}
    prior = run_merge(Tables(t.images, study_priors=t.study_priors, none_prior=t.none_prior), base, oof=True, notes=[])
    rows.append(_row("prior (no member)", False, **_parts(scorer.all(*prior))))
    for tta in (True, False):
        s_tta = with_tta(base, tta)
        det, binary = image_inputs(t, s_tta, oof=True)
        for preset, r in fitted["fit"]["rules"].items():
            s = dataclasses.replace(s_tta, rule={"preset": preset, "params": r["params"]},
                                    image_evidence=(r.get("image_evidence") or {}).get("value", base.image_evidence))
            study, image = run_merge(t, s, oof=True, det=det, binary=binary,
                                     notes=notes if (tta and preset == chosen) else [])
            name = f"merge:{preset}" + ("*" if preset == chosen else "")
            rows.append(_row(name, tta, **_parts(scorer.all(study, image)), rule=s.rule))
            if preset == chosen:
                best[tta] = (study, image)
    return rows, best


def _parts(sc: dict) -> dict:
    return {"study": sc["study_map"], "opacity": sc["opacity_ap"], "none": sc["none_ap"], "final": sc["final"],
            **{k: v for k, v in sc.items() if k.startswith("ap_")}}


def table_text(rows: Sequence[dict]) -> str:
    def f(v):
        return "    -" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:5.3f}"
    width = max(12, *(len(r["row"]) for r in rows)) + 2
    lines = [f"{'member / rule':<{width}}{'TTA':>4}  " + "".join(f"{c:>9}" for c in COLUMNS)]
    for r in rows:
        lines.append(f"{r['row']:<{width}}{'yes' if r['tta'] else 'no':>4}  " + "".join(f"{f(r[c]):>9}" for c in COLUMNS))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ figures
def _curve(scores, tp, n_truth):
    from ..metric import precision_recall

    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    return precision_recall(np.asarray(scores)[order], np.asarray(tp)[order], n_truth)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_pr(out: Path, study: pd.DataFrame, image: pd.DataFrame, scorer: OOFScorer) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = study.set_index("study_id").reindex(scorer.study_ids)
    im = image.set_index("image_id").reindex(scorer.image_ids)
    labels = np.array([scorer.truth.labels[s] for s in scorer.study_ids])
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    for k, c in enumerate(STUDY_CLASSES):
        f = FullBoxAP(labels == k)
        p = st[c].to_numpy(float)
        r, pr = _curve(p, f.tp, f.n_truth)
        ax = axes.flat[k]
        ax.plot(r, pr)
        ax.set_title(f"{c}: AP {f(p):.3f}")
    op = OpacityAP(list(im["boxes"]), list(scorer.truth.images["boxes"]))
    r, pr = _curve(op.conf, op.tp, op.n_truth)
    axes.flat[4].plot(r, pr)
    axes.flat[4].set_title(f"opacity: AP {op():.3f}")
    none = im["none"].to_numpy(float)
    r, pr = _curve(none, scorer.none.tp, scorer.none.n_truth)
    axes.flat[5].plot(r, pr)
    axes.flat[5].set_title(f"none: AP {scorer.none(none):.3f}")
    for ax in axes.flat:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
    return _save(fig, out / "pr_curves.png")


def plot_confusion(out: Path, study: pd.DataFrame, scorer: OOFScorer) -> Path:
    import matplotlib.pyplot as plt

    st = study.set_index("study_id").reindex(scorer.study_ids)[STUDY_COLS].to_numpy(float)
    y = np.array([scorer.truth.labels[s] for s in scorer.study_ids])
    cm = np.zeros((4, 4), dtype=int)
    np.add.at(cm, (y, st.argmax(1)), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(cm, cmap="Blues")
    for i in range(4):
        for j in range(4):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center")
    ax.set_xticks(range(4), [c[:6] for c in STUDY_CLASSES])
    ax.set_yticks(range(4), [c[:6] for c in STUDY_CLASSES])
    ax.set_xlabel("predicted (argmax)")
    ax.set_ylabel("true")
    ax.set_title("study confusion matrix (OOF)")
    return _save(fig, out / "study_confusion.png")


def plot_calibration(out: Path, image: pd.DataFrame, scorer: OOFScorer, bins: int = 10) -> Path:
    import matplotlib.pyplot as plt

    p = image.set_index("image_id").reindex(scorer.image_ids)["none"].to_numpy(float)
    y = (~scorer.truth.has_box).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    xs, ys, ns = [], [], []
    for b in range(bins):
        m = idx == b
        if m.any():
            xs.append(p[m].mean())
            ys.append(y[m].mean())
            ns.append(int(m.sum()))
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.plot(xs, ys, "o-")
    for x, yy, n in zip(xs, ys, ns):
        ax.annotate(str(n), (x, yy), fontsize=7, textcoords="offset points", xytext=(3, -8))
    ax.set_xlabel("predicted none")
    ax.set_ylabel("share of images without opacity")
    ax.set_title("calibration of `none` (OOF)")
    return _save(fig, out / "none_calibration.png")


def plot_examples(out: Path, image: pd.DataFrame, meta: pd.DataFrame, pre_dir: Path, n: int = 6,
                  min_score: float = 0.2) -> Path | None:
    """A few boxed and unboxed OOF images from the preprocess output: true boxes green, predicted
    red (score >= min_score), in the PNG's frame."""
    import cv2
    import matplotlib.pyplot as plt

    from ..boxes import Resize

    from ..layout import available_sizes, image_path

    sizes = available_sizes(pre_dir)
    if not sizes:
        return None
    size = sizes[-1]
    m = meta[meta["image_id"].isin(set(image["image_id"]))]
    boxed = m[m["boxes"].map(len) > 0].head(n - n // 3)
    unboxed = m[m["boxes"].map(len) == 0].head(n // 3)
    pick = pd.concat([boxed, unboxed])
    pred = image.set_index("image_id")
    fig, axes = plt.subplots(1, max(1, len(pick)), figsize=(3 * max(1, len(pick)), 3.4), squeeze=False)
    for ax, r in zip(axes.flat, pick.itertuples(index=False)):
        img = cv2.imread(str(image_path(pre_dir, size, r.split, r.image_id)), cv2.IMREAD_GRAYSCALE)
        ax.axis("off")
        if img is None:
            ax.set_title(f"{r.image_id}: no PNG", fontsize=7)
            continue
        plan = Resize.plan(int(r.orig_h), int(r.orig_w), img.shape[:2], bool(getattr(r, "keep_aspect", False)))
        ax.imshow(img, cmap="gray")
        for b in plan.to_resized(np.asarray(r.boxes, float).reshape(-1, 4)):
            ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color="lime", lw=1.5))
        pb = np.asarray(pred.loc[r.image_id, "boxes"], float).reshape(-1, 5)
        pb = pb[pb[:, 4] >= min_score]
        for b, s in zip(plan.to_resized(pb[:, :4]), pb[:, 4]):
            ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color="red", lw=1))
            ax.text(b[0], b[1], f"{s:.2f}", color="red", fontsize=6)
        ax.set_title(f"{r.image_id[:10]} none {pred.loc[r.image_id, 'none']:.2f}", fontsize=7)
    return _save(fig, out / "examples.png")


def write_html(out: Path, table: str, pngs: Sequence[Path], fitted: dict, problems: Sequence[str]) -> Path:
    parts = ["<html><head><meta charset='utf-8'><title>siimcovid cv-report</title></head><body>",
             "<h1>Cross-validation report</h1>", f"<pre>{html.escape(table)}</pre>",
             "<p>final = (4 x study mAP + opacity AP + none AP) / 6, on the out-of-fold predictions; "
             "<code>*</code> marks the merge the inference kernel uses.</p>",
             f"<h2>Fitted merge</h2><pre>{html.escape(json.dumps(fitted.get('settings'), indent=1))}</pre>"]
    for p in pngs:
        parts.append(f"<h2>{html.escape(p.stem.replace('_', ' '))}</h2><img src='{html.escape(p.name)}'>")
    if problems:
        parts.append("<h2>Problems</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in problems) + "</ul>")
    parts.append("</body></html>")
    path = out / REPORT_HTML
    path.write_text("\n".join(parts))
    return path


# ------------------------------------------------------------------------------------ test split
def score_test(inputs: Sequence[str] | None, cfg: EnsembleConfig, settings: Settings, data_dir: str | Path,
               out: Path, problems: list[str]) -> dict:
    """The fitted merge on the members' own ``test.csv`` (what the training kernels predicted on the
    visible test images), written over ``sample_submission.csv``, validated and scored against
    ``data_dir/truth`` (synthetic sets): the pipeline's score without running the models again."""
    from ..data import SAMPLE_SUBMISSION
    from ..metric import find_truth_files, json_ready, score_submission
    from ..data import read_image_csv, read_study_csv
    from ..submission import build_submission, split_ids, validate_submission
    from .steps import KIND_KEYS, merge_test, train_priors

    found = collect(inputs, problems, splits=("test",))
    tables = {k: {n: list(m.test.values()) for n, m in select(found[k], getattr(cfg, KIND_KEYS[k]), k, problems).items()
                  if m.test} for k in KIND_KEYS}
    sample = pd.read_csv(Path(data_dir) / SAMPLE_SUBMISSION, dtype=str, keep_default_na=False)
    studies, images = split_ids(sample["id"])
    study_of = {}
    for frames in list(tables["study"].values()) + list(tables["binary"].values()):
        for f in frames:
            study_of.update(dict(zip(f["image_id"].astype(str), f["study_id"].astype(str))))
    imgs = pd.DataFrame({"image_id": images, "study_id": [study_of.get(i, "?") for i in images]})
    priors, none_prior = train_priors(Path(data_dir))
    notes: list[str] = []
    study, image, _ = merge_test(tables, settings, imgs, studies, priors, none_prior, notes)
    sub, build_problems = build_submission(sample, study, image)
    path = out / "test_submission.csv"
    sub.to_csv(path, index=False)
    invalid = validate_submission(path, data_dir, check_bounds=False)
    study_csv, image_csv = find_truth_files(Path(data_dir) / "truth")
    score = json_ready(score_submission(sub, read_study_csv(study_csv), read_image_csv(image_csv)))
    return {"score": score, "validation_problems": invalid, "build_problems": build_problems, "notes": notes,
            "members": {k: sorted(v) for k, v in tables.items()}}


# ------------------------------------------------------------------------------------ run
def run(inputs: Sequence[str] | None, preprocess: str | None, cfg: EnsembleConfig, out: str | Path,
        plots: bool = True, test_truth: str | None = None, compare: dict[str, str] | None = None) -> dict:
    """``compare``: label -> a folder of detector folds from another start (random init, pretrain-det),
    scored side by side on the same held-out images (det-compare) and shown under the table."""
    from ..log import get_logger

    log = get_logger()
    problems: list[str] = []
    pre = find_preprocess(preprocess)
    truth, meta = read_truth(pre)
    found = collect(inputs, problems, splits=("oof",))
    if not any(found.values()):
        raise UserError(f"no study, binary or detector fold with an oof.csv under {list(inputs or []) or 'the inputs'}"
                        f": pass --inputs <training outputs> ({'; '.join(problems[:3])})")
    folds = {k for ms in found.values() for m in ms.values() for k in m.oof}
    truth = truth.restrict(folds, problems)
    t = oof_tables(found, cfg, truth, problems)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    fitted = fit(t, truth, cfg, notes=notes)
    scorer = OOFScorer(truth)
    rows = member_rows(t, scorer, Settings.from_dict(fitted["settings"]))
    merged, best = rule_rows(t, scorer, fitted, notes)
    rows += merged
    study, image = best[True]
    save({**fitted, "members": summary(found), "problems": problems}, out, study, image)
    table = table_text(rows)
    compared = None
    if compare:
        from .det_merge import compare as compare_starts, format_compare

        compared = compare_starts(compare, preprocess=pre, truth=test_truth)
        table += "\n\ndetector start, same folds (det-compare; not in the merge):\n" + format_compare(compared)
    pngs: list[Path] = []
    if plots:
        pngs = [plot_pr(out, study, image, scorer), plot_confusion(out, study, scorer),
                plot_calibration(out, image, scorer)]
        ex = plot_examples(out, image, meta, pre)
        pngs += [ex] if ex else []
    write_html(out, table, pngs, fitted, list(dict.fromkeys(problems + notes)))
    (out / REPORT_TXT).write_text(table + "\n")
    report = {"rows": rows, "settings": fitted["settings"], "problems": problems, "notes": list(dict.fromkeys(notes)),
              "preprocess": str(pre), "members": summary(found), "fit_json": str(out / FIT_JSON),
              "compare": compared}
    if test_truth:
        report["test"] = score_test(inputs, cfg, Settings.from_dict(fitted["settings"]), test_truth, out, problems)
    from .fit import _json_ready

    (out / REPORT_JSON).write_text(json.dumps(_json_ready(report), indent=1, default=str))
    for p in dict.fromkeys(problems + notes):
        log.warning("cv-report: %s", p)
    return report


def cli(argv: list[str]) -> int:
    from ..clihelp import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m siimcovid cv-report", formatter_class=HelpFormatter,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", nargs="+", default=None,
                   help="folders holding the training outputs (fold*/ with oof.csv); default SIIM_INPUT, /kaggle/input")
    p.add_argument("--preprocess", default=None, help="the TRAIN preprocess output (meta.csv: the OOF truth); "
                   "default: the one folder holding meta.csv under the inputs")
    p.add_argument("--config", default=None, help="ensemble variant (configs/ensemble/<name>.yaml or a path)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set rule=power_awsaf")
    p.add_argument("--out", default="cv_report", help="report folder (cv_report.html, PNGs, ensemble_fit.json)")
    p.add_argument("--no-plots", action="store_true", help="table and JSON only")
    p.add_argument("--truth", default=None, help="a data folder with truth/ (synthetic sets): also score the merge "
                   "on the members' own test.csv, written as test_submission.csv")
    p.add_argument("--compare", nargs="+", default=None, metavar="LABEL=FOLDER",
                   help="detector folds from other starts (e.g. scratch=DIR pretrain-det=DIR), scored side by side")
    a = p.parse_args(argv)
    cfg = load(a.config, a.sets)
    compare = None
    if a.compare:
        compare = dict(item.partition("=")[::2] for item in a.compare)
        if any(not k or not v for k, v in compare.items()):
            raise UserError(f"--compare {a.compare}: use LABEL=FOLDER")
    report = run(a.inputs, a.preprocess, cfg, a.out, plots=not a.no_plots, test_truth=a.truth, compare=compare)
    print(table_text(report["rows"]))
    if report.get("compare"):
        from .det_merge import format_compare

        print("\ndetector start, same folds (det-compare; not in the merge):\n" + format_compare(report["compare"]))
    if report.get("test"):
        sc = report["test"]["score"]
        print(f"test split (members' test.csv merged, scored on DATA/truth): score {sc['score']:.3f} study "
              f"{sc['study_map']:.3f} opacity {sc['ap']['opacity'] or float('nan'):.3f} "
              f"none {sc['ap']['none'] or float('nan'):.3f}"
              + (f"; {len(report['test']['validation_problems'])} validation problem(s)"
                 if report["test"]["validation_problems"] else "; valid"))
    print(f"report: {Path(a.out) / REPORT_HTML}", file=sys.stderr)
    return EXIT_PARTIAL if report["problems"] else EXIT_OK
