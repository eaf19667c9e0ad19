"""Run logs that say what ran, with which config and seed."""
from __future__ import annotations

import json
import logging
import platform
import random
import subprocess
import sys
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np


def get_logger(name: str = "siimcovid") -> logging.Logger:
    logger = logging.getLogger(name)
    if not logging.getLogger().handlers and not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except Exception:
        return None


def run_header(stage: str, config: Any, out_dir: str | Path | None = None) -> dict:
    """Log (and save as ``run.json`` in ``out_dir``) the stage, config, seed and versions."""
    cfg = asdict(config) if is_dataclass(config) else dict(config)
    info = {
        "stage": stage,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": platform.python_version(),
        "host": platform.node(),
        "git": _git_commit(),
        "config": cfg,
    }
    get_logger().info("%s config: %s", stage, json.dumps(cfg, default=str, sort_keys=True))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps(info, indent=2, default=str))
    return info
