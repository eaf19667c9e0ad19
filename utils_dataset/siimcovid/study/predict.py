"""The study stage's predictor: trained fold folders -> test image predictions.

The inference kernel calls :func:`test_sizes` and :func:`predict_folds` (the public predictor; the
ensemble makes study rows of them); every fold is built from its own ``config.json``
(the resolved config, with the source size it read) and ``best.weights.h5``, predicts the test
images with hflip TTA as it was configured, and a fold that cannot load or predict is reported
and skipped (:class:`FoldError`), the others go on.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..preprocess.dicom import one_line
from ..log import get_logger

from ..runs import BEST_WEIGHTS as WEIGHTS, CONFIG_JSON as FOLD_CONFIG
from .config import StudyConfig


class FoldError(RuntimeError):
    """A fold that cannot predict; the message names its folder and the reason."""


# ---------------------------------------------------------------------------------------
# Finding the folds
# ---------------------------------------------------------------------------------------


def _walk(root: Path, max_depth: int):
    """Depth-limited walk that skips DICOM trees and preprocess images (siimcovid.runs.walk)."""
    from ..runs import walk

    return walk(root, max_depth)


def find_fold_dirs(roots: Sequence[str | os.PathLike] | None = None, exp: str | None = None,
                   max_depth: int = 8) -> tuple[list[Path], list[str]]:
    """Every ``fold<k>/`` holding ``config.json`` or ``best.weights.h5`` under ``roots`` (default:
    SIIM_INPUT and /kaggle/input), sorted; plus the problems (a root that does not exist, a fold
    folder of another experiment is silently left out). A root may itself be a fold folder."""
    from ..runs import find_runs

    problems: list[str] = []
    found = find_runs(roots, exp=exp, max_depth=max_depth, problems=problems)
    return found, [p.replace("runs: ", "study folds: ", 1) for p in problems]


def resolve_fold_hub(handle: str, override: str | None = None) -> str:
    """The backbone SavedModel for a fold whose ``config.json`` names ``handle``.

    A folder that exists or a URL goes through :func:`siimcovid.classify.backbones.resolve_hub_handle`
    (a URL becomes the mounted Kaggle Models copy). A local path from the training machine that
    does not exist here (``work/tiny_hub`` on the kernel that trained) is looked up by
    ``saved_model.pb`` under SIIM_INPUT and /kaggle/input, preferring a folder of the same name.
    The weights file holds every weight, the backbone's too: only the architecture must match."""
    from ..classify.backbones import resolve_hub_handle
    from ..paths import search_roots

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
    from .config import from_json

    path = fold_dir / FOLD_CONFIG
    if not path.is_file():
        raise FoldError(f"{fold_dir}: no {FOLD_CONFIG} (cannot tell how the fold was built)")
    try:
        return from_json(path)
    except (ValueError, TypeError) as exc:
        raise FoldError(f"{path}: unreadable config ({type(exc).__name__}: {exc})") from exc


def load_fold_model(fold_dir: Path, cfg, hub: str | None = None):
    """Build the fold's model and load its best weights; FoldError naming the cause otherwise."""
    from ..classify.backbones import build_model, for_trained_weights
    from .task import STUDY

    cfg = for_trained_weights(cfg)
    weights = fold_dir / WEIGHTS
    if not weights.is_file():
        raise FoldError(f"{fold_dir}: no {WEIGHTS} (fold unfinished or not mounted)")
    try:
        if cfg.model == "hub":  # the other families carry every weight in the weights file
            cfg = replace(cfg, hub_handle=resolve_fold_hub(cfg.hub_handle, hub))
        model = build_model(cfg, STUDY.n_outputs, STUDY.activation)
        model.load_weights(str(weights))
    except FoldError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means "this fold cannot predict"
        raise FoldError(f"{fold_dir}: cannot build/load the model ({type(exc).__name__}: {one_line(exc)})") from exc
    return model


def _set_policy(cfg) -> None:
    """The fold's mixed-precision policy on this device (float32 on CPU), as training chose it."""
    import tensorflow as tf

    from ..classify.runtime import set_policy

    set_policy(cfg.mixed_precision, "gpu" if tf.config.list_physical_devices("GPU") else "cpu")


def predict_frame(model, df: pd.DataFrame, cfg: StudyConfig, tta: bool | None = None) -> pd.DataFrame:
    """image_id, study_id, fold, p_* (plain) and p_*_tta (mean of plain and hflip; equal to the
    plain columns when TTA is off), study_label when known: the core's prediction, study task."""
    from ..classify.predict import predict_frame as predict
    from .task import STUDY

    return predict(model, df, cfg, STUDY, tta)


def predict_folds(fold_dirs: Sequence[Path], pre_test: Path, *, train_pre: Path | None = None,
                  hub: str | None = None, batch_size: int | None = None, tta: bool | None = None,
                  threads: int = 0, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Image-level test predictions of every fold that loads -> (frame image_id, study_id,
    source (the fold folder), p_* (TTA when on); info with per-fold status). Empty when none loads."""
    from tqdm.auto import tqdm

    from ..classify.data import load_meta
    from ..runs import src_size as fold_src_size
    from ..tables import PROB_COLS, TTA_COLS

    log = get_logger()
    info: dict = {"folds": {}, "used": [], "skipped": []}
    parts: list[pd.DataFrame] = []
    if fold_dirs:
        import tf_keras

        from ..classify.runtime import prepare

        prepare(threads)
    for d in tqdm(list(fold_dirs), desc="study folds", disable=not progress or None):
        t0 = time.time()
        try:
            cfg = fold_config(d)
            if batch_size:
                cfg = replace(cfg, batch_size=int(batch_size))
            use_tta = cfg.tta_hflip if tta is None else bool(tta)
            src = fold_src_size(d, train_pre)
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


def test_sizes(fold_dirs: Sequence[Path], train_pre: Path | None = None) -> set[int]:
    """The images/<S>/ sizes the folds read (a fold that cannot tell is reported when it loads)."""
    from ..runs import src_size

    return {s for s in (src_size(d, train_pre) for d in fold_dirs) if s}
