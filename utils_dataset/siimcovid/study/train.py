"""Train one fold of the study classifier (``python -m siimcovid study-train``).

Writes ``<workdir>/<exp>/fold<k>/``: best.weights.h5, last.ckpt* + state.json (resume),
history.csv/.png, oof.csv, test.csv, config.json, run.json, fold_score.json. Re-running the
same command continues after the last finished epoch (the optimizer step, hence the learning
rate schedule, comes back with the checkpoint).

Noisy student: with ``teacher=`` (the previous round's output: any folder holding its
``fold*/oof.csv`` and ``test.csv``, e.g. its kernel outputs under /kaggle/input) the training
targets become ``soft_weight * teacher + (1 - soft_weight) * one-hot`` and, with
``pseudo_test``, the test images join the training set with the teacher's fold-averaged
predictions as targets (their mask is unknown and left out of the mask loss).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

# the strategy / precision rules (and the guard against an attached but unusable accelerator)
# live in siimcovid.accelerator; the names stay importable from here
from ..accelerator import get_strategy, set_precision, tpu_present  # noqa: F401
from ..log import get_logger, run_header, seed_everything
from .config import StudyConfig, load_config
from .evaluate import OOF_CSV, PROB_COLS, TEST_CSV, TTA_COLS, predict_frame, read_pred_csv, study_map_from_images

if TYPE_CHECKING:
    import tensorflow as tf

from ..runs import (  # noqa: E402  (a run folder's file names live in runs.py)
    BEST_WEIGHTS, CKPT_PREFIX, HISTORY_CSV, HISTORY_PNG, SCORES_JSON, STATE_JSON, write_config,
)


# --------------------------------------------------------------------------- runtime
def set_threads(n: int) -> None:
    import tensorflow as tf

    if n > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # already initialised in this process
            pass


# --------------------------------------------------------------------------- noisy student
def _roots(spec: str) -> list[Path]:
    parts = [p for chunk in spec.split(os.pathsep) for p in chunk.split(",") if p.strip()]
    out = []
    for p in parts:
        path = Path(p.strip())
        if not path.exists():
            raise FileNotFoundError(f"teacher folder {path} not found")
        out.append(path)
    return out


def load_teacher(spec: str, use_tta: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The previous round's image-level predictions: (OOF by image_id, test averaged over folds).

    Columns image_id + p_* (the TTA columns when ``use_tta`` and present); OOF rows come from the
    fold that held the image out. Files are read with :func:`evaluate.read_pred_csv`, so a broken
    one stops the round with its path named (a student must not silently lose its targets)."""
    cols = TTA_COLS if use_tta else PROB_COLS
    parts: dict[str, list[pd.DataFrame]] = {OOF_CSV: [], TEST_CSV: []}
    for root in _roots(spec):
        for name, found in parts.items():
            for p in sorted(root.rglob(name)):
                if p.parent.name.startswith("fold"):
                    df = read_pred_csv(p)  # lacking TTA columns: they are filled with the plain ones
                    found.append(df[["image_id", *cols]].set_axis(["image_id", *PROB_COLS], axis=1))
    oof_parts, test_parts = parts[OOF_CSV], parts[TEST_CSV]
    if not oof_parts:
        raise FileNotFoundError(f"teacher {spec!r}: no fold*/oof.csv found")
    oof = pd.concat(oof_parts).groupby("image_id", as_index=False)[PROB_COLS].mean()
    test = (pd.concat(test_parts).groupby("image_id", as_index=False)[PROB_COLS].mean()
            if test_parts else pd.DataFrame(columns=["image_id", *PROB_COLS]))
    return oof, test


def student_targets(train: pd.DataFrame, test: pd.DataFrame, cfg: StudyConfig) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict]:
    """Rows to train on, their class targets and whether their mask is known."""
    from .dataset import onehot

    hard = onehot(train["study_label"].to_numpy())
    info: dict = {"round": cfg.round, "n_train": len(train)}
    if not cfg.teacher:
        return train, hard, np.ones(len(train), bool), info
    t_oof, t_test = load_teacher(cfg.teacher)
    soft = train[["image_id"]].merge(t_oof, on="image_id", how="left")[PROB_COLS].to_numpy(np.float32)
    have = ~np.isnan(soft).any(axis=1)
    targets = hard.copy()
    targets[have] = cfg.soft_weight * soft[have] + (1 - cfg.soft_weight) * hard[have]
    info.update(teacher=cfg.teacher, soft_weight=cfg.soft_weight, n_soft=int(have.sum()),
                n_without_teacher=int((~have).sum()))
    rows, known = train, np.ones(len(train), bool)
    if cfg.pseudo_test and len(test) and len(t_test):
        pt = test.merge(t_test, on="image_id", how="inner")
        if len(pt):
            rows = pd.concat([train, pt.drop(columns=PROB_COLS)], ignore_index=True)
            targets = np.concatenate([targets, pt[PROB_COLS].to_numpy(np.float32)])
            known = np.concatenate([known, np.zeros(len(pt), bool)])
        info["n_pseudo_test"] = len(pt)
    return rows, targets.astype(np.float32), known, info


# --------------------------------------------------------------------------- history
def plot_history(history: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for col in [c for c in history.columns if c.endswith("loss")]:
        axes[0].plot(history["epoch"], history[col], marker="o", label=col)
    axes[0].set_xlabel("epoch"); axes[0].set_title("losses"); axes[0].legend(fontsize=8)
    for col in [c for c in ("val_map", "val_map_tta") if c in history]:
        axes[1].plot(history["epoch"], history[col], marker="o", label=col)
    axes[1].set_xlabel("epoch"); axes[1].set_title("validation study mAP"); axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------- the fold
def train_fold(cfg: StudyConfig) -> dict:
    """Train (or resume) one fold, then write its OOF and test predictions. -> fold summary."""
    import tensorflow as tf

    from ..paths import find_input
    from ..layout import META_CSV
    from .dataset import load_meta, make_train_dataset, pick_src_size, train_val_split
    from .model import build_model, compile_model

    log = get_logger()
    out = cfg.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    tf.random.set_seed(cfg.seed)
    strategy, device = get_strategy()
    policy = set_precision(cfg, device)
    header = run_header("study-train", cfg, out)
    log.info("fold %d -> %s (device %s, %d replica(s), precision %s, git %s)", cfg.fold, out, device,
             strategy.num_replicas_in_sync, policy, header.get("git"))
    write_config(out, cfg)

    pre = find_input(META_CSV, hint=cfg.preprocess)
    src = pick_src_size(pre, cfg.image_size, cfg.src_size, cfg.input_format)
    write_config(out, cfg, src_size=src)  # the resolved source size: readers never re-derive it
    meta = load_meta(pre, src, input_format=cfg.input_format)
    train, val = train_val_split(meta, cfg.fold, cfg.positive_boxed_only)
    test = meta[meta["split"] == "test"].reset_index(drop=True)
    rows, targets, known, info = student_targets(train, test, cfg)
    info.update(preprocess=str(pre), src_size=src, input_format=cfg.input_format, n_val=len(val), n_test=len(test),
                n_rows=len(rows))
    log.info("data: %s", info)

    steps = cfg.steps_per_epoch or max(1, len(rows) // cfg.batch_size)
    train_ds = make_train_dataset(rows, targets, cfg, src, mask_known=known, training=True)
    with strategy.scope():
        model = build_model(cfg)
        compile_model(model, cfg, steps)
        model.optimizer.build(model.trainable_variables)  # slots exist before a restore
    log.info("model %s: %d params, aux decoder %s", model.name, model.count_params(), model.aux_design)

    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    state_path, hist_path = out / STATE_JSON, out / HISTORY_CSV
    state = {"epochs_done": 0, "best_map": -1.0, "best_epoch": -1}
    if state_path.exists() and (out / f"{CKPT_PREFIX}.index").exists():
        state.update(json.loads(state_path.read_text()))
        ckpt.read(str(out / CKPT_PREFIX)).assert_existing_objects_matched()
        log.info("resumed from %s after epoch %d (best mAP %.4f at epoch %d)", out / CKPT_PREFIX,
                 state["epochs_done"], state["best_map"], state["best_epoch"])
    history = pd.read_csv(hist_path) if hist_path.exists() and state["epochs_done"] else pd.DataFrame()
    history = history[history["epoch"] < state["epochs_done"]] if len(history) else history

    for epoch in range(state["epochs_done"], cfg.epochs):
        t0 = time.time()
        h = model.fit(train_ds, initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps, verbose=cfg.verbose)
        pred = predict_frame(model, val, cfg, tta=False)
        val_map = study_map_from_images(pred, PROB_COLS, cfg.study_agg)["map"]
        row = {"epoch": epoch, **{k: float(v[-1]) for k, v in h.history.items()},
               "val_map": val_map, "lr": float(model.optimizer.learning_rate(model.optimizer.iterations))
               if callable(model.optimizer.learning_rate) else float(model.optimizer.learning_rate),
               "seconds": time.time() - t0}
        history = pd.concat([history, pd.DataFrame([row])], ignore_index=True)
        if val_map > state["best_map"] or state["best_epoch"] < 0:
            model.save_weights(str(out / BEST_WEIGHTS))
            state.update(best_map=float(val_map), best_epoch=epoch)
        state["epochs_done"] = epoch + 1
        ckpt.write(str(out / CKPT_PREFIX))
        history.to_csv(hist_path, index=False)
        state_path.write_text(json.dumps(state, indent=2))
        log.info("fold %d epoch %d/%d: loss %.4f val study mAP %.4f (best %.4f @ %d) %.0fs", cfg.fold, epoch + 1,
                 cfg.epochs, row.get("loss", math.nan), val_map, state["best_map"], state["best_epoch"], row["seconds"])
    if len(history):
        plot_history(history, out / HISTORY_PNG)

    model.load_weights(str(out / BEST_WEIGHTS))
    oof = predict_frame(model, val, cfg)
    oof.to_csv(out / OOF_CSV, index=False)
    tst = predict_frame(model, test, cfg)
    tst.drop(columns=["study_label"], errors="ignore").to_csv(out / TEST_CSV, index=False)
    score = {
        "fold": cfg.fold, "exp": cfg.name, "best_epoch": state["best_epoch"], "epochs_done": state["epochs_done"],
        "oof_study_map": study_map_from_images(oof, PROB_COLS, cfg.study_agg)["map"],
        "oof_study_map_tta": study_map_from_images(oof, TTA_COLS, cfg.study_agg)["map"],
        "n_oof_images": len(oof), "n_test_images": len(tst), "data": info,
    }
    (out / SCORES_JSON).write_text(json.dumps(score, indent=2, default=str))
    log.info("fold %d OOF study mAP %.4f (hflip TTA %.4f) -> %s", cfg.fold, score["oof_study_map"],
             score["oof_study_map_tta"], out)
    return score


def cli(argv: list[str]) -> int:
    """Train one fold of the study classifier (resumes when its folder holds a checkpoint)."""
    ap = argparse.ArgumentParser(prog="python -m siimcovid study-train", description=cli.__doc__)
    ap.add_argument("--config", default=None, help="variant name in siimcovid/configs/study/ or a YAML path")
    ap.add_argument("--fold", type=int, nargs="+", default=None, help="fold(s) to train (default: the config's)")
    ap.add_argument("--preprocess", default=None, help="preprocess output folder (holds meta.csv)")
    ap.add_argument("--workdir", default=None, help="parent of <exp>/fold<k>/")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config key (repeatable), e.g. --set image_size=128")
    ap.add_argument("--make-tiny-hub", metavar="DIR", default=None,
                    help="write a tiny local hub-style SavedModel to DIR (for CPU demos/tests) and exit")
    ap.add_argument("--tiny-width", type=int, default=16, help="channels of the first stage (x2 per stage)")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    a = ap.parse_args(argv)
    if a.make_tiny_hub:
        from .model import export_tiny_savedmodel

        print(f"wrote {export_tiny_savedmodel(a.make_tiny_hub, width=a.tiny_width)}")
        return 0
    overrides = {k: v for k, v in (("preprocess", a.preprocess), ("workdir", a.workdir)) if v}
    folds = a.fold or [None]
    for fold in folds:
        o = dict(overrides, **({"fold": fold} if fold is not None else {}))
        cfg = load_config(a.config, overrides=o, sets=a.sets)
        if a.print_config:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        score = train_fold(cfg)
        print(f"fold {cfg.fold}: OOF study mAP {score['oof_study_map']:.4f} "
              f"(hflip TTA {score['oof_study_map_tta']:.4f}) -> {cfg.out_dir()}")
    return 0
