"""The inference kernel: the competition's test DICOMs -> ``submission.csv``, from mounted inputs only.

``python -m siimcovid infer --data D --train-pre P --study-work W [W ...] --out OUT`` (or the
``inference`` notebook) runs four steps, each a function here:

1. :func:`preprocess_test` converts ``D/test`` only into ``OUT/pre_test`` (the hidden test exists
   only while the kernel runs as a submission), at every size the study folds and the learner
   read, with the pixel settings of the train preprocess run so test pixels look like train pixels.
2. :func:`predict_study`: every ``fold*/`` found (``config.json`` + ``best.weights.h5``) predicts
   the test images (hflip TTA as the fold was configured); folds are averaged per image, images ->
   study. A fold that cannot be loaded is reported and skipped; with no fold at all every study
   gets the train class priors (logged as an error, recorded in ``inference.json``).
3. :func:`predict_image_learner`: the small scikit-learn learner (``siimcovid.baseline``) fitted on
   the train images of the preprocess output and applied to ``OUT/pre_test``; boxes in ORIGINAL
   pixels. Any function with its signature can replace it (``run(..., image_predictor=...)``).
4. :func:`write_submission`: ``build_submission`` over ``sample_submission.csv``, then
   ``validate_submission``; when ``D/truth`` exists (synthetic sets) the metric's JSON too.

A test DICOM that fails to convert is listed in ``OUT/pre_test/errors.csv``; its image row gets
the prior (no boxes, ``none`` = the train share of images without opacity) and its study the
other images' prediction or the priors. Outputs: ``OUT/test_study.csv``, ``OUT/test_image.csv``
(docs/contracts.md, "Submission inputs"), ``OUT/submission.csv``, ``OUT/inference.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .data import (
    IMAGE_CSV,
    SAMPLE_SUBMISSION,
    STUDY_CLASSES,
    STUDY_CSV,
    TRUTH_DIR,
    read_image_csv,
    read_study_csv,
)
from .atomic import write_csv, write_json
from .layout import META_CSV
from .log import get_logger
from .variants import opt

PRE_TEST = "pre_test"
STUDY_OUT, IMAGE_OUT, SUBMISSION, SUMMARY = "test_study.csv", "test_image.csv", "submission.csv", "inference.json"


@dataclass
class InferConfig:
    data: str | None = opt(None, "competition folder; none = found by sample_submission.csv")
    train_pre: str | None = opt(None, "the preprocess kernel's output (meta.csv + images/<S>/train); none = found")
    study_work: list[str] | None = opt(None, "folders holding the members' fold*/ (study, binary, detector); "
                                             "none = search SIIM_INPUT and /kaggle/input")
    out: str | None = opt(None, "output folder; none = /kaggle/working on Kaggle, ./work/inference locally")
    learner_size: int | None = opt(None, "the small learner's PNG folder (images/<S>/); none = the smallest in train_pre")
    limit: int = opt(0, "convert at most this many test images (smoke runs; the rest get fallback rows)")
    exp: str | None = opt(None, "only folds of this experiment (config name or parent folder name)")
    hub: str | None = opt(None, "SavedModel folder for every fold's backbone (overrides config.json)")
    batch_size: int | None = opt(None, "prediction batch; none = each fold's training batch")
    tta: bool | None = opt(None, "hflip TTA; none = each fold's tta_hflip")
    agg: str | None = opt(None, "image -> study: mean | max; none = the folds' study_agg", choices=("mean", "max"))
    workers: int = opt(0, "preprocess worker processes (0 = one per core)")
    threads: int = opt(0, "TensorFlow threads (0 = TF default)")
    seed: int = 0
    learner_work: int = opt(64, "the learner's working resolution (px)")
    learner: dict = opt(default_factory=dict, help="other LearnerConfig fields, e.g. {patch_iter: 50} or "
                                                   "--set learner.patch_iter=50")
    progress: bool = opt(True, "progress bars")
    ensemble: str | None = opt("default", "ensemble variant (configs/ensemble/): members, weights, merge rule")
    ensemble_fit: str | None = opt(None, "a saved ensemble_fit.json (cv-report's); none = fit here on the members' OOF")
    budget_probe: bool = opt(True, "time each member on a few test images and project the hidden test set's time "
                                   "against the 9-hour limit before predicting")


# ---------------------------------------------------------------------------------------
# Step 1: the test split only
# ---------------------------------------------------------------------------------------


def pixel_settings(train_pre: Path | None) -> dict:
    """The train preprocess run's pixel settings (keep_aspect, VOI range, ...), {} if unknown."""
    from .layout import pixel_settings as settings

    return settings(train_pre)


def preprocess_test(data_dir: Path, out_dir: Path, sizes: Sequence[int], *, like: Path | None = None,
                    limit: int = 0, workers: int = 0, progress: bool = True) -> dict:
    """``data_dir/test`` -> ``out_dir`` (meta.csv, images/<S>/test, errors.csv); resumes."""
    from .preprocess.convert import PreprocessConfig, run

    if not (Path(data_dir) / "test").is_dir():
        raise FileNotFoundError(f"{data_dir}/test: not found (the competition's test DICOMs)")
    cfg = PreprocessConfig(data=str(data_dir), out=str(out_dir), sizes=sorted({int(s) for s in sizes}),
                           splits=("test",), limit=limit, workers=workers, progress=progress, **pixel_settings(like))
    return run(cfg)


def read_errors(pre_dir: Path) -> pd.DataFrame:
    from .layout import read_errors as read

    return read(pre_dir)


# ---------------------------------------------------------------------------------------
# Step 2: study rows
# ---------------------------------------------------------------------------------------


def predict_study(fold_dirs: Sequence[Path], pre_test: Path, data_dir: Path, *, train_pre: Path | None = None,
                  hub: str | None = None, batch_size: int | None = None, tta: bool | None = None,
                  agg: str | None = None, threads: int = 0, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Study predictions for every test study of the sample: the folds' mean where a study has a
    predicted image, the train class priors otherwise (all of them when no fold loads)."""
    from .ensemble.rules import member_image_probs, study_rows
    from .ensemble.steps import tables_by_member
    from .study.predict import predict_folds

    images, info = predict_folds(fold_dirs, pre_test, train_pre=train_pre, hub=hub, batch_size=batch_size,
                                 tta=tta, threads=threads, progress=progress)
    how = study_aggregation(info, agg)
    # the ensemble's study rows (the predictor wrote the chosen TTA columns as the plain ones)
    members = {n: member_image_probs(t, tta=False) for n, t in tables_by_member(images).items()}
    return finish_study(study_rows(members, None, how), info, fold_dirs, data_dir, how)


def study_aggregation(info: dict, agg: str | None) -> str:
    aggs = {v["study_agg"] for v in info["folds"].values() if v["status"] == "used"}
    return agg or (aggs.pop() if len(aggs) == 1 else "mean")


def finish_study(study: pd.DataFrame, info: dict, fold_dirs: Sequence[Path], data_dir: Path,
                 how: str) -> tuple[pd.DataFrame, dict]:
    """Every sample study once: the model's rows, the train class priors for the rest (all of them,
    said loudly, when no fold loaded); the counts go into ``info``."""
    from .baseline import class_priors

    log = get_logger()
    priors = class_priors(read_study_csv(Path(data_dir) / STUDY_CSV))
    info.update(aggregation=how, priors=dict(zip(STUDY_CLASSES, priors.round(6).tolist())))
    wanted = sample_ids(data_dir)[0]
    have = set(study["study_id"])
    missing = [s for s in wanted if s not in have]
    if not info["used"]:
        log.error("NO STUDY FOLD LOADED (%d found, all skipped): every study row gets the train class priors %s",
                  len(fold_dirs), info["priors"])
        info["fallback"] = "priors: no fold loaded"
    elif missing:
        log.warning("%d test studies have no predicted image (failed DICOMs / --limit): they get the priors",
                    len(missing))
    if missing:
        fill = pd.DataFrame({"study_id": missing})
        fill[list(STUDY_CLASSES)] = priors
        study = pd.concat([study, fill], ignore_index=True) if len(study) else fill
    info["n_studies_model"] = int(len(study) - len(missing))
    info["n_studies_prior"] = len(missing)
    info["prior_studies"] = missing[:50]
    return study[["study_id", *STUDY_CLASSES]], info


# ---------------------------------------------------------------------------------------
# Step 3: image rows
# ---------------------------------------------------------------------------------------

# (train_pre, pre_test, size, work=, seed=, **options) -> image predictions (image_id, boxes, none)
ImagePredictor = Callable[..., pd.DataFrame]


def predict_image_learner(train_pre: Path, pre_test: Path, size: int, *, work: int = 64, seed: int = 0,
                          **options) -> pd.DataFrame:
    """The small learner fitted on the train images of ``train_pre`` at ``size`` px, applied to
    the test images of ``pre_test`` at the same size -> image_id, boxes (JSON, ORIGINAL pixels), none."""
    from .baseline import LearnerConfig, fit_predict, load_preprocessed

    tr_meta, _, tr_images = load_preprocessed(train_pre, size)
    keep = np.flatnonzero(tr_meta["split"].to_numpy() == "train")
    if len(keep) == 0:
        raise ValueError(f"{train_pre}/{META_CSV}: no train rows with images at {size} px")
    te_meta, _, te_images = load_preprocessed(pre_test, size)
    te_keep = np.flatnonzero(te_meta["split"].to_numpy() == "test")
    if len(te_keep) == 0:
        raise ValueError(f"{pre_test}/{META_CSV}: no test images at {size} px")
    meta = pd.concat([tr_meta.iloc[keep], te_meta.iloc[te_keep]], ignore_index=True)
    images = [tr_images[i] for i in keep] + [te_images[i] for i in te_keep]
    _, image_preds, _ = fit_predict(meta, images, size, LearnerConfig(work=work, seed=seed, **options))
    return image_preds


def fill_images(image: pd.DataFrame | None, data_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every sample image gets a row: the predictor's, else the prior (no boxes, none = the train
    share of images without opacity). -> (frame, image ids that got the prior)."""
    from .baseline import IMAGE_PRED_COLUMNS, none_fraction

    wanted = sample_ids(data_dir)[1]
    image = image if image is not None else pd.DataFrame(columns=IMAGE_PRED_COLUMNS)
    have = set(image["image_id"].astype(str))
    missing = [i for i in wanted if i not in have]
    if missing:
        p_none = none_fraction(read_image_csv(Path(data_dir) / IMAGE_CSV))
        fill = pd.DataFrame({"image_id": missing, "boxes": "[]", "none": round(p_none, 6)})
        image = pd.concat([image, fill], ignore_index=True) if len(image) else fill
    return image[IMAGE_PRED_COLUMNS], missing


# ---------------------------------------------------------------------------------------
# Step 4: the submission
# ---------------------------------------------------------------------------------------


def sample_ids(data_dir: Path) -> tuple[list[str], list[str]]:
    """(study ids, image ids) of sample_submission.csv, without suffixes."""
    from .submission import split_ids

    return split_ids(pd.read_csv(Path(data_dir) / SAMPLE_SUBMISSION, dtype=str, keep_default_na=False)["id"])


def image_sizes_from_meta(pre_test: Path) -> dict[str, tuple[int, int]]:
    from .layout import MissingPreprocess, image_sizes, read_meta

    try:
        return image_sizes(read_meta(pre_test))
    except MissingPreprocess:
        return {}


def write_submission(data_dir: Path, study: pd.DataFrame, image: pd.DataFrame, out: Path,
                     image_sizes: dict | None = None) -> tuple[pd.DataFrame, list[str], list[str]]:
    """:func:`siimcovid.submission.write_submission` (build_submission over sample_submission.csv),
    then validation -> (submission, build problems, validation problems)."""
    from .submission import validate_submission, write_submission as build_and_write

    sub, build_problems = build_and_write(Path(data_dir), study, image, out, image_sizes=image_sizes)
    return sub, build_problems, validate_submission(out, data_dir)


def score_if_truth(sub: pd.DataFrame, data_dir: Path) -> dict | None:
    """The metric against ``data_dir/truth`` (synthetic sets); None when there is no truth."""
    from .metric import find_truth_files, json_ready, score_submission

    if not (Path(data_dir) / TRUTH_DIR).is_dir():
        return None
    study_csv, image_csv = find_truth_files(Path(data_dir) / TRUTH_DIR)
    return json_ready(score_submission(sub, read_study_csv(study_csv), read_image_csv(image_csv)))


# ---------------------------------------------------------------------------------------
# The whole kernel
# ---------------------------------------------------------------------------------------


def check_learner_options(options: dict) -> dict:
    """``InferConfig.learner`` keys must be LearnerConfig fields (values typed by the schema);
    work and seed are InferConfig's own (learner_work, seed)."""
    from .baseline import LearnerConfig
    from .variants import UnknownKeyError, coerce, schema_fields

    valid = sorted(set(schema_fields(LearnerConfig)) - {"work", "seed"})
    out = {}
    for k, v in (options or {}).items():
        if k not in valid:
            raise UnknownKeyError(f"unknown learner config key {k!r}; valid keys: {', '.join(valid)} "
                                  "(work and seed: the infer options learner_work and seed)")
        out[k] = coerce(LearnerConfig, k, v)
    return out


def resolve_inputs(cfg: InferConfig) -> tuple[Path, Path | None, Path]:
    """(competition folder, train preprocess folder or None, output folder)."""
    from .data import find_data_dir
    from .paths import find_input, on_kaggle, working_dir

    data = find_data_dir(cfg.data)
    try:
        from .layout import META_CSV

        pre = find_input(META_CSV, hint=cfg.train_pre)
    except FileNotFoundError as exc:
        get_logger().warning("train preprocess output not found (%s): image rows fall back to the priors", exc)
        pre = None
    out = Path(cfg.out) if cfg.out else (working_dir("work") if on_kaggle() else working_dir("work/inference"))
    out.mkdir(parents=True, exist_ok=True)
    return data, pre, out


def pick_learner_size(train_pre: Path | None, size: int | None) -> int | None:
    if size:
        return int(size)
    if train_pre is None:
        return None
    from .classify.data import image_sizes

    sizes = image_sizes(train_pre)
    return sizes[0] if sizes else None


def run(cfg: InferConfig, image_predictor: ImagePredictor | None = None) -> dict:
    """All four steps; writes OUT/{pre_test/, test_study.csv, test_image.csv, submission.csv,
    inference.json} and returns the summary (also in inference.json)."""
    from .log import run_header, seed_everything

    log = get_logger()
    t_start = time.time()
    seed_everything(cfg.seed)
    cfg = replace(cfg, learner=check_learner_options(cfg.learner))
    data, train_pre, out = resolve_inputs(cfg)
    run_header("infer", dict(asdict(cfg), data_resolved=str(data), train_pre_resolved=str(train_pre)), out)
    summary: dict = {"config": asdict(cfg), "data": str(data), "train_pre": str(train_pre) if train_pre else None,
                     "out": str(out), "timing": {}}
    timing = summary["timing"]

    # the members: study folds as the study stage finds them (also those that cannot load: reported),
    # binary and detector folds (and every member's OOF, for the fit) as the ensemble finds them
    from .ensemble import config as ens_config, steps as ens
    from .ensemble.members import fold_kind
    from .runs import find_runs, of_exp
    from .study.predict import test_sizes

    # every fold under the inputs, found once: the study folds among them (of --exp; also those
    # without tables, which load or are reported) and the members the ensemble reads
    found_problems: list[str] = []
    all_folds = find_runs(cfg.study_work, problems=found_problems)
    fold_problems = [p.replace("runs: ", "study folds: ", 1) for p in found_problems]
    folds = [d for d in of_exp(all_folds, cfg.exp) if fold_kind(d) in (None, "study")]
    if cfg.exp and all_folds and not folds:
        fold_problems.append(f"study folds: none of the {len(all_folds)} fold folders is of experiment {cfg.exp!r}")
    for p in fold_problems:
        log.warning(p)
    ens_cfg = ens_config.load(cfg.ensemble, {"study_how": cfg.agg} if cfg.agg else None)
    ens_problems: list[str] = []
    found = ens.find_members(None, ens_cfg, ens_problems, fold_dirs=all_folds)
    study_names = {Path(d).parent.name for d in folds}
    found["study"] = {n: m for n, m in found["study"].items() if n in study_names}  # --exp applies
    to_predict = {"study": ens.members_from_folds("study", folds), "binary": found["binary"], "detect": found["detect"]}
    sizes = test_sizes(folds, train_pre) | ens.sizes_needed({k: found[k] for k in ("binary", "detect")})
    l_size = pick_learner_size(train_pre, cfg.learner_size)
    if l_size:
        sizes.add(l_size)
    if not sizes:
        sizes.add(256)  # nothing will read them, but the test images' sizes are still needed for clipping
    summary.update(fold_dirs=[str(d) for d in folds], fold_problems=fold_problems, test_sizes=sorted(sizes),
                   learner_size=l_size)
    log.info("infer: %d study fold(s), binary members %s, detector members %s; test images at %s px; learner at "
             "%s px", len(folds), sorted(found["binary"]), sorted(found["detect"]), sorted(sizes), l_size)

    # 1. test DICOMs -> PNGs
    t0 = time.time()
    pre_test = out / PRE_TEST
    pre_summary = preprocess_test(data, pre_test, sorted(sizes), like=train_pre, limit=cfg.limit,
                                  workers=cfg.workers, progress=cfg.progress)
    errors = read_errors(pre_test)
    timing["preprocess_test"] = round(time.time() - t0, 2)
    summary["preprocess"] = pre_summary["counts"]
    summary["test_errors"] = errors.to_dict("records")
    if len(errors):
        log.warning("infer: %d test DICOM(s) failed to convert (see %s); their rows use fallbacks",
                    len(errors), pre_test / "errors.csv")

    # 2. the merge, fitted on the members' out-of-fold predictions (or a saved fit), and the budget:
    # one fold of each member timed on a few test images, projected to the hidden test set
    t0 = time.time()
    settings, summary["ensemble"] = ens.fitted_settings(found, train_pre, ens_cfg, out, ens_problems, cfg.ensemble_fit)
    options = {"study": {"train_pre": train_pre, "hub": cfg.hub, "batch_size": cfg.batch_size, "tta": cfg.tta,
                         "threads": cfg.threads},
               "binary": {"batch_size": cfg.batch_size, "tta": cfg.tta, "hub": cfg.hub, "threads": cfg.threads},
               "detect": {"batch_size": cfg.batch_size}}
    if cfg.budget_probe and any(to_predict.values()):
        converted = max(1, int(pre_summary["counts"].get("converted", 0) or 0))
        proj, _ = ens.probe_budget(to_predict, pre_test, out / "work", options, ens_problems,
                                   overhead_per_image=timing["preprocess_test"] / converted)
        summary["budget"] = proj.as_dict()
        summary["budget_lines"] = proj.lines()
    timing["fit_and_budget"] = round(time.time() - t0, 2)

    # 3. study rows: every study fold predicts the test images, then the merge
    t0 = time.time()
    from .study.predict import predict_folds

    study_images, study_info = predict_folds(folds, pre_test, train_pre=train_pre, hub=cfg.hub,
                                              batch_size=cfg.batch_size, tta=cfg.tta, threads=cfg.threads,
                                              progress=cfg.progress)
    how = study_aggregation(study_info, cfg.agg)
    settings.study_how = how
    timing["study"] = round(time.time() - t0, 2)

    # 4. image rows: binary and detector members, then the merge; the small learner when neither exists
    t0 = time.time()
    tables, summary["ensemble"]["predict"] = ens.predict_members(
        {"study": {}, "binary": found["binary"], "detect": found["detect"]}, pre_test, options, ens_problems)
    tables["study"] = ens.tables_by_member(study_images)
    sample_studies, sample_images = sample_ids(data)
    priors, none_prior = ens.train_priors(data)
    notes: list[str] = []
    ens_study, ens_image, ens_prior_images = ens.merge_test(
        tables, settings, ens.test_images(pre_test, sample_images), sample_studies, priors, none_prior, notes)
    summary["ensemble"].update(settings=asdict(settings), notes=notes, problems=ens_problems)
    for p in ens_problems + notes:
        log.warning("ensemble: %s", p)
    predicted_studies = set(study_images["study_id"].astype(str))
    study, study_info = finish_study(ens_study[ens_study["study_id"].isin(predicted_studies)], study_info, folds,
                                     data, how)
    write_csv(study, out / STUDY_OUT)
    summary["study"] = study_info

    image, image_info = None, {"predictor": None}
    if tables["detect"] or tables["binary"]:
        image_info["predictor"] = "ensemble " + ", ".join(f"{k}:{n}" for k in ("detect", "binary") for n in tables[k])
        image = ens_image[~ens_image["image_id"].isin(set(ens_prior_images))]
    else:
        predictor = image_predictor or predict_image_learner
        if train_pre is None or l_size is None:
            image_info["error"] = "no train preprocess output: no learner"
        else:
            image_info["predictor"] = getattr(predictor, "__name__", repr(predictor))
            try:
                image = predictor(train_pre, pre_test, l_size, work=cfg.learner_work, seed=cfg.seed, **cfg.learner)
            except (FileNotFoundError, ValueError) as exc:
                image_info["error"] = f"{type(exc).__name__}: {exc}"
    predicted = image is not None
    if not predicted:
        log.error("NO IMAGE PREDICTOR RAN (%s): every image row gets the prior", image_info.get("error"))
    image, prior_images = fill_images(image, data)
    write_csv(image, out / IMAGE_OUT)
    image_info.update(n_prior_images=len(prior_images), prior_images=prior_images[:50],
                      n_boxes=int(image["boxes"].map(lambda s: len(json.loads(s))).sum()))
    if prior_images and predicted:
        log.warning("infer: %d test image(s) without a prediction get the prior row, e.g. %s", len(prior_images),
                    prior_images[:3])
    timing["image"] = round(time.time() - t0, 2)
    summary["image"] = image_info

    # 5. submission
    t0 = time.time()
    sub, build_problems, problems = write_submission(data, study, image, out / SUBMISSION,
                                                     image_sizes_from_meta(pre_test))
    timing["submission"] = round(time.time() - t0, 2)
    summary.update(n_rows=len(sub), build_problems=build_problems, validation_problems=problems,
                   n_fallback=sub.attrs.get("n_fallback"))
    summary["score"] = score_if_truth(sub, data)
    timing["total"] = round(time.time() - t_start, 2)
    write_json(out / SUMMARY, summary, indent=2, default=str)
    log.info("infer: wrote %s (%d rows); %d validation problem(s); %.1f s", out / SUBMISSION, len(sub),
             len(problems), timing["total"])
    return summary


def format_summary(s: dict) -> str:
    st, im = s["study"], s["image"]
    lines = [f"submission: {s['out']}/{SUBMISSION} ({s['n_rows']} rows)",
             f"test DICOMs: {s['preprocess'].get('converted', 0)} converted, {len(s['test_errors'])} failed",
             f"study folds: {len(st['used'])} used, {len(st['skipped'])} skipped; {st['n_studies_model']} studies from "
             f"the model, {st['n_studies_prior']} from the priors" + (f"  [{st['fallback']}]" if st.get("fallback") else ""),
             f"image rows: {im.get('predictor')} ({im['n_boxes']} boxes), {im['n_prior_images']} prior rows"
             + (f"  [{im['error']}]" if im.get("error") else "")]
    for d, v in st["folds"].items():
        lines.append(f"  {d}: {v['status']}" + (f" ({v['reason'].replace(f'{d}: ', '', 1)})" if v["status"] == "skipped" else
                                                 f" ({v['n_images']} images, {v['seconds']} s)"))
    for p in s["fold_problems"]:
        lines.append(f"  {p}")
    ens = s.get("ensemble") or {}
    if ens:
        rule = (ens.get("settings") or {}).get("rule")
        lines.append(f"ensemble: merge {ens.get('source')} (rule {rule})" + (
            f", OOF final {ens['oof_fitted']['final']:.4f} (defaults {ens['oof_default']['final']:.4f})"
            if ens.get("oof_fitted") and ens["oof_fitted"].get("final") is not None
            and ens["oof_default"].get("final") is not None else ""))
        lines += [f"  {p}" for p in ens.get("problems", [])]
    lines += s.get("budget_lines", [])
    probs = s["validation_problems"]
    lines.append("validation: OK" if not probs else f"validation: {len(probs)} problem(s)")
    lines += [f"  {i:4d}. {p}" for i, p in enumerate(probs[:20], start=1)]
    if s.get("score"):
        lines.append(f"score (DATA/truth): {s['score']['score']:.4f}  study mAP {s['score']['study_map']:.4f}  "
                     f"image mAP {s['score']['image_map']:.4f}")
    return "\n".join(lines)


def config_from_params(config: str | None = None, **params) -> InferConfig:
    """An InferConfig from notebook parameters (over the ``config`` variant in configs/infer/):
    papermill's ``-p study_work /a`` passes one string (several: os.pathsep-separated), numbers
    may arrive as text; ``None`` / "" mean "find it" / the variant's value."""
    from .variants import load

    kw = {k: v for k, v in params.items() if v is not None and v != ""}
    if isinstance(kw.get("study_work"), (str, os.PathLike)):
        kw["study_work"] = [str(p) for p in str(kw["study_work"]).split(os.pathsep) if p]
    return load("infer", config, kw, InferConfig, default_name="default")


def plot_test_predictions(out: str | os.PathLike, n: int = 4, min_score: float = 0.3):
    """A matplotlib figure: ``n`` test images (the most confident boxes first) with the image
    rows' boxes (score >= ``min_score``) drawn in the preprocessed frame, titled with the
    study's top class and ``none``. For the notebook."""
    import cv2
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .boxes import Resize

    out = Path(out)
    from .layout import meta_sizes, read_meta

    meta = read_meta(out / PRE_TEST)
    image = pd.read_csv(out / IMAGE_OUT, dtype={"image_id": str}).set_index("image_id")
    study = pd.read_csv(out / STUDY_OUT, dtype={"study_id": str}).set_index("study_id")
    size = meta_sizes(meta)[0]
    meta = read_meta(out / PRE_TEST, size)
    meta = meta[meta["image_id"].isin(image.index)].copy()
    meta["best"] = [max([b[4] for b in json.loads(image.loc[i, "boxes"])] or [0.0]) for i in meta["image_id"]]
    picks = meta.sort_values(["best", "image_id"], ascending=[False, True]).head(n)
    fig, axes = plt.subplots(1, max(1, len(picks)), figsize=(3.2 * max(1, len(picks)), 3.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), picks.itertuples()):
        img = cv2.imread(r.path, cv2.IMREAD_GRAYSCALE)
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        plan = Resize.plan(int(r.orig_h), int(r.orig_w), size, bool(r.keep_aspect))
        for b in json.loads(image.loc[r.image_id, "boxes"]):
            if b[4] < min_score:
                continue
            x0, y0, x1, y1 = plan.to_resized(np.asarray([b[:4]], dtype=float))[0]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1.5))
            ax.text(x0, y0, f"{b[4]:.2f}", color="yellow", fontsize=7, va="bottom")
        top = study.loc[r.study_id].idxmax() if r.study_id in study.index else "?"
        ax.set_title(f"{r.image_id}\nstudy: {top}, none {image.loc[r.image_id, 'none']:.2f}", fontsize=8)
    fig.tight_layout()
    return fig


def cli(argv: list[str]) -> int:
    """Inference: test DICOMs -> study folds + small learner -> submission.csv (validated, scored
    when DATA/truth exists). Exit 0 when the submission validates, 1 when it was written with
    problems, 2 when it could not be written."""
    from .variants import add_schema_args, load, overrides_from_args

    ap = argparse.ArgumentParser(prog="python -m siimcovid infer", description=cli.__doc__)
    add_schema_args(ap, InferConfig, stage="infer")
    a = ap.parse_args(argv)
    cfg = load("infer", a.config, overrides_from_args(a), InferConfig, default_name="default")
    try:
        summary = run(cfg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"infer: {exc}")
        return 2
    print(format_summary(summary))
    if summary["score"] is not None:
        print(json.dumps(summary["score"]))
    return 1 if summary["validation_problems"] else 0
