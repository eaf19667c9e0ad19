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
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .data import (
    IMAGE_CSV,
    SAMPLE_SUBMISSION,
    STUDY_CLASSES,
    STUDY_CSV,
    read_image_csv,
    read_study_csv,
)
from .dicom import one_line
from .log import get_logger

PRE_TEST = "pre_test"
STUDY_OUT, IMAGE_OUT, SUBMISSION, SUMMARY = "test_study.csv", "test_image.csv", "submission.csv", "inference.json"
from .layout import PIXEL_KEYS  # noqa: E402  (pixel settings a test set shares with its train set)
from .runs import BEST_WEIGHTS as WEIGHTS, CONFIG_JSON as FOLD_CONFIG, FOLD_RE  # noqa: E402


@dataclass
class InferConfig:
    data: str | None = None  # competition folder; None = found by sample_submission.csv
    train_pre: str | None = None  # the preprocess kernel's output (meta.csv + images/<S>/train)
    study_work: list[str] | None = None  # folders holding fold*/; None = search SIIM_INPUT / /kaggle/input
    out: str | None = None  # None = /kaggle/working on Kaggle, ./work/inference locally
    size: int | None = None  # the learner's image size (images/<S>/); None = the smallest in train_pre
    limit: int = 0  # convert at most this many test images (smoke runs; the rest get fallback rows)
    exp: str | None = None  # only folds of this experiment (config name or parent folder name)
    hub: str | None = None  # SavedModel folder for every fold's backbone (overrides config.json)
    batch_size: int | None = None  # prediction batch; None = each fold's training batch
    tta: bool | None = None  # hflip TTA; None = each fold's tta_hflip
    agg: str | None = None  # image -> study: mean | max; None = the folds' study_agg
    workers: int = 0  # preprocess worker processes (0 = one per core)
    threads: int = 0  # TensorFlow threads (0 = TF default)
    seed: int = 0
    learner_work: int = 64  # the learner's working resolution (px)
    learner: dict = field(default_factory=dict)  # other LearnerConfig fields, e.g. {"patch_iter": 50}
    progress: bool = True


class FoldError(RuntimeError):
    """A fold that cannot predict; the message names its folder and the reason."""


# ---------------------------------------------------------------------------------------
# Finding the folds
# ---------------------------------------------------------------------------------------


def _walk(root: Path, max_depth: int):
    """Depth-limited walk that skips DICOM trees and preprocess images (siimcovid.runs.walk)."""
    from .runs import walk

    return walk(root, max_depth)


def find_fold_dirs(roots: Sequence[str | os.PathLike] | None = None, exp: str | None = None,
                   max_depth: int = 8) -> tuple[list[Path], list[str]]:
    """Every ``fold<k>/`` holding ``config.json`` or ``best.weights.h5`` under ``roots`` (default:
    SIIM_INPUT and /kaggle/input), sorted; plus the problems (a root that does not exist, a fold
    folder of another experiment is silently left out). A root may itself be a fold folder."""
    from .runs import find_runs

    problems: list[str] = []
    found = find_runs(roots, exp=exp, max_depth=max_depth, problems=problems)
    return found, [p.replace("runs: ", "study folds: ", 1) for p in problems]


def resolve_fold_hub(handle: str, override: str | None = None) -> str:
    """The backbone SavedModel for a fold whose ``config.json`` names ``handle``.

    A folder that exists or a URL goes through :func:`siimcovid.study.model.resolve_hub_handle`
    (a URL becomes the mounted Kaggle Models copy). A local path from the training machine that
    does not exist here (``work/tiny_hub`` on the kernel that trained) is looked up by
    ``saved_model.pb`` under SIIM_INPUT and /kaggle/input, preferring a folder of the same name.
    The weights file holds every weight, the backbone's too: only the architecture must match."""
    from .paths import search_roots
    from .study.model import resolve_hub_handle

    if override:
        return resolve_hub_handle(override)
    if os.path.isdir(handle) or handle.startswith(("http://", "https://", "gs://")):
        return resolve_hub_handle(handle)
    name = Path(handle).name
    hits: list[Path] = []
    for root in search_roots(None):
        if not root.is_dir():
            continue
        for d, dirs, files in _walk(root, 10):
            if "saved_model.pb" in files:
                hits.append(d)
                dirs[:] = []
    if not hits:
        raise FileNotFoundError(f"hub handle {handle!r}: not a folder here and no saved_model.pb under "
                                f"{[str(r) for r in search_roots(None)]} (pass --hub or add the model to the kernel)")
    same = [h for h in hits if h.name == name]
    pick = (same or hits)[0]
    get_logger().info("hub handle %s -> %s", handle, pick)
    return str(pick)


def fold_config(fold_dir: Path):
    from .study.config import from_json

    path = fold_dir / FOLD_CONFIG
    if not path.is_file():
        raise FoldError(f"{fold_dir}: no {FOLD_CONFIG} (cannot tell how the fold was built)")
    try:
        return from_json(path)
    except (ValueError, TypeError) as exc:
        raise FoldError(f"{path}: unreadable config ({type(exc).__name__}: {exc})") from exc


def fold_src_size(fold_dir: Path, cfg, train_pre: Path | None = None) -> int:
    """The images/<S>/ size the fold was trained on: config src_size, else what training picked
    (fold_score.json), else what it would pick from ``train_pre``, else its input size."""
    if cfg.src_size:
        return int(cfg.src_size)
    from .runs import src_size

    recorded = src_size(fold_dir)  # config.json src_size (runs.write_config), else fold_score.json
    if recorded:
        return recorded
    if train_pre is not None:
        from .study.dataset import pick_src_size

        try:
            return pick_src_size(train_pre, cfg.image_size)
        except FileNotFoundError:
            pass
    return int(cfg.image_size)


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
    from .preprocess import PreprocessConfig, run

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


def load_fold_model(fold_dir: Path, cfg, hub: str | None = None):
    """Build the fold's model and load its best weights; FoldError naming the cause otherwise."""
    from .study.model import build_model

    weights = fold_dir / WEIGHTS
    if not weights.is_file():
        raise FoldError(f"{fold_dir}: no {WEIGHTS} (fold unfinished or not mounted)")
    try:
        cfg = replace(cfg, hub_handle=resolve_fold_hub(cfg.hub_handle, hub))
        model = build_model(cfg)
        model.load_weights(str(weights))
    except FoldError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means "this fold cannot predict"
        raise FoldError(f"{fold_dir}: cannot build/load the model ({type(exc).__name__}: {one_line(exc)})") from exc
    return model


def _set_policy(cfg) -> None:
    """The fold's mixed-precision policy on this device (float32 on CPU), as training chose it."""
    import tensorflow as tf

    from .study.train import set_precision

    set_precision(cfg, "gpu" if tf.config.list_physical_devices("GPU") else "cpu")


def predict_folds(fold_dirs: Sequence[Path], pre_test: Path, *, train_pre: Path | None = None,
                  hub: str | None = None, batch_size: int | None = None, tta: bool | None = None,
                  threads: int = 0, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Image-level test predictions of every fold that loads -> (frame image_id, study_id,
    source (the fold folder), p_* (TTA when on); info with per-fold status). Empty when none loads."""
    from tqdm.auto import tqdm

    from .study.dataset import load_meta
    from .study.evaluate import PROB_COLS, TTA_COLS, predict_frame

    log = get_logger()
    info: dict = {"folds": {}, "used": [], "skipped": []}
    parts: list[pd.DataFrame] = []
    if fold_dirs:
        import tf_keras

        from .study.train import set_threads

        set_threads(threads)
    for d in tqdm(list(fold_dirs), desc="study folds", disable=not progress or None):
        t0 = time.time()
        try:
            cfg = fold_config(d)
            if batch_size:
                cfg = replace(cfg, batch_size=int(batch_size))
            use_tta = cfg.tta_hflip if tta is None else bool(tta)
            src = fold_src_size(d, cfg, train_pre)
            try:
                test = load_meta(pre_test, src, split="test")
            except (FileNotFoundError, ValueError) as exc:
                raise FoldError(f"{d}: test images at {src} px not available ({exc})") from exc
            _set_policy(cfg)
            model = load_fold_model(d, cfg, hub)
            try:
                pred = predict_frame(model, test, cfg, tta=use_tta)
            except Exception as exc:  # noqa: BLE001 - e.g. out of GPU memory: the other folds still count
                raise FoldError(f"{d}: prediction failed ({type(exc).__name__}: {one_line(exc)}); try a smaller "
                                f"batch_size") from exc
        except FoldError as exc:
            log.warning("study fold skipped: %s", exc)
            info["folds"][str(d)] = {"status": "skipped", "reason": str(exc)}
            info["skipped"].append(str(d))
            continue
        finally:
            tf_keras.backend.clear_session()
        cols = TTA_COLS if use_tta else PROB_COLS
        part = pred[["image_id", "study_id"]].copy()
        part[PROB_COLS] = pred[cols].to_numpy()
        part["source"] = str(d)
        parts.append(part)
        info["folds"][str(d)] = {"status": "used", "exp": cfg.name, "fold": cfg.fold, "image_size": cfg.image_size,
                                 "src_size": src, "tta": use_tta, "study_agg": cfg.study_agg,
                                 "n_images": len(pred), "seconds": round(time.time() - t0, 2)}
        info["used"].append(str(d))
        log.info("study fold %s: %d test images in %.1f s (src %d px, input %d px, TTA %s)", d, len(pred),
                 time.time() - t0, src, cfg.image_size, use_tta)
    if not parts:
        return pd.DataFrame(columns=["image_id", "study_id", "source", *PROB_COLS]), info
    allp = pd.concat(parts, ignore_index=True)
    info["n_folds_per_image"] = allp.groupby("image_id")["source"].nunique().value_counts().to_dict()
    return allp, info


def study_from_images(images: pd.DataFrame, how: str = "mean") -> pd.DataFrame:
    """Per-fold image probabilities (p_*, ``source``) -> the study predictions CSV, by the same
    rule as study-merge (:func:`siimcovid.study.evaluate.ensemble_study`)."""
    from .study.evaluate import PROB_COLS, ensemble_study

    return ensemble_study(images, PROB_COLS, how)[0]


def predict_study(fold_dirs: Sequence[Path], pre_test: Path, data_dir: Path, *, train_pre: Path | None = None,
                  hub: str | None = None, batch_size: int | None = None, tta: bool | None = None,
                  agg: str | None = None, threads: int = 0, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Study predictions for every test study of the sample: the folds' mean where a study has a
    predicted image, the train class priors otherwise (all of them when no fold loads)."""
    from .baseline import class_priors

    log = get_logger()
    images, info = predict_folds(fold_dirs, pre_test, train_pre=train_pre, hub=hub, batch_size=batch_size,
                                 tta=tta, threads=threads, progress=progress)
    aggs = {v["study_agg"] for v in info["folds"].values() if v["status"] == "used"}
    how = agg or (aggs.pop() if len(aggs) == 1 else "mean")
    study = study_from_images(images, how)
    priors = class_priors(read_study_csv(Path(data_dir) / STUDY_CSV))
    info.update(aggregation=how, priors=dict(zip(STUDY_CLASSES, priors.round(6).tolist())))
    wanted = sample_ids(data_dir)[0]
    missing = [s for s in wanted if s not in set(study["study_id"])]
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
        raise ValueError(f"{train_pre}/meta.csv: no train rows with images at {size} px")
    te_meta, _, te_images = load_preprocessed(pre_test, size)
    te_keep = np.flatnonzero(te_meta["split"].to_numpy() == "test")
    if len(te_keep) == 0:
        raise ValueError(f"{pre_test}/meta.csv: no test images at {size} px")
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
    """The baseline's writer (build_submission over sample_submission.csv), then validation ->
    (submission, build problems, validation problems)."""
    from .baseline import write_submission as build_and_write
    from .submission import validate_submission

    sub, build_problems = build_and_write(Path(data_dir), study, image, out, image_sizes=image_sizes)
    return sub, build_problems, validate_submission(out, data_dir)


def score_if_truth(sub: pd.DataFrame, data_dir: Path) -> dict | None:
    """The metric against ``data_dir/truth`` (synthetic sets); None when there is no truth."""
    from .metric import find_truth_files, json_ready, score_submission

    if not (Path(data_dir) / "truth").is_dir():
        return None
    study_csv, image_csv = find_truth_files(Path(data_dir) / "truth")
    return json_ready(score_submission(sub, read_study_csv(study_csv), read_image_csv(image_csv)))


# ---------------------------------------------------------------------------------------
# The whole kernel
# ---------------------------------------------------------------------------------------


def check_learner_options(options: dict) -> dict:
    """``InferConfig.learner`` keys must be LearnerConfig fields (values coerced from text)."""
    from dataclasses import fields

    from .baseline import LearnerConfig

    valid = {f.name: f for f in fields(LearnerConfig)}
    out = {}
    for k, v in (options or {}).items():
        if k not in valid or k in ("work", "seed"):
            raise ValueError(f"learner option {k!r} unknown; valid: {sorted(set(valid) - {'work', 'seed'})}")
        default = getattr(LearnerConfig(), k)
        if isinstance(v, str):
            v = json.loads(v) if not isinstance(default, str) else v
        out[k] = tuple(v) if isinstance(default, tuple) else type(default)(v)
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


def learner_size(train_pre: Path | None, size: int | None) -> int | None:
    if size:
        return int(size)
    if train_pre is None:
        return None
    from .study.dataset import image_sizes

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

    # which sizes the test images are needed at
    folds, fold_problems = find_fold_dirs(cfg.study_work, cfg.exp)
    for p in fold_problems:
        log.warning(p)
    sizes: set[int] = set()
    for d in folds:
        try:
            sizes.add(fold_src_size(d, fold_config(d), train_pre))
        except FoldError:
            pass  # reported when the fold is loaded
    l_size = learner_size(train_pre, cfg.size)
    if l_size:
        sizes.add(l_size)
    if not sizes:
        sizes.add(256)  # nothing will read them, but the test images' sizes are still needed for clipping
    summary.update(fold_dirs=[str(d) for d in folds], fold_problems=fold_problems, test_sizes=sorted(sizes),
                   learner_size=l_size)
    log.info("infer: %d study fold(s) found; test images at %s px; learner at %s px", len(folds), sorted(sizes), l_size)

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

    # 2. study rows
    t0 = time.time()
    study, study_info = predict_study(folds, pre_test, data, train_pre=train_pre, hub=cfg.hub,
                                      batch_size=cfg.batch_size, tta=cfg.tta, agg=cfg.agg, threads=cfg.threads,
                                      progress=cfg.progress)
    study.to_csv(out / STUDY_OUT, index=False)
    timing["study"] = round(time.time() - t0, 2)
    summary["study"] = study_info

    # 3. image rows
    t0 = time.time()
    image, image_info = None, {"predictor": None}
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
    image.to_csv(out / IMAGE_OUT, index=False)
    image_info.update(n_prior_images=len(prior_images), prior_images=prior_images[:50],
                      n_boxes=int(image["boxes"].map(lambda s: len(json.loads(s))).sum()))
    if prior_images and predicted:
        log.warning("infer: %d test image(s) without a prediction get the prior row, e.g. %s", len(prior_images),
                    prior_images[:3])
    timing["image"] = round(time.time() - t0, 2)
    summary["image"] = image_info

    # 4. submission
    t0 = time.time()
    sub, build_problems, problems = write_submission(data, study, image, out / SUBMISSION,
                                                     image_sizes_from_meta(pre_test))
    timing["submission"] = round(time.time() - t0, 2)
    summary.update(n_rows=len(sub), build_problems=build_problems, validation_problems=problems,
                   n_fallback=sub.attrs.get("n_fallback"))
    summary["score"] = score_if_truth(sub, data)
    timing["total"] = round(time.time() - t_start, 2)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2, default=str))
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
    probs = s["validation_problems"]
    lines.append("validation: OK" if not probs else f"validation: {len(probs)} problem(s)")
    lines += [f"  {i:4d}. {p}" for i, p in enumerate(probs[:20], start=1)]
    if s.get("score"):
        lines.append(f"score (DATA/truth): {s['score']['score']:.4f}  study mAP {s['score']['study_map']:.4f}  "
                     f"image mAP {s['score']['image_map']:.4f}")
    return "\n".join(lines)


def config_from_params(**params) -> InferConfig:
    """An InferConfig from notebook parameters: papermill's ``-p study_work /a`` passes one
    string, ``-p size 128`` may arrive as text; ``None`` / "" mean "find it" / the default."""
    kw = {k: v for k, v in params.items() if v is not None and v != ""}
    unknown = set(kw) - set(InferConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"inference: unknown parameters {sorted(unknown)}")
    if isinstance(kw.get("study_work"), (str, os.PathLike)):
        kw["study_work"] = [str(p) for p in str(kw["study_work"]).split(os.pathsep) if p]
    elif "study_work" in kw:
        kw["study_work"] = [str(p) for p in kw["study_work"]]
    for k in ("size", "limit", "batch_size", "workers", "threads", "seed", "learner_work"):
        if k in kw:
            kw[k] = int(kw[k])
    if isinstance(kw.get("tta"), str):
        kw["tta"] = kw["tta"].strip().lower() in ("1", "true", "on", "yes")
    return InferConfig(**kw)


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
    ap = argparse.ArgumentParser(prog="python -m siimcovid infer", description=cli.__doc__)
    ap.add_argument("--data", default=None, help="competition folder (default: found by sample_submission.csv)")
    ap.add_argument("--train-pre", default=None, help="train preprocess output (meta.csv + images/<S>/train)")
    ap.add_argument("--study-work", nargs="*", default=None,
                    help="folders holding fold*/ (default: search SIIM_INPUT and /kaggle/input)")
    ap.add_argument("--out", default=None, help="output folder (default /kaggle/working or ./work/inference)")
    ap.add_argument("--size", type=int, default=None, help="the learner's image size (default: smallest in --train-pre)")
    ap.add_argument("--limit", type=int, default=0, help="convert at most N test images (smoke runs)")
    ap.add_argument("--exp", default=None, help="only folds of this experiment")
    ap.add_argument("--hub", default=None, help="backbone SavedModel folder for every fold")
    ap.add_argument("--batch-size", type=int, default=None, help="prediction batch (default: the fold's)")
    ap.add_argument("--tta", choices=("config", "on", "off"), default="config", help="hflip TTA (default: the fold's)")
    ap.add_argument("--agg", choices=("mean", "max"), default=None, help="image -> study (default: the folds')")
    ap.add_argument("--workers", type=int, default=0, help="preprocess worker processes (0 = one per core)")
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0 = TF default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--learner-work", type=int, default=64, help="the learner's working resolution (px)")
    ap.add_argument("--learner-set", action="append", default=[], metavar="KEY=VALUE",
                    help="another LearnerConfig field (repeatable), e.g. --learner-set patch_iter=50")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    bad = [x for x in a.learner_set if "=" not in x]
    if bad:
        ap.error(f"--learner-set expects KEY=VALUE, got {bad}")
    cfg = InferConfig(data=a.data, train_pre=a.train_pre, study_work=a.study_work, out=a.out, size=a.size,
                      limit=a.limit, exp=a.exp, hub=a.hub, batch_size=a.batch_size,
                      tta={"config": None, "on": True, "off": False}[a.tta], agg=a.agg, workers=a.workers,
                      threads=a.threads, seed=a.seed, learner_work=a.learner_work,
                      learner=dict(x.split("=", 1) for x in a.learner_set), progress=not a.no_progress)
    try:
        summary = run(cfg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"infer: {exc}")
        return 2
    print(format_summary(summary))
    if summary["score"] is not None:
        print(json.dumps(summary["score"]))
    return 1 if summary["validation_problems"] else 0
