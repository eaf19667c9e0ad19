"""The prediction tables of a trained fold (``oof.csv`` / ``test.csv``, docs/contracts.md): their
columns, which member kind a table belongs to, and one reader per kind.

Every stage writes the tables through its own trainer (the study and binary tasks through the
classifier core, the detector through :func:`write_detector`); every reader (the merges, the
ensemble, the noisy student, pseudo-labels) reads them here, so a table is checked the same way
wherever it is read. A reader raises ValueError naming the file and the problem.

- study classifier: ``image_id, study_id, fold, p_<class>`` for the four classes, the same with
  ``_tta`` (hflip; filled with the plain columns when absent), ``study_label`` on OOF;
- binary `none` classifier: ``image_id, study_id, fold, p_none, p_none_tta`` (filled with
  ``p_none`` when absent), ``has_box`` on OOF;
- detector: ``image_id, orig_h, orig_w, boxes, boxes_notta``, boxes as JSON lists of
  ``[x0, y0, x1, y1, score]`` in ORIGINAL pixels (read back as (N, 5) arrays).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .atomic import write_csv
from .data import STUDY_CLASSES
from .submission import as_pred_boxes, parse_pred_boxes

KINDS = ("study", "binary", "detect")
PROB_COLS = [f"p_{c}" for c in STUDY_CLASSES]
TTA_COLS = [f"p_{c}_tta" for c in STUDY_CLASSES]
P_NONE, P_NONE_TTA = "p_none", "p_none_tta"
HAS_BOX = "has_box"
DET_COLUMNS = ["image_id", "orig_h", "orig_w", "boxes", "boxes_notta"]
DET_BOX_COLS = ("boxes", "boxes_notta")


def kind_of(columns: Sequence[str]) -> str | None:
    """The member kind of a table with these columns (None: none of them)."""
    cols = set(columns)
    if set(PROB_COLS) <= cols:
        return "study"
    if P_NONE in cols:
        return "binary"
    if set(DET_BOX_COLS) <= cols:
        return "detect"
    return None


def header(path: str | Path) -> list[str]:
    return list(pd.read_csv(path, nrows=0).columns)


def _read_csv(path: Path, dtype: dict) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=dtype)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError / EmptyDataError are ValueErrors
        raise ValueError(f"{path}: unreadable CSV ({type(exc).__name__}: {exc})") from None


def _require(df: pd.DataFrame, path: Path, need: Sequence[str], kind: str) -> None:
    missing = set(need) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} (not a {kind} prediction table)")


def read_study(path: str | Path) -> pd.DataFrame:
    """A study fold's table; without the TTA columns they are the plain ones."""
    path = Path(path)
    df = _read_csv(path, {"image_id": str, "study_id": str})
    _require(df, path, ["image_id", "study_id", *PROB_COLS], "study")
    if not set(TTA_COLS) <= set(df.columns):
        df[TTA_COLS] = df[PROB_COLS].to_numpy()
    return df


def read_binary(path: str | Path, *, truth: bool = False) -> pd.DataFrame:
    """A binary fold's table (``truth``: an OOF table, which must carry ``has_box``); without
    ``p_none_tta`` it is ``p_none``. Predictions must be finite and in [0, 1], image ids unique."""
    path = Path(path)
    df = _read_csv(path, {"image_id": str, "study_id": str})
    _require(df, path, ["image_id", "study_id", P_NONE, *([HAS_BOX] if truth else [])], "binary")
    if P_NONE_TTA not in df:
        df[P_NONE_TTA] = df[P_NONE]
    vals = df[[P_NONE, P_NONE_TTA]].to_numpy(dtype=np.float64)
    if not np.isfinite(vals).all() or (vals < 0).any() or (vals > 1).any():
        raise ValueError(f"{path}: predictions missing or outside [0, 1]")
    if truth and not df[HAS_BOX].isin((0, 1)).all():
        raise ValueError(f"{path}: {HAS_BOX} must be 0 or 1")
    if df["image_id"].duplicated().any():
        raise ValueError(f"{path}: image {df.loc[df['image_id'].duplicated(), 'image_id'].iloc[0]} repeats")
    return df


def read_detector(path: str | Path) -> pd.DataFrame:
    """A detector table with ``boxes`` / ``boxes_notta`` as (N, 5) arrays."""
    path = Path(path)
    df = _read_csv(path, {"image_id": str})
    _require(df, path, DET_COLUMNS, "detector")
    for c in DET_BOX_COLS:
        try:
            df[c] = df[c].map(parse_pred_boxes)
        except ValueError as exc:  # bad JSON (json.JSONDecodeError is a ValueError) or not (N, 5)
            raise ValueError(f"{path}: column {c}: {exc}") from None
    return df


READERS = {"study": read_study, "binary": read_binary, "detect": read_detector}


def read(kind: str, path: str | Path, *, oof: bool = False) -> pd.DataFrame:
    """The table of a ``kind`` member; ``oof``: an out-of-fold table (a binary one must carry its truth)."""
    if kind not in READERS:
        raise ValueError(f"prediction table kind {kind!r}: use one of {list(READERS)}")
    return read_binary(path, truth=oof) if kind == "binary" else READERS[kind](path)


def boxes_json(pred) -> str:
    """Boxes as the JSON text of a detector table (coordinates to 0.1 px, scores to 5 digits)."""
    return json.dumps([[round(float(v), 1) for v in b[:4]] + [round(float(b[4]), 5)] for b in as_pred_boxes(pred)])


def write_detector(rows: Sequence[dict], path: str | Path) -> Path:
    """Rows of ``DET_COLUMNS`` (boxes as arrays) -> a detector table, replaced atomically."""
    df = pd.DataFrame([{**r, **{c: boxes_json(r[c]) for c in DET_BOX_COLS}} for r in rows], columns=DET_COLUMNS)
    return write_csv(df, path)  # a reader never sees half a file
