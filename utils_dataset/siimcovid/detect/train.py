"""Train one fold of a detector (``python -m siimcovid det-train``) with mmengine's Runner.

Writes ``<workdir>/<variant>[_r<round>]/fold<k>/``: ``coco/train.json``, mmengine's
``epoch_<n>.pth`` (one per epoch, the last two kept) and logs, ``model.pth`` (plain tensors:
what prediction and the inference kernel load), ``history.csv`` + ``loss.png``,
``oof.csv`` / ``test.csv`` (see predict.py), ``config.json`` (the resolved config),
``fold_score.json``. Re-running the same command resumes after the last finished epoch.

Both T4s of a Kaggle GPU session: ``torchrun --nproc_per_node=2 -m siimcovid det-train ...
--launcher pytorch`` (mmdet's distributed launcher; rank 0 writes the COCO file and predicts).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

from ..accelerator import torch_device
from ..errors import UserError
from ..layout import find_preprocess
from ..log import get_logger, run_header
from ..runs import (HISTORY_CSV, INIT_WEIGHTS, LOSS_PNG, MODEL_PTH, OOF_CSV, SCORES_JSON, TEST_CSV, claim, fold_dir,
                    write_config)
from . import coco
from . import config as C
from ..tables import write_detector
from .predict import figures, load_model, predict_images


def exp_name(cfg) -> str:
    r = int(cfg.siim.get("round", 1))
    return cfg.siim["variant"] + (f"_r{r}" if r > 1 else "")


def run_dir(cfg, workdir: str | Path) -> Path:
    return fold_dir(Path(workdir) / exp_name(cfg), int(cfg.siim["fold"]))


@contextlib.contextmanager
def trusted_checkpoint_load():
    """mmengine 0.10.7 reloads its own checkpoints with a bare ``torch.load``, and since torch 2.6
    that means ``weights_only=True``, which refuses the HistoryBuffer / numpy objects mmengine saves
    in them: resume fails. Within this block (resume only: the run's own files) torch.load keeps
    the old default; everything else stays strict."""
    import torch

    original = torch.load

    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def last_checkpoint(out: Path) -> Path | None:
    marker = out / "last_checkpoint"
    if marker.exists():
        p = Path(marker.read_text().strip())
        if p.exists():
            return p
    ckpts = sorted(out.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    return ckpts[-1] if ckpts else None


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _read_pseudo(cfg) -> pd.DataFrame | None:
    if int(cfg.siim.get("round", 1)) < 2:
        return None
    src = cfg.siim.get("pseudo")
    if not src:  # on Kaggle: the pseudo-label file of an attached kernel's output
        from ..paths import find_input
        from .pseudo import PSEUDO_CSV

        with contextlib.suppress(FileNotFoundError):
            src = str(find_input(PSEUDO_CSV) / PSEUDO_CSV)
    if not src or not Path(src).exists():
        raise UserError(f"round {cfg.siim['round']} needs siim.pseudo = the pseudo_labels.csv of "
                        f"`python -m siimcovid det-pseudo` (got {src!r})")
    return pd.read_csv(src, dtype={"image_id": str})


def export_weights(runner, path: Path) -> Path:
    """The model's weights as plain tensors (loads with torch's safe default, no optimizer)."""
    import torch

    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": {"epoch": int(runner.epoch), "classes": list(coco.CLASSES)}}, path)
    return path


def history(out: Path) -> pd.DataFrame:
    """Training scalars of every (resumed) session of the run, in step order."""
    rows = []
    for f in sorted(out.glob("*/vis_data/scalars.json")):
        for line in f.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    df = pd.DataFrame(rows)
    if len(df) and "step" in df:
        df = df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
    return df


def plot_loss(hist: pd.DataFrame, path: Path) -> Path | None:
    if not len(hist) or "loss" not in hist:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for col in [c for c in hist.columns if c.startswith("loss")]:
        ax.plot(hist["step"], hist[col], label=col, lw=1.5 if col == "loss" else 0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    ax.set_title(path.parent.parent.name + " / " + path.parent.name)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def train_fold(cfg, *, preprocess=None, workdir="work/det", launcher: str = "none", predict: bool = True,
               progress: bool = True, table: tuple[pd.DataFrame, str, Path] | None = None) -> dict:
    """Train (or resume) one fold, then predict its held-out and the test images. Returns fold_score.
    Rank 0 claims the fold folder first (:func:`siimcovid.runs.claim`): a second run refuses (the
    other ranks of one torchrun launch are the same run).

    ``table``: (rows as :func:`coco.load_meta` returns them, what they are, the run folder) instead of
    the competition's preprocess output and the fold folder (pre-training on external sets)."""
    out = table[2] if table else run_dir(cfg, workdir)
    with claim(out) if rank() == 0 else contextlib.nullcontext():
        return _train_fold(cfg, preprocess=preprocess, out=out, launcher=launcher, predict=predict,
                           progress=progress, table=table)


def _train_fold(cfg, *, preprocess, out: Path, launcher: str, predict: bool, progress: bool, table) -> dict:
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    log = get_logger()
    s = cfg.siim
    size, fold = int(s["size"]), int(s["fold"])
    device = torch_device()  # a GPU session whose torch sees no CUDA stops here, loudly, before any write
    if device == "cpu":  # repeatable for a seed (demo, tests); a GPU keeps its fast nondeterministic kernels
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
    if table is None:
        pre = find_preprocess(preprocess or s.get("preprocess"))
        meta = coco.load_meta(pre, size)
    else:
        meta, pre = table[0], table[1]
    pseudo = _read_pseudo(cfg)
    # every check above raises before anything is written
    out.mkdir(parents=True, exist_ok=True)
    train_json, train_rows, held = coco.write_fold(meta, fold, size, out / "coco", empty_rate=float(s["empty_rate"]),
                                                   seed=int(s["seed"]), pseudo=pseudo)
    C.prepare(cfg, out, train_json)
    cfg.launcher = launcher
    resume_from = last_checkpoint(out)
    # resume=True with load_from set would "resume" from the COCO weights: resume only from our own epochs
    if resume_from is not None:
        cfg.resume, cfg.load_from = True, str(resume_from)
    resolved = {"siim": dict(s), "preprocess": str(pre), INIT_WEIGHTS: s.get("init_weights"), "src_size": size, "exp": exp_name(cfg), "fold": fold,
                "n_train_images": int(len(train_rows)), "n_oof_images": int(len(held)),
                "mmdet_config": cfg.to_dict()}
    if rank() == 0:
        write_config(out, resolved)
        run_header("det-train", {**dict(s), "resume_from": str(resume_from) if resume_from else None}, out)
    log.info("det-train %s fold %d: %d training images (%d boxes), %d held out, weights from %s, resume from %s",
             exp_name(cfg), fold, len(train_rows), int(train_rows["boxes_frame"].map(len).sum()), len(held),
             s.get("init_weights") or "random init", resume_from)
    register_all_modules()
    t0 = time.time()
    runner = Runner.from_cfg(cfg)
    plain_load_or_resume = runner.load_or_resume

    def load_or_resume():
        with trusted_checkpoint_load():
            plain_load_or_resume()

    runner.load_or_resume = load_or_resume
    runner.train()
    train_seconds = time.time() - t0
    if rank() != 0:
        return {}
    export_weights(runner, out / MODEL_PTH)
    hist = history(out)
    hist.to_csv(out / HISTORY_CSV, index=False)
    plot_loss(hist, out / LOSS_PNG)
    score = {"exp": exp_name(cfg), "fold": fold, "variant": s["variant"], "round": int(s.get("round", 1)),
             "epochs": int(cfg.train_cfg.max_epochs), "train_seconds": round(train_seconds, 1), "run_dir": str(out)}
    if predict:
        score.update(predict_fold(cfg, out, meta, held, device=device, progress=progress))
    (out / SCORES_JSON).write_text(json.dumps(score, indent=1))
    return score


def predict_fold(cfg, out: Path, meta: pd.DataFrame, held: pd.DataFrame, device: str = "cpu",
                 progress: bool = True) -> dict:
    """oof.csv (held-out images) and test.csv of one fold, and the OOF figures."""
    s = cfg.siim
    model = load_model(cfg, out / MODEL_PTH, device=device)
    kw = dict(tta=dict(s["tta"]), wbf=dict(s["wbf"]), batch=int(s.get("predict_batch", 8)), progress=progress)
    oof = predict_images(model, held, int(s["size"]), **kw)
    write_detector(oof, out / OOF_CSV)
    test = meta[meta["split"] == "test"]
    write_detector(predict_images(model, test, int(s["size"]), **kw) if len(test) else [], out / TEST_CSV)
    truth = dict(zip(meta["image_id"], meta["boxes"]))
    oof_df = pd.DataFrame(oof) if oof else pd.DataFrame(columns=["image_id", "boxes", "boxes_notta"])
    return figures(oof_df, truth)


# ------------------------------------------------------------------------------------ cli
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siimcovid det-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=C.DEFAULT_VARIANT, help=f"variant: one of {C.variants()} or a .py path "
                   f"(default {C.DEFAULT_VARIANT})")
    p.add_argument("--fold", type=int, nargs="+", default=[0], help="fold(s) to train, one after another")
    p.add_argument("--size", type=int, default=None, help="input px = siim.size (preprocess must hold it)")
    p.add_argument("--round", type=int, default=None, help="pseudo-label round (2+: needs --pseudo)")
    p.add_argument("--pseudo", default=None, help="pseudo_labels.csv of det-pseudo (round 2+)")
    p.add_argument("--preprocess", default=None, help="preprocess output (meta.csv); default: search inputs")
    p.add_argument("--workdir", default=None, help="default /kaggle/working on Kaggle, else work/det")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. train_cfg.max_epochs=2, siim.empty_rate=0.2")
    p.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm", "mpi"],
                   help="pytorch under torchrun for several GPUs")
    p.add_argument("--no-predict", action="store_true", help="train only (no oof.csv/test.csv)")
    p.add_argument("--no-progress", action="store_true")
    return p


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def torchrun_command(argv: list[str], gpus: int, command: str = "det-train") -> list[str]:
    """``command`` (det-train, pretrain-det) under torchrun on ``gpus`` GPUs (mmdet's distributed
    launcher, one process per GPU)."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={int(gpus)}", "--master_port=29517",
            "-m", "siimcovid", command, *argv, "--launcher", "pytorch"]


def run(config=None, folds=(0,), *, size=None, train_round=None, pseudo=None, overrides=None, preprocess=None,
        workdir=None, gpus=None, progress=True, init_from=None) -> list[dict]:
    """The notebook's one call: train + predict ``folds``; on several GPUs through torchrun
    (a child process per GPU), else in this process. Returns each fold's fold_score."""
    import subprocess

    from ..paths import working_dir

    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in (overrides or {}).items()]
    for key, value in (("siim.size", size), ("siim.round", train_round), ("siim.pseudo", pseudo),
                       ("siim.init_from", init_from)):
        if value is not None:
            sets.append(f"{key}={value}")
    workdir = Path(workdir) if workdir else working_dir("work/det")
    gpus = gpu_count() if gpus is None else int(gpus)
    scores = []
    for fold in folds:
        cfg = C.load(config, sets + [f"siim.fold={int(fold)}"])  # a bad config fails here, before any launch
        if gpus > 1:
            argv = ["--config", str(config or C.DEFAULT_VARIANT), "--fold", str(int(fold)), "--workdir", str(workdir)]
            argv += ["--preprocess", str(preprocess)] if preprocess else []
            for item in sets:
                argv += ["--set", item]
            subprocess.run(torchrun_command(argv, gpus), check=True)
            scores.append(json.loads((run_dir(cfg, workdir) / SCORES_JSON).read_text()))
        else:
            scores.append(train_fold(cfg, preprocess=preprocess, workdir=workdir, progress=progress))
    return scores


def cli(argv: list[str]) -> int:
    from ..paths import working_dir

    args = build_parser().parse_args(argv)
    sets = list(args.set)
    if args.size is not None:
        sets.append(f"siim.size={args.size}")
    if args.round is not None:
        sets.append(f"siim.round={args.round}")
    if args.pseudo is not None:
        sets.append(f"siim.pseudo={args.pseudo}")
    workdir = args.workdir or working_dir("work/det")
    for fold in args.fold:
        cfg = C.load(args.config, sets + [f"siim.fold={fold}"])
        score = train_fold(cfg, preprocess=args.preprocess, workdir=workdir, launcher=args.launcher,
                           predict=not args.no_predict, progress=not args.no_progress)
        if score:
            print(json.dumps(score), file=sys.stdout)
    return 0
