"""Test-time prediction of binary `none` folds (the inference kernel's binary members).

Each fold goes through the shared classifier core: its saved config, its best weights,
``classify.predict.predict_frame`` with hflip TTA. A fold that cannot predict is skipped and
recorded; the others go on.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

from ..errors import reraise_interrupts
from ..runs import FoldReport

COLUMNS = ["image_id", "study_id", "p_none", "p_none_tta"]


def predict_folds(fold_dirs: Sequence[Path], pre_test: Path, *, hub: str | None = None,
                  batch_size: int | None = None, tta: bool | None = None,
                  threads: int = 0) -> tuple[list[pd.DataFrame], dict]:
    """-> (one table per fold that predicted, shaped like its test.csv: image_id, study_id,
    p_none, p_none_tta; info with each fold's status, ``used`` and ``skipped``)."""
    import tf_keras

    from ..classify.backbones import build_model, for_trained_weights
    from ..classify.predict import predict_frame
    from ..classify.runtime import prepare, set_policy
    from ..layout import read_meta
    from ..runs import BEST_WEIGHTS, CONFIG_JSON
    from ..runs import src_size as run_src_size
    from .config import from_json
    from .task import BINARY

    prepare(int(threads or 0))
    tables, report = [], FoldReport("binary")
    for d in fold_dirs:
        t0 = time.time()
        try:
            cfg = for_trained_weights(from_json(Path(d) / CONFIG_JSON))
            if batch_size:
                cfg = dataclasses.replace(cfg, batch_size=int(batch_size))
            if getattr(cfg, "model", None) == "hub":
                from ..study.predict import resolve_fold_hub

                cfg = dataclasses.replace(cfg, hub_handle=resolve_fold_hub(cfg.hub_handle, hub))
            src = run_src_size(d) or int(cfg.image_size)
            test = read_meta(pre_test, src, split="test")
            set_policy(getattr(cfg, "mixed_precision", "off"), _tf_device())
            model = build_model(cfg, BINARY.n_outputs, BINARY.activation)
            model.load_weights(str(Path(d) / BEST_WEIGHTS))
            pred = predict_frame(model, test, cfg, BINARY, tta=tta)
        except BaseException as exc:  # noqa: BLE001 - one fold that cannot predict never stops the kernel
            reraise_interrupts(exc)
            report.skipped(d, exc)
            continue
        finally:
            tf_keras.backend.clear_session()
        tables.append(pred[COLUMNS].reset_index(drop=True))
        report.used(d, len(pred), time.time() - t0)
    return tables, report.info


def _tf_device() -> str:
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
