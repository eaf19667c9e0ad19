"""PredictionStrings: the one place they are written, parsed and checked.

A study row reads ``negative p 0 0 1 1 typical p 0 0 1 1 indeterminate p 0 0 1 1 atypical
p 0 0 1 1``; an image row ``opacity conf x0 y0 x1 y1 ... none p 0 0 1 1`` with boxes in the
ORIGINAL DICOM pixel frame. Numbers are written positionally (never ``1e-07``: we do not
know how lenient Kaggle's parser is): confidences with 6 significant digits, pixel
coordinates rounded to 0.1 px.

Module-level imports stay light (numpy, pandas); pydicom loads only to read image sizes.
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .data import (
    IMAGE_CLASSES,
    IMAGE_SUFFIX,
    SAMPLE_SUBMISSION,
    STUDY_CLASSES,
    STUDY_SUFFIX,
    strip_suffix,
)

HEADER: tuple[str, str] = ("id", "PredictionString")
FULL_BOX: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
# What sample_submission.csv holds, and the fallback for a row without a prediction.
DEFAULT_STUDY = "negative 1 0 0 1 1"
DEFAULT_IMAGE = "none 1 0 0 1 1"
# Probabilities this far outside [0, 1] are float noise and get clipped; further is an error.
PROB_TOLERANCE = 1e-6

Prediction = tuple[str, float, float, float, float, float]


class SubmissionError(ValueError):
    """A PredictionString or submission file is malformed; the message names the row/file.

    ``problems`` holds every problem found when several were collected."""

    def __init__(self, message: str, problems: Sequence[str] | None = None):
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems else [message]


# ---------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------


def format_confidence(p: float) -> str:
    """6 significant digits, positional: 0.5 -> '0.5', 1.0 -> '1', 1.2345678e-7 -> '0.000000123457'."""
    return np.format_float_positional(float(p), precision=6, unique=False, fractional=False, trim="-")


def format_pixel(x: float) -> str:
    """Rounded to 0.1 px: 12.0 -> '12', 789.28836 -> '789.3' (+0.0 turns -0.0 into 0)."""
    return np.format_float_positional(round(float(x), 1) + 0.0, precision=1, unique=False, fractional=True, trim="-")


def _probability(p: object, what: str) -> float:
    try:
        v = float(p)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what}: not a number: {p!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{what}: not finite: {v}")
    if v < -PROB_TOLERANCE or v > 1 + PROB_TOLERANCE:
        raise ValueError(f"{what}: {v} is outside [0, 1]")
    return min(max(v, 0.0), 1.0)


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def format_study_prediction(probs: Sequence[float]) -> str:
    """Four probabilities in ``data.STUDY_CLASSES`` order -> the study PredictionString."""
    probs = list(np.asarray(probs, dtype=object).ravel())
    if len(probs) != len(STUDY_CLASSES):
        raise ValueError(f"expected {len(STUDY_CLASSES)} study probabilities {STUDY_CLASSES}, got {len(probs)}")
    parts = []
    for cls, p in zip(STUDY_CLASSES, probs):
        parts.append(f"{cls} {format_confidence(_probability(p, cls))} 0 0 1 1")
    return " ".join(parts)


def format_image_prediction(
    boxes_xyxy_score: Sequence[Sequence[float]] | np.ndarray,
    none_prob: float | None,
    *,
    image_hw: tuple[int, int] | None = None,
) -> str:
    """(N, 5) rows of [x0, y0, x1, y1, score] in ORIGINAL pixels + P(no opacity) -> image row.

    ``image_hw`` clips the boxes to the image first. A box that is not finite, has a score
    outside [0, 1] or no area after rounding raises ValueError naming its index (the caller
    decides whether to drop it: see :func:`build_submission`). ``none_prob=None`` omits the
    ``none`` group."""
    a = np.asarray(boxes_xyxy_score, dtype=np.float64)
    if a.size == 0:
        a = np.zeros((0, 5))
    if a.ndim != 2 or a.shape[1] != 5:
        raise ValueError(f"boxes must have shape (N, 5) [x0, y0, x1, y1, score], got {a.shape}")
    parts = [_format_box(i, box, image_hw) for i, box in enumerate(a)]
    if none_prob is not None:
        parts.append(_none_group(none_prob))
    return " ".join(parts)


def _none_group(none_prob: object) -> str:
    return f"none {format_confidence(_probability(none_prob, 'none'))} 0 0 1 1"


def _format_box(i: int, box: Sequence[float], image_hw: tuple[int, int] | None) -> str:
    """One [x0, y0, x1, y1, score] -> ``opacity conf x0 y0 x1 y1``; ValueError naming box ``i``."""
    x0, y0, x1, y1, s = (float(v) for v in box)
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise ValueError(f"box {i}: coordinates not finite: {[x0, y0, x1, y1]}")
    score = _probability(s, f"box {i} score")
    if image_hw is not None:
        h, w = image_hw
        x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
        y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
    coords = [format_pixel(v) for v in (x0, y0, x1, y1)]
    fx0, fy0, fx1, fy1 = (float(c) for c in coords)
    if not (fx1 > fx0 and fy1 > fy0):
        raise ValueError(f"box {i}: no area after rounding: {coords}")
    return f"opacity {format_confidence(score)} {' '.join(coords)}"


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------


def _is_empty(s: object) -> bool:
    return s is None or (isinstance(s, float) and math.isnan(s)) or str(s).strip() == ""


def parse_prediction_string(
    s: object, *, source: str = "", labels: Iterable[str] | None = None
) -> list[Prediction]:
    """``"label conf x0 y0 x1 y1 ..."`` -> [(label, conf, x0, y0, x1, y1), ...].

    An empty cell gives []. Raises :class:`SubmissionError` naming ``source`` and every
    problem of the string: token count not a multiple of six, a label not in ``labels``
    (when given), a number that does not parse or is not finite. Range checks (confidence in
    [0, 1], x0 < x1, image bounds) are :func:`check_predictions`'s job."""
    if _is_empty(s):
        return []
    where = f"{source}: " if source else ""
    tokens = str(s).split()
    if len(tokens) % 6:
        raise SubmissionError(f"{where}{len(tokens)} tokens, expected groups of six (label conf x0 y0 x1 y1)")
    allowed = tuple(labels) if labels is not None else None
    out: list[Prediction] = []
    issues: list[str] = []
    for g, i in enumerate(range(0, len(tokens), 6)):
        label = tokens[i]
        if allowed is not None and label not in allowed:
            issues.append(f"group {g + 1}: unknown label {label!r} (expected one of {', '.join(allowed)})")
        nums = []
        for name, tok in zip(("conf", "x0", "y0", "x1", "y1"), tokens[i + 1 : i + 6]):
            try:
                v = float(tok)
            except ValueError:
                issues.append(f"group {g + 1}: {name} {tok!r} is not a number")
                v = math.nan
            else:
                if not math.isfinite(v):
                    issues.append(f"group {g + 1}: {name} {tok!r} is not finite")
            nums.append(v)
        out.append((label, *nums))  # type: ignore[arg-type]
    if issues:
        raise SubmissionError(where + "; ".join(issues), [where + m for m in issues])
    return out


def row_kind(row_id: str) -> str | None:
    """'study', 'image' or None from the id's suffix."""
    if row_id.endswith(STUDY_SUFFIX):
        return "study"
    if row_id.endswith(IMAGE_SUFFIX):
        return "image"
    return None


def split_ids(ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """Submission ids -> (study ids, image ids), suffixes stripped, in the given order."""
    studies, images = [], []
    for i in map(str, ids):
        kind = row_kind(i)
        if kind == "study":
            studies.append(strip_suffix(i, STUDY_SUFFIX))
        elif kind == "image":
            images.append(strip_suffix(i, IMAGE_SUFFIX))
    return studies, images


def labels_for(kind: str) -> tuple[str, ...]:
    return STUDY_CLASSES if kind == "study" else IMAGE_CLASSES


def check_predictions(
    preds: Sequence[Prediction], kind: str, *, image_hw: tuple[int, int] | None = None
) -> list[str]:
    """Range checks of one parsed row -> a list of problems (empty when fine).

    Confidences in [0, 1]; x0 < x1 and y0 < y1; study groups and ``none`` carry the box
    0 0 1 1; opacity boxes inside ``image_hw`` (when known); each study class / ``none``
    at most once (a repeat can only add a false positive)."""
    problems = []
    for g, (label, conf, x0, y0, x1, y1) in enumerate(preds, start=1):
        if not 0.0 <= conf <= 1.0:
            problems.append(f"group {g} ({label}): confidence {conf:g} outside [0, 1]")
        if not (x0 < x1 and y0 < y1):
            problems.append(f"group {g} ({label}): box {x0:g} {y0:g} {x1:g} {y1:g} needs x0 < x1 and y0 < y1")
        if kind == "study" or label == "none":
            if (x0, y0, x1, y1) != FULL_BOX:
                problems.append(f"group {g} ({label}): box must be 0 0 1 1, got {x0:g} {y0:g} {x1:g} {y1:g}")
        elif image_hw is not None:
            h, w = image_hw
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                problems.append(
                    f"group {g} (opacity): box {x0:g} {y0:g} {x1:g} {y1:g} outside the {h}x{w} (HxW) image"
                )
    counts = Counter(p[0] for p in preds)
    for label, n in counts.items():
        if n > 1 and (kind == "study" or label == "none"):
            problems.append(f"label {label!r} appears {n} times")
    return problems


# Row numbers in every message are LINES of the CSV file: the header is line 1, the first data
# row line 2 (what an editor shows). A DataFrame's row i is line i + FIRST_DATA_LINE.
FIRST_DATA_LINE = 2


def check_rows(
    rows: Iterable[tuple[int, str, object]],
    problems: list[str],
    *,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> list[tuple[int, str, str, list[Prediction], bool]]:
    """The one row check, for the validator and the scorer alike.

    ``rows``: (file line, id, PredictionString) in file order. Appends every problem, each
    starting with ``line N``: a repeated id, an id without ``_study``/``_image``, an empty
    PredictionString (Kaggle rejects null values), the checks of :func:`parse_prediction_string`
    and of :func:`check_predictions` (opacity bounds when ``image_sizes`` knows the image).
    Returns (line, id, kind, predictions, ok) for the first row of each id whose string
    parses (an empty one as no predictions); ``ok`` is False when the row has a problem."""
    seen: dict[str, int] = {}
    out = []
    for n, row_id, s in rows:
        row_id = str(row_id)
        where = f"line {n} ({row_id})"
        before = len(problems)
        first = seen.setdefault(row_id, n)
        if first != n:
            problems.append(f"line {n}: id {row_id} repeats line {first}")
        kind = row_kind(row_id)
        if kind is None:
            problems.append(f"{where}: id ends neither in {STUDY_SUFFIX} nor {IMAGE_SUFFIX}")
            continue
        if _is_empty(s):
            problems.append(f"{where}: empty PredictionString")
            preds: list[Prediction] = []
        else:
            try:
                preds = parse_prediction_string(s, source=where, labels=labels_for(kind))
            except SubmissionError as exc:
                problems.extend(exc.problems)
                continue
            hw = (image_sizes or {}).get(strip_suffix(row_id, IMAGE_SUFFIX)) if kind == "image" else None
            problems.extend(f"{where}: {p}" for p in check_predictions(preds, kind, image_hw=hw))
        if first == n:
            out.append((n, row_id, kind, preds, len(problems) == before))
    return out


def read_submission(path: str | os.PathLike) -> pd.DataFrame:
    """submission.csv -> DataFrame(id, PredictionString) as strings ('' for empty cells)."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    if tuple(df.columns) != HEADER:
        raise SubmissionError(f"{path}: header {list(df.columns)} != {list(HEADER)}")
    return df


# ---------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------


def _sample_frame(sample: pd.DataFrame | Sequence[str]) -> pd.DataFrame:
    if isinstance(sample, pd.DataFrame):
        df = sample.copy()
        if "PredictionString" not in df.columns:
            df["PredictionString"] = ""
        return df[list(HEADER)].fillna("").astype(str)
    return pd.DataFrame({"id": [str(s) for s in sample], "PredictionString": ""})


def _fallback(row_id: str, sample_string: str) -> str:
    if not _is_empty(sample_string):
        return sample_string
    return DEFAULT_STUDY if row_kind(row_id) == "study" else DEFAULT_IMAGE


def as_pred_boxes(a) -> np.ndarray:
    """Anything box-like -> float (N, 5) array of [x0, y0, x1, y1, score] (an empty input -> (0, 5))."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 5))
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise ValueError(f"boxes must be (N, 5) [x0, y0, x1, y1, score], got shape {arr.shape}")
    return arr


def parse_pred_boxes(cell: object) -> np.ndarray:
    """The ``boxes`` cell of image predictions (JSON text, a list or an array of [x0, y0, x1, y1,
    score]; empty, None or NaN for none) -> (N, 5)."""
    if isinstance(cell, str):
        items = json.loads(cell) if cell.strip() else []
    elif cell is None or (isinstance(cell, float) and math.isnan(cell)):
        items = []
    else:
        items = cell
    return as_pred_boxes(items)


def _index_predictions(df: pd.DataFrame | None, id_col: str, suffix: str, what: str, problems: list[str]) -> dict:
    if df is None:
        return {}
    if id_col not in df.columns:
        raise ValueError(f"{what} predictions need a {id_col!r} column, got {list(df.columns)}")
    out = {}
    for rec in df.to_dict("records"):
        key = strip_suffix(str(rec[id_col]), suffix)
        if key in out:
            problems.append(f"{what} {key}: predicted more than once, the first row is kept")
            continue
        out[key] = rec
    return out


def build_submission(
    sample_ids: pd.DataFrame | Sequence[str],
    study_preds: pd.DataFrame | None,
    image_preds: pd.DataFrame | None,
    *,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Every sample id once, in sample order -> (DataFrame(id, PredictionString), problems).

    ``study_preds``: study_id + the four ``STUDY_CLASSES`` columns; ``image_preds``: image_id,
    boxes (JSON list or list of [x0, y0, x1, y1, score], ORIGINAL pixels), none. Either may be
    None. Fallback: a row without a usable prediction (missing, NaN, malformed) gets the
    sample's own PredictionString (``negative 1 0 0 1 1`` / ``none 1 0 0 1 1`` when the
    sample has none) and a line in ``problems``; the other rows go on. ``image_sizes``
    (image_id -> (rows, cols)) clips boxes to the image; a box without area after clipping or
    rounding is dropped and recorded. Predictions for ids not in the sample are recorded."""
    sample = _sample_frame(sample_ids)
    problems: list[str] = []
    studies = _index_predictions(study_preds, "study_id", STUDY_SUFFIX, "study", problems)
    images = _index_predictions(image_preds, "image_id", IMAGE_SUFFIX, "image", problems)
    if image_preds is not None and "none" not in image_preds.columns:
        raise ValueError(f"image predictions need a 'none' column, got {list(image_preds.columns)}")
    if study_preds is not None:
        missing_cols = [c for c in STUDY_CLASSES if c not in study_preds.columns]
        if missing_cols:
            raise ValueError(f"study predictions lack columns {missing_cols}")

    sample_set = set(sample["id"])
    out: list[str] = []
    n_fallback = {"study": 0, "image": 0}
    for row_id, sample_string in zip(sample["id"], sample["PredictionString"]):
        kind = row_kind(row_id)
        fallback = _fallback(row_id, sample_string)
        if kind is None:
            problems.append(f"{row_id}: sample id ends neither in {STUDY_SUFFIX} nor {IMAGE_SUFFIX}; sample string kept")
            out.append(sample_string)
            continue
        preds = studies if kind == "study" else images
        key = strip_suffix(row_id, STUDY_SUFFIX if kind == "study" else IMAGE_SUFFIX)
        if (study_preds if kind == "study" else image_preds) is None:
            out.append(fallback)  # whole input absent: one summary line below, not one per row
            n_fallback[kind] += 1
            continue
        rec = preds.get(key)
        if rec is None:
            problems.append(f"{row_id}: no {kind} prediction, fallback {fallback!r}")
            out.append(fallback)
            n_fallback[kind] += 1
            continue
        try:
            if kind == "study":
                s = format_study_prediction([rec[c] for c in STUDY_CLASSES])
            else:
                s = _image_string(row_id, rec, (image_sizes or {}).get(key), problems)
        except (ValueError, TypeError) as exc:
            problems.append(f"{row_id}: bad {kind} prediction ({exc}), fallback {fallback!r}")
            out.append(fallback)
            n_fallback[kind] += 1
            continue
        out.append(s)

    for kind, preds, given in (("study", studies, study_preds), ("image", images, image_preds)):
        if given is None:
            n = int(sum(row_kind(i) == kind for i in sample["id"]))
            if n:
                problems.append(f"no {kind} predictions given: all {n} {kind} rows use the fallback")
            continue
        extra = sorted(k for k in preds if f"{k}_{kind}" not in sample_set)
        if extra:
            problems.append(f"{len(extra)} {kind} predictions have no row in the sample and were ignored, e.g. {extra[:5]}")
    sub = pd.DataFrame({"id": sample["id"].to_numpy(), "PredictionString": out})
    sub.attrs["n_fallback"] = n_fallback
    return sub, problems


def write_submission(data_dir: str | os.PathLike, study: pd.DataFrame | None, image: pd.DataFrame | None,
                     out: str | os.PathLike, image_sizes: Mapping | None = None) -> tuple[pd.DataFrame, list[str]]:
    """:func:`build_submission` over ``data_dir``'s sample_submission.csv, written to ``out`` (folders
    created) -> (submission, problems)."""
    sample = pd.read_csv(Path(data_dir) / SAMPLE_SUBMISSION, dtype=str, keep_default_na=False)
    sub, problems = build_submission(sample, study, image, image_sizes=image_sizes)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sub.to_csv(out, index=False)
    return sub, problems


def _image_string(row_id: str, rec: Mapping, hw: tuple[int, int] | None, problems: list[str]) -> str:
    boxes = parse_pred_boxes(rec.get("boxes"))
    none_prob = rec.get("none")
    if none_prob is None or (isinstance(none_prob, float) and math.isnan(none_prob)):
        raise ValueError("'none' probability missing")
    parts, dropped = [], []
    for i, b in enumerate(boxes):
        try:
            parts.append(_format_box(i, b, hw))
        except ValueError as exc:
            dropped.append(str(exc))
    if dropped:
        problems.append(f"{row_id}: dropped {len(dropped)} box(es): {'; '.join(dropped)}")
    return " ".join([*parts, _none_group(none_prob)])


# ---------------------------------------------------------------------------------------
# Image sizes from DICOM headers
# ---------------------------------------------------------------------------------------


def read_image_sizes(
    dicom_root: str | os.PathLike, image_ids: Iterable[str] | None = None, *, progress: bool = True
) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """(Rows, Columns) of each DICOM under ``dicom_root`` (header only) -> (sizes, problems).

    A file that cannot be read, or lacks Rows/Columns, becomes a problem naming it, and so
    does a wanted image id without a DICOM; the rest goes on."""
    import pydicom
    from tqdm.auto import tqdm

    from .data import scan_dicoms

    root = Path(dicom_root)
    dicoms = scan_dicoms(root)
    sizes: dict[str, tuple[int, int]] = {}
    problems: list[str] = []
    if image_ids is not None:
        wanted = set(image_ids)
        for i in sorted(wanted - set(dicoms["image_id"])):
            problems.append(f"image {i}: no DICOM under {root}, its size is unknown")
        dicoms = dicoms[dicoms["image_id"].isin(wanted)]
    for image_id, path in tqdm(
        list(zip(dicoms["image_id"], dicoms["path"])), desc="DICOM headers", disable=not progress or None, leave=False
    ):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
            sizes[image_id] = (int(ds.Rows), int(ds.Columns))
        except Exception as exc:  # any unreadable file is reported, never a crash
            problems.append(f"{path}: cannot read Rows/Columns from the DICOM header ({type(exc).__name__}: {exc})")
    return sizes, problems


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def validate_submission(
    sub_path: str | os.PathLike, data_dir: str | os.PathLike | None, *, check_bounds: bool = True,
    progress: bool = False,
) -> list[str]:
    """Every problem of a submission file (empty list = OK); ``score`` runs the same function.

    Always: header exactly ``id,PredictionString``; two fields per line; per row
    :func:`check_rows` (each id once, known suffix, no empty PredictionString, groups of six,
    known labels, finite numbers, confidence in [0, 1], x0 < x1 and y0 < y1, 0 0 1 1 study and
    none boxes). With the competition folder ``data_dir``: every ``sample_submission.csv`` id
    exactly once and no other id, and (``check_bounds``) opacity boxes inside the ORIGINAL
    image read from DATA/test DICOM headers; unreadable DICOMs and images without a DICOM are
    reported too. Problems name file lines (header = line 1)."""
    sub_path = Path(sub_path)
    problems: list[str] = []
    sample_ids: list[str] | None = None
    if data_dir is not None:
        sample_path = Path(data_dir) / SAMPLE_SUBMISSION
        if not sample_path.is_file():
            return [f"{sample_path}: not found (is --data the competition folder?)"]
        sample_ids = pd.read_csv(sample_path, dtype=str, keep_default_na=False)["id"].tolist()
    if not sub_path.is_file():
        return [f"{sub_path}: not found"]

    with open(sub_path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines:
        return [f"{sub_path}: empty file"]
    if tuple(lines[0]) != HEADER:
        problems.append(f"line 1: header {','.join(lines[0])!r} must be exactly 'id,PredictionString'")
    rows: list[tuple[int, str, str]] = []
    for n, fields in enumerate(lines[1:], start=FIRST_DATA_LINE):
        if len(fields) != 2:
            problems.append(f"line {n}: {len(fields)} fields, expected 2 (id,PredictionString)")
            if not fields:
                continue
        rows.append((n, fields[0], fields[1] if len(fields) > 1 else ""))

    sizes: dict[str, tuple[int, int]] = {}
    if sample_ids is not None:
        sample_set = set(sample_ids)
        ids = {r for _, r, _ in rows}
        problems.extend(f"line {n}: id {r!r} is not in {SAMPLE_SUBMISSION}" for n, r, _ in rows if r not in sample_set)
        problems.extend(f"missing id {r} (in {SAMPLE_SUBMISSION})" for r in sample_ids if r not in ids)
        if check_bounds:
            image_ids = {strip_suffix(r, IMAGE_SUFFIX) for _, r, _ in rows if row_kind(r) == "image" and r in sample_set}
            test_dir = Path(data_dir) / "test"
            if not test_dir.is_dir():
                problems.append(f"{test_dir}: not found, image bounds cannot be checked (use --skip-bounds)")
            else:
                sizes, dicom_problems = read_image_sizes(test_dir, image_ids, progress=progress)
                problems.extend(dicom_problems)
    check_rows(rows, problems, image_sizes=sizes)
    return problems


def print_problems(title: str, problems: Sequence[str], file=None) -> None:
    """``title: N problem(s)`` then every problem numbered, as validate-submission prints them."""
    print(f"{title}: {len(problems)} problem(s) (line N = line of the CSV file, header = line 1)", file=file)
    for i, p in enumerate(problems, start=1):
        print(f"{i:4d}. {p}", file=file)


# ---------------------------------------------------------------------------------------
# CLIs
# ---------------------------------------------------------------------------------------


def _submission_file(path: str) -> Path:
    """The submission path a command was given, or a UserError naming it."""
    p = Path(path)
    if not p.is_file():
        from .errors import UserError

        raise UserError(f"{p}: no such file (pass the submission.csv to check)")
    return p


def cli_validate(argv: list[str]) -> int:
    """Check a submission.csv against the competition folder; list every problem."""
    import argparse

    from .clihelp import HelpFormatter
    from .data import find_data_dir

    ap = argparse.ArgumentParser(
        prog="python -m siimcovid validate-submission", description=cli_validate.__doc__,
        formatter_class=HelpFormatter,
        epilog="Writes nothing. Prints OK and the row counts (exit 0), or every problem numbered, naming lines of "
               "the CSV file (header = line 1) (exit 1). `score` runs the same checks before it scores.")
    ap.add_argument("submission", help="submission.csv to check")
    ap.add_argument("--data", required=True,
                    help="competition folder (sample_submission.csv + test/), or the one folder below it that holds it")
    ap.add_argument("--skip-bounds", action="store_true",
                    help="do not read DATA/test DICOM headers to check that opacity boxes lie inside the images")
    a = ap.parse_args(argv)
    data_dir = find_data_dir(a.data)
    sub_path = _submission_file(a.submission)
    problems = validate_submission(sub_path, data_dir, check_bounds=not a.skip_bounds, progress=True)
    if problems:
        print_problems(str(a.submission), problems)
        return 1
    sub = read_submission(sub_path)
    n_study = int(sub["id"].str.endswith(STUDY_SUFFIX).sum())
    bounds = "" if a.skip_bounds else ", boxes inside the images"
    print(f"OK {a.submission}: {len(sub)} rows ({n_study} study, {len(sub) - n_study} image), every sample id once{bounds}")
    return 0


def _read_input_csv(path: str | os.PathLike, columns: Sequence[str], **kwargs) -> pd.DataFrame:
    """A CSV that must hold ``columns``; any problem is a UserError naming the file."""
    from .errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found")
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing columns {missing}, got {list(df.columns)}")
    return df


def cli_make(argv: list[str]) -> int:
    """Write submission.csv from study and/or image prediction CSVs (see docs/contracts.md)."""
    import argparse

    from .clihelp import HelpFormatter
    from .data import find_data_dir
    from .errors import UserError
    from .log import get_logger, run_header

    ap = argparse.ArgumentParser(
        prog="python -m siimcovid make-submission", description=cli_make.__doc__,
        formatter_class=HelpFormatter,
        epilog="Writes OUT only: every sample_submission.csv id once, in its order. A row without a usable "
               "prediction keeps the sample's string (negative 1 / none 1) and is listed; prints the row and "
               "fallback counts and the problems.")
    ap.add_argument("--data", required=True,
                    help="competition folder (sample_submission.csv + test/), or the one folder below it that holds it")
    ap.add_argument("--study", default=None, help="CSV study_id,negative,typical,indeterminate,atypical "
                                                  "(without it every study row uses the fallback)")
    ap.add_argument("--image", default=None, help="CSV image_id,boxes (JSON [[x0,y0,x1,y1,score],...] in original "
                                                  "pixels),none (without it every image row uses the fallback)")
    ap.add_argument("--out", default="submission.csv", help="submission CSV to write (folders created)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any row needed a fallback or was fixed")
    ap.add_argument("--no-clip", action="store_true", help="do not read DATA/test DICOM headers to clip boxes to the image")
    a = ap.parse_args(argv)
    data_dir = find_data_dir(a.data)
    if Path(a.out).is_dir():
        raise UserError(f"--out {a.out}: is a folder; pass the CSV file to write, e.g. {Path(a.out) / 'submission.csv'}")
    sample = _read_input_csv(data_dir / SAMPLE_SUBMISSION, ["id"], dtype=str, keep_default_na=False)
    study = _read_input_csv(a.study, ["study_id", *STUDY_CLASSES], dtype={"study_id": str}) if a.study else None
    image = _read_input_csv(a.image, ["image_id", "boxes", "none"], dtype={"image_id": str, "boxes": str},
                            keep_default_na=False) if a.image else None
    run_header("make-submission", vars(a))
    log = get_logger()
    if image is not None:
        image["none"] = pd.to_numeric(image["none"].replace("", np.nan), errors="coerce")
    sizes: dict[str, tuple[int, int]] | None = None
    header_problems: list[str] = []
    if image is not None and not a.no_clip:
        if (data_dir / "test").is_dir():
            sizes, header_problems = read_image_sizes(data_dir / "test", set(image["image_id"].map(
                lambda s: strip_suffix(s, IMAGE_SUFFIX))))
        else:
            log.warning("%s: no test/ folder, boxes are not clipped to the images", data_dir)
    try:
        sub, problems = build_submission(sample, study, image, image_sizes=sizes)
    except ValueError as exc:  # a prediction CSV of the wrong shape: nothing written yet
        raise UserError(str(exc)) from None
    problems = header_problems + problems
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sub.to_csv(out, index=False)
    n_study = int(sub["id"].str.endswith(STUDY_SUFFIX).sum())
    fb = sub.attrs.get("n_fallback", {})
    print(
        f"wrote {out}: {len(sub)} rows ({n_study} study, {len(sub) - n_study} image); "
        f"fallback rows: {fb.get('study', 0)} study, {fb.get('image', 0)} image; {len(problems)} problem(s)"
    )
    for i, p in enumerate(problems[:20], start=1):
        print(f"{i:4d}. {p}")
    if len(problems) > 20:
        print(f"      ... and {len(problems) - 20} more")
    return 1 if (a.strict and problems) else 0
