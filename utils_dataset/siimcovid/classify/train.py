"""The shared fit loop: train one fold of a :class:`~siimcovid.classify.task.Task`, resumable.

Writes ``<workdir>/<exp>/fold<k>/``: best.weights.h5, last.ckpt* + state.json (resume),
history.csv/.png, oof.csv, test.csv, config.json (resolved: with the source size read), run.json,
fold_score.json. Re-running the same command continues after the last finished epoch (the
optimizer step, hence the learning rate schedule, comes back with the checkpoint).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

from ..atomic import write_csv, write_json
from ..log import get_logger, run_header, seed_everything
from .runtime import keras

if TYPE_CHECKING:
    from .config import ClassifierConfig
    from .task import Task

# A run folder's file names live in siimcovid.runs (one place for writers and readers).
from ..runs import (  # noqa: E402,F401
    BEST_WEIGHTS, CKPT_PREFIX, CONFIG_JSON, HISTORY_CSV, HISTORY_PNG, OOF_CSV, SCORES_JSON, STATE_JSON, TEST_CSV,
    write_config,
)


def masked_bce_jaccard(y_true, y_pred):
    """sm's ``bce_jaccard_loss`` over the pixels of images whose mask is known: an unknown mask
    (target UNKNOWN_MASK, e.g. a test pseudo-label) is zeroed in target and prediction, which
    adds nothing to the intersection or union and ~0 to the BCE."""
    import segmentation_models as sm
    import tensorflow as tf

    y_pred = tf.cast(y_pred, tf.float32)
    known = tf.cast(y_true >= 0.0, tf.float32)
    return sm.losses.bce_jaccard_loss(y_true * known, y_pred * known)


def lr_schedule(cfg: "ClassifierConfig", steps_per_epoch: int):
    import tensorflow as tf

    K = keras()
    total = max(1, int(cfg.epochs * steps_per_epoch))
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    class WarmupCosine(K.optimizers.schedules.LearningRateSchedule):
        """Linear warm-up then cosine to lr_min (or constant); follows optimizer.iterations, so
        a resumed run continues the curve."""

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            if cfg.schedule == "constant":
                decay = tf.constant(cfg.lr)
            else:
                t = tf.clip_by_value((step - warm) / max(1, total - warm), 0.0, 1.0)
                decay = cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + tf.cos(np.pi * t))
            if warm > 0:
                return tf.where(step < warm, cfg.lr * (step + 1.0) / warm, decay)
            return decay

        def get_config(self):
            return {"lr": cfg.lr, "lr_min": cfg.lr_min, "warmup_steps": warm, "total_steps": total}

    return WarmupCosine()


def compile_model(model, cfg: "ClassifierConfig", steps_per_epoch: int, task: "Task") -> None:
    K = keras()
    lr = lr_schedule(cfg, steps_per_epoch)
    if cfg.optimizer == "adamw":
        opt = K.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        opt = K.optimizers.Adam(learning_rate=lr)
    elif cfg.optimizer == "sgd":
        opt = K.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True)
    else:
        raise ValueError(f"optimizer must be adamw, adam or sgd, got {cfg.optimizer!r}")
    losses = {"cls": task.loss(cfg)}
    weights = {"cls": cfg.cls_weight}
    if cfg.aux_seg:
        losses["seg"] = masked_bce_jaccard
        weights["seg"] = cfg.seg_weight
        if cfg.aux_heads > 1:
            losses["seg2"] = masked_bce_jaccard
            weights["seg2"] = cfg.seg_weight
    model.compile(optimizer=opt, loss=losses, loss_weights=weights,
                  metrics={"cls": [task.accuracy()]})


# --------------------------------------------------------------------------- history
def plot_history(history: pd.DataFrame, path: Path, metric: str = "val_map", title: str = "validation metric") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for col in [c for c in history.columns if c.endswith("loss")]:
        axes[0].plot(history["epoch"], history[col], marker="o", label=col)
    axes[0].set_xlabel("epoch"); axes[0].set_title("losses"); axes[0].legend(fontsize=8)
    for col in [c for c in (metric, f"{metric}_tta") if c in history]:
        axes[1].plot(history["epoch"], history[col], marker="o", label=col)
    axes[1].set_xlabel("epoch"); axes[1].set_title(title); axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------- the fold
def train_fold(cfg: "ClassifierConfig", task: "Task") -> dict:
    """Train (or resume) one fold of ``task``, then write its OOF and test predictions. -> fold summary.
    The fold folder is claimed first (:func:`siimcovid.runs.claim`): a second process refuses."""
    from ..runs import claim

    with claim(cfg.out_dir()):
        return _train_fold(cfg, task)


def _train_fold(cfg: "ClassifierConfig", task: "Task") -> dict:
    import tensorflow as tf

    from ..paths import find_input
    from ..layout import META_CSV
    from .backbones import build_model
    from ..layout import pick_size
    from .data import load_meta, make_train_dataset
    from .predict import predict_frame
    from .runtime import setup

    log = get_logger()
    out = cfg.out_dir()
    pre = find_input(META_CSV, hint=cfg.preprocess)
    src = pick_size(pre, cfg.image_size, cfg.src_size, cfg.input_format)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    keras().utils.set_random_seed(cfg.seed)  # Python, NumPy, TF and Keras's own seed generator (TF's recipe)
    strategy, device, policy = setup(cfg)
    header = run_header(f"{task.name}-train", cfg, out)
    log.info("%s fold %d -> %s (device %s, %d replica(s), precision %s, git %s)", task.name, cfg.fold, out, device,
             strategy.num_replicas_in_sync, policy, header.get("git"))
    # the RESOLVED config: the source size chosen above, so a reader never re-derives it
    write_config(out, cfg, src_size=src)

    meta = load_meta(pre, src, input_format=cfg.input_format)
    train, val = task.split(meta, cfg)
    test = meta[meta["split"] == "test"].reset_index(drop=True)
    rows, targets, known, info = task.targets(train, test, cfg)
    if targets.shape != (len(rows), task.n_outputs):
        raise ValueError(f"{task.name}.targets: {targets.shape} targets for {len(rows)} rows and "
                         f"{task.n_outputs} outputs")
    info.update(preprocess=str(pre), src_size=src, input_format=cfg.input_format, n_val=len(val), n_test=len(test),
                n_rows=len(rows))
    log.info("data: %s", info)

    steps = cfg.steps_per_epoch or max(1, len(rows) // cfg.batch_size)
    train_ds = make_train_dataset(rows, targets, cfg, src, mask_known=known, training=True)
    with strategy.scope():
        model = build_model(cfg, task.n_outputs, task.activation)
        compile_model(model, cfg, steps, task)
        model.optimizer.build(model.trainable_variables)  # slots exist before a restore
    log.info("model %s: %d params, aux decoder %s", model.name, model.count_params(), model.aux_design)

    metric = task.metric_name
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    state_path, hist_path = out / STATE_JSON, out / HISTORY_CSV
    state = {"epochs_done": 0, "best_metric": -1.0, "best_epoch": -1}
    if state_path.exists() and (out / f"{CKPT_PREFIX}.index").exists():
        saved = json.loads(state_path.read_text())
        saved.setdefault("best_metric", saved.pop("best_map", -1.0))  # (state files of the study stage's first runs)
        state.update(saved)
        ckpt.read(str(out / CKPT_PREFIX)).assert_existing_objects_matched()
        log.info("resumed from %s after epoch %d (best %s %.4f at epoch %d)", out / CKPT_PREFIX,
                 state["epochs_done"], metric, state["best_metric"], state["best_epoch"])
    history = pd.read_csv(hist_path) if hist_path.exists() and state["epochs_done"] else pd.DataFrame()
    history = history[history["epoch"] < state["epochs_done"]] if len(history) else history

    for epoch in range(state["epochs_done"], cfg.epochs):
        t0 = time.time()
        h = model.fit(train_ds, initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps, verbose=cfg.verbose)
        value = task.metric(predict_frame(model, val, cfg, task, tta=False), list(task.columns), cfg)
        row = {"epoch": epoch, **{k: float(v[-1]) for k, v in h.history.items()},
               metric: value, "lr": float(model.optimizer.learning_rate(model.optimizer.iterations))
               if callable(model.optimizer.learning_rate) else float(model.optimizer.learning_rate),
               "seconds": time.time() - t0}
        history = pd.concat([history, pd.DataFrame([row])], ignore_index=True)
        if value > state["best_metric"] or state["best_epoch"] < 0:
            model.save_weights(str(out / BEST_WEIGHTS))
            state.update(best_metric=float(value), best_epoch=epoch)
        state["epochs_done"] = epoch + 1
        ckpt.write(str(out / CKPT_PREFIX))
        write_csv(history, hist_path)
        write_json(state_path, state, indent=2)  # the resume state: never half a file
        log.info("fold %d epoch %d/%d: loss %.4f %s %.4f (best %.4f @ %d) %.0fs", cfg.fold, epoch + 1, cfg.epochs,
                 row.get("loss", math.nan), metric, value, state["best_metric"], state["best_epoch"], row["seconds"])
    if len(history):
        plot_history(history, out / HISTORY_PNG, metric, task.metric_title)

    model.load_weights(str(out / BEST_WEIGHTS))
    oof = predict_frame(model, val, cfg, task)
    write_csv(oof, out / OOF_CSV)  # merges and the ensemble read these: atomically
    tst = predict_frame(model, test, cfg, task)
    write_csv(tst.drop(columns=list(task.label_columns), errors="ignore"), out / TEST_CSV)
    score = {"fold": cfg.fold, "exp": cfg.name, "best_epoch": state["best_epoch"], "epochs_done": state["epochs_done"],
             **task.scores(oof, cfg), "n_oof_images": len(oof), "n_test_images": len(tst), "data": info}
    write_json(out / SCORES_JSON, score, indent=2, default=str)
    log.info("%s fold %d OOF %s -> %s", task.name, cfg.fold,
             ", ".join(f"{k} {v:.4f}" for k, v in score.items() if k.startswith("oof_")), out)
    return score
