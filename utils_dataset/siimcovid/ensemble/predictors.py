"""Each member kind's test-time predictor, behind one signature, and the budget probe.

``predict(kind, fold_dirs, pre_test, options) -> (fold tables, info)``: the fold tables have the
shape of that stage's own ``test.csv`` (docs/contracts.md), so the merge reads test predictions
made in the kernel exactly like the OOF tables it was fitted on. The stages own their prediction
code; this module only adapts their calls. A fold that cannot predict is skipped and recorded
in ``info``; a kind whose predictor is absent raises :class:`MemberUnavailable` (the caller
reports it and merges the other members).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..errors import reraise_interrupts
from ..log import get_logger
from .budget import Timing


class MemberUnavailable(RuntimeError):
    """No test-time predictor for this kind of member in this package version."""


def _read_test_meta(pre_test: Path, size: int) -> pd.DataFrame:
    from ..layout import read_meta

    return read_meta(pre_test, size, split="test")


def src_size(kind: str, fold_dir: Path) -> int | None:
    """The images/<S>/ size a fold reads (so the test preprocess writes it)."""
    from ..runs import read_config, src_size as _src

    s = _src(fold_dir)
    if s:
        return int(s)
    try:
        cfg = read_config(fold_dir)
    except (OSError, ValueError):
        return None
    for key in ("src_size", "image_size"):
        if cfg.get(key):
            return int(cfg[key])
    siim = cfg.get("siim") or {}
    return int(siim["size"]) if siim.get("size") else None


# ------------------------------------------------------------------------------------ study
def predict_study(fold_dirs: Sequence[Path], pre_test: Path, options: dict) -> tuple[list[pd.DataFrame], dict]:
    """study/predict.py's predict_folds (image rows per fold, ``source`` = the fold folder)."""
    try:
        from ..study.predict import predict_folds
    except ImportError as exc:
        raise MemberUnavailable(f"study members: siimcovid.study.predict.predict_folds is not in this package ({exc})"
                                ) from None
    allp, info = predict_folds(list(fold_dirs), Path(pre_test), train_pre=options.get("train_pre"),
                               hub=options.get("hub"), batch_size=options.get("batch_size"),
                               tta=options.get("tta"), threads=options.get("threads", 0),
                               progress=options.get("progress", True))
    tables = [g.drop(columns="source").reset_index(drop=True) for _, g in allp.groupby("source", sort=True)]
    return tables, info


# ------------------------------------------------------------------------------------ binary
def predict_binary(fold_dirs: Sequence[Path], pre_test: Path, options: dict) -> tuple[list[pd.DataFrame], dict]:
    """Each binary fold through the shared classifier core (``classify``: the fold's saved config,
    its best weights, ``predict_frame`` with hflip TTA) -> tables shaped like its test.csv
    (image_id, study_id, p_none, p_none_tta)."""
    import dataclasses

    import tf_keras

    from ..binary.config import from_json
    from ..binary.task import BINARY
    from ..classify.backbones import build_model
    from ..classify.predict import predict_frame
    from ..classify.runtime import set_policy, set_threads
    from ..layout import read_meta
    from ..runs import BEST_WEIGHTS, CONFIG_JSON
    from ..runs import src_size as run_src_size

    log = get_logger()
    set_threads(int(options.get("threads") or 0))
    tables, info = [], {"folds": {}, "used": [], "skipped": []}
    for d in fold_dirs:
        t0 = time.time()
        try:
            cfg = from_json(Path(d) / CONFIG_JSON)
            if options.get("batch_size"):
                cfg = dataclasses.replace(cfg, batch_size=int(options["batch_size"]))
            if getattr(cfg, "model", None) == "hub":
                from ..study.predict import resolve_fold_hub

                cfg = dataclasses.replace(cfg, hub_handle=resolve_fold_hub(cfg.hub_handle, options.get("hub")))
            src = run_src_size(d) or int(cfg.image_size)
            test = read_meta(pre_test, src, split="test")
            set_policy(getattr(cfg, "mixed_precision", "off"), _tf_device())
            model = build_model(cfg, BINARY.n_outputs, BINARY.activation)
            model.load_weights(str(Path(d) / BEST_WEIGHTS))
            pred = predict_frame(model, test, cfg, BINARY, tta=options.get("tta"))
        except BaseException as exc:  # noqa: BLE001 - one fold that cannot predict never stops the kernel
            reraise_interrupts(exc)
            log.warning("binary fold skipped: %s: %s: %s", d, type(exc).__name__, exc)
            info["folds"][str(d)] = {"status": "skipped", "reason": f"{type(exc).__name__}: {exc}"}
            info["skipped"].append(str(d))
            continue
        finally:
            tf_keras.backend.clear_session()
        tables.append(pred[["image_id", "study_id", "p_none", "p_none_tta"]].reset_index(drop=True))
        info["folds"][str(d)] = {"status": "used", "n_images": len(pred), "seconds": round(time.time() - t0, 2)}
        info["used"].append(str(d))
    return tables, info


def _tf_device() -> str:
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


# ------------------------------------------------------------------------------------ detect
def predict_detect(fold_dirs: Sequence[Path], pre_test: Path, options: dict) -> tuple[list[pd.DataFrame], dict]:
    """detect/predict.py: each fold's model.pth with its resolved mmdet config, flip TTA fused with
    WBF as the fold was trained to, boxes in original pixels."""
    from mmengine.config import Config

    from ..detect.predict import load_model, predict_images
    from ..detect.train import MODEL_PTH
    from ..runs import read_config

    log = get_logger()
    tables, info = [], {"folds": {}, "used": [], "skipped": []}
    device = options.get("device") or _torch_device()
    for d in fold_dirs:
        t0 = time.time()
        try:
            resolved = read_config(d)
            cfg = Config(resolved["mmdet_config"])
            s = resolved.get("siim") or dict(cfg.get("siim", {}))
            size = int(resolved.get("src_size") or s["size"])
            meta = _read_test_meta(pre_test, size)
            model = load_model(cfg, Path(d) / MODEL_PTH, device=device)
            rows = predict_images(model, meta, size, tta=dict(s.get("tta", {"hflip": True})), wbf=dict(s.get("wbf", {})),
                                  batch=int(options.get("batch_size") or s.get("predict_batch", 8)),
                                  progress=options.get("progress", True))
        except BaseException as exc:  # noqa: BLE001 - one fold that cannot predict never stops the kernel
            reraise_interrupts(exc)
            log.warning("detector fold skipped: %s: %s: %s", d, type(exc).__name__, exc)
            info["folds"][str(d)] = {"status": "skipped", "reason": f"{type(exc).__name__}: {exc}"}
            info["skipped"].append(str(d))
            continue
        tables.append(pd.DataFrame(rows, columns=["image_id", "orig_h", "orig_w", "boxes", "boxes_notta"]))
        info["folds"][str(d)] = {"status": "used", "n_images": len(rows), "seconds": round(time.time() - t0, 2)}
        info["used"].append(str(d))
    return tables, info


def _torch_device() -> str:
    try:
        from ..accelerator import torch_device

        return torch_device()
    except ImportError:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


PREDICTORS: dict[str, Callable] = {"study": predict_study, "binary": predict_binary, "detect": predict_detect}


def predict(kind: str, fold_dirs: Sequence[Path], pre_test: Path, options: dict | None = None):
    return PREDICTORS[kind](list(fold_dirs), Path(pre_test), dict(options or {}))


# ------------------------------------------------------------------------------------ budget probe
def make_probe(pre_test: Path, out: Path, n: int) -> Path:
    """A preprocess-shaped folder holding the first ``n`` test images of ``pre_test`` (meta rows +
    links to their PNGs at every size), for timing a member before the full set."""
    pre_test, out = Path(pre_test), Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    meta = pd.read_csv(pre_test / "meta.csv", dtype=str)
    meta = meta[meta["split"] == "test"].head(int(n))
    meta.to_csv(out / "meta.csv", index=False)
    for size_dir in sorted((pre_test / "images").glob("*")):
        dst = out / "images" / size_dir.name / "test"
        dst.mkdir(parents=True, exist_ok=True)
        for i in meta["image_id"]:
            src = size_dir / "test" / f"{i}.png"
            if src.is_file():
                try:
                    os.symlink(src.resolve(), dst / src.name)
                except OSError:
                    shutil.copy2(src, dst / src.name)
    return out


def time_member(kind: str, name: str, fold_dirs: Sequence[Path], pre_test: Path, work: Path, options: dict,
                n_small: int = 1, n_large: int = 9) -> Timing:
    """Time ONE fold of a member on ``n_small`` then ``n_large`` test images: the difference gives
    seconds per image, the rest is the per-fold load cost; the member costs that times its folds.
    A first, untimed call on ``n_small`` images pays the one-off costs (imports, library set-up)
    that would otherwise be counted as the first fold's load."""
    fold = [list(fold_dirs)[0]]
    opts = {**options, "progress": False}
    elapsed = {}
    predict(kind, fold, make_probe(pre_test, Path(work) / "probe_warmup", n_small), opts)
    for n in (n_small, n_large):
        probe = make_probe(pre_test, Path(work) / f"probe_{n}", n)
        n_real = len(pd.read_csv(probe / "meta.csv"))
        t0 = time.perf_counter()
        tables, info = predict(kind, fold, probe, opts)
        elapsed[n_real] = time.perf_counter() - t0
        if not tables:
            reasons = [v.get("reason") for v in (info.get("folds") or {}).values() if v.get("reason")]
            raise RuntimeError(f"{kind}:{name}: the fold {fold[0]} predicted nothing on the probe images "
                               f"({'; '.join(reasons) or 'no reason given'})")
    (n1, t1), (n2, t2) = sorted(elapsed.items())
    if n2 > n1 and t2 > t1:
        per = (t2 - t1) / (n2 - n1)
        load = max(0.0, t1 - per * n1)
    else:  # noise larger than the per-image cost (tiny models, a busy machine): the safe upper bound
        per, load = t2 / max(n2, 1), 0.0
    return Timing(name, kind, per, units=len(list(fold_dirs)), n_timed=n2, load_s=load)
