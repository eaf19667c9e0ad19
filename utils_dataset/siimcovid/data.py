"""The competition's data model: the two train CSVs, the DICOM tree, and their ids.

Everything reads the files exactly as Kaggle ships them; ids are kept without their
``_study`` / ``_image`` suffixes inside the package and the suffixes are added back only
when a submission is written.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

# Order used everywhere (arrays of study probabilities, class indices).
STUDY_CLASSES: tuple[str, ...] = ("negative", "typical", "indeterminate", "atypical")
# Column names of train_study_level.csv, same order as STUDY_CLASSES.
STUDY_COLUMNS: tuple[str, ...] = (
    "Negative for Pneumonia",
    "Typical Appearance",
    "Indeterminate Appearance",
    "Atypical Appearance",
)
IMAGE_CLASSES: tuple[str, ...] = ("opacity", "none")
STUDY_SUFFIX = "_study"
IMAGE_SUFFIX = "_image"

STUDY_CSV = "train_study_level.csv"
IMAGE_CSV = "train_image_level.csv"
SAMPLE_SUBMISSION = "sample_submission.csv"
# Synthetic sets only (siimcovid.dev.synthetic writes them): the hidden test's truth, same headers as the train CSVs.
TRUTH_DIR = "truth"
TRUTH_STUDY_CSV = "test_study_level.csv"
TRUTH_IMAGE_CSV = "test_image_level.csv"
MISSING_STAGE = "missing"  # problem stage of an image a CSV lists but whose DICOM is not there
INDEX_STAGE = "index"  # problem stage of a file left out of the index (unlisted, unlabelled, twin)


class DataFormatError(ValueError):
    """A competition file does not have the expected shape; the message names the file."""


def strip_suffix(value: str, suffix: str) -> str:
    return value[: -len(suffix)] if value.endswith(suffix) else value


def parse_label(label: str, *, source: str = "label") -> list[tuple[float, float, float, float]]:
    """``opacity 1 x0 y0 x1 y1 ...`` or ``none 1 0 0 1 1`` -> opacity boxes as (x0, y0, x1, y1)."""
    tokens = str(label).split()
    if len(tokens) % 6:
        raise DataFormatError(f"{source}: {len(tokens)} tokens, expected groups of six: {label!r}")
    boxes = []
    for i in range(0, len(tokens), 6):
        name = tokens[i]
        if name == "none":
            continue
        if name != "opacity":
            raise DataFormatError(f"{source}: unknown label {name!r} in {label!r}")
        try:
            x0, y0, x1, y1 = (float(t) for t in tokens[i + 2 : i + 6])
        except ValueError as exc:
            raise DataFormatError(f"{source}: non-numeric box in {label!r}") from exc
        boxes.append((x0, y0, x1, y1))
    return boxes


def parse_boxes_column(cell: object, *, source: str = "boxes") -> list[tuple[float, float, float, float]]:
    """The ``boxes`` cell: a Python literal list of {'x','y','width','height'} dicts, or empty."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)) or str(cell).strip() in ("", "nan"):
        return []
    try:
        items = ast.literal_eval(str(cell))
    except (ValueError, SyntaxError) as exc:
        raise DataFormatError(f"{source}: not a Python literal: {cell!r}") from exc
    out = []
    for d in items:
        try:
            x, y, w, h = float(d["x"]), float(d["y"]), float(d["width"]), float(d["height"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"{source}: box without x/y/width/height: {d!r}") from exc
        out.append((x, y, x + w, y + h))
    return out


def format_boxes_column(boxes: Sequence[Sequence[float]]) -> str:
    """Inverse of :func:`parse_boxes_column` (empty string for no boxes, as Kaggle ships it)."""
    if not boxes:
        return ""
    items = [
        {"x": float(x0), "y": float(y0), "width": float(x1 - x0), "height": float(y1 - y0)}
        for x0, y0, x1, y1 in boxes
    ]
    return repr(items)


def format_label(boxes: Sequence[Sequence[float]]) -> str:
    """Inverse of :func:`parse_label` (the ground-truth ``label`` column)."""
    if not boxes:
        return "none 1 0 0 1 1"
    return " ".join(f"opacity 1 {x0:g} {y0:g} {x1:g} {y1:g}" for x0, y0, x1, y1 in boxes)


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """pandas.read_csv whose parse errors name the file (a missing file already does)."""
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None


def _check_unique(path: Path, ids: pd.Series) -> None:
    dup = ids[ids.duplicated()].unique()[:5].tolist()
    if dup:
        raise DataFormatError(f"{path}: ids listed more than once, e.g. {dup}")


def read_study_csv(path: str | os.PathLike) -> pd.DataFrame:
    """-> columns study_id, label (index into STUDY_CLASSES), and the four one-hot columns."""
    path = Path(path)
    df = _read_csv(path, dtype={"id": str})
    expected = ["id", *STUDY_COLUMNS]
    if list(df.columns) != expected:
        raise DataFormatError(f"{path}: header {list(df.columns)} != {expected}")
    onehot = df[list(STUDY_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy()  # text -> NaN -> bad row
    bad = np.flatnonzero(~np.isin(onehot, (0, 1)).all(axis=1) | (onehot.sum(axis=1) != 1))
    if len(bad):
        raise DataFormatError(f"{path}: lines {(bad[:10] + 2).tolist()} do not hold exactly one 1 (and 0s)")
    out = pd.DataFrame({"study_id": df["id"].map(lambda s: strip_suffix(str(s), STUDY_SUFFIX))})
    _check_unique(path, out["study_id"])
    out["label"] = onehot.argmax(axis=1).astype(int)
    for cls, col in zip(STUDY_CLASSES, STUDY_COLUMNS):
        out[cls] = df[col].astype(int)
    return out


def read_image_csv(path: str | os.PathLike) -> pd.DataFrame:
    """-> columns image_id, study_id, boxes (list of (x0, y0, x1, y1) in original pixels), label."""
    path = Path(path)
    df = _read_csv(path, dtype={"id": str, "boxes": object, "label": str, "StudyInstanceUID": str})
    expected = ["id", "boxes", "label", "StudyInstanceUID"]
    if list(df.columns) != expected:
        raise DataFormatError(f"{path}: header {list(df.columns)} != {expected}")
    rows = []
    for i, r in enumerate(df.itertuples(index=False)):
        src = f"{path} row {i + 2}"
        boxes = parse_label(r.label, source=src)
        rows.append(
            {
                "image_id": strip_suffix(str(r.id), IMAGE_SUFFIX),
                "study_id": str(r.StudyInstanceUID),
                "boxes": boxes,
                "label": r.label,
            }
        )
    out = pd.DataFrame(rows, columns=["image_id", "study_id", "boxes", "label"])
    _check_unique(path, out["image_id"])
    return out


@dataclass(frozen=True)
class DicomRef:
    image_id: str
    series_id: str
    study_id: str
    path: str


def scan_dicoms(root: str | os.PathLike) -> pd.DataFrame:
    """Walk ``<root>/<study>/<series>/<image>.dcm`` -> image_id, series_id, study_id, path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: DICOM folder not found")
    rows = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if not name.endswith(".dcm"):
                continue
            p = Path(dirpath) / name
            rel = p.relative_to(root).parts
            if len(rel) != 3:
                continue  # not <study>/<series>/<image>.dcm
            rows.append({"image_id": p.stem, "series_id": rel[1], "study_id": rel[0], "path": str(p)})
    df = pd.DataFrame(rows, columns=["image_id", "series_id", "study_id", "path"])
    return df.sort_values(["study_id", "series_id", "image_id"], ignore_index=True)


def find_data_dir(hint: str | os.PathLike | None = None, marker: str = SAMPLE_SUBMISSION) -> Path:
    """The competition folder: ``hint`` (``--data``) itself or the ONE folder below it holding
    ``marker``; without a hint, SIIM_INPUT and then /kaggle/input are searched. A wrong path, no
    match or several matches are UserErrors naming them (rules: :func:`siimcovid.paths.find_input`)."""
    from .paths import find_input

    return find_input(marker, hint=hint)


def index_train(data_dir: str | os.PathLike, strict: bool = True) -> tuple[pd.DataFrame, list[dict]]:
    """The one reader of the train split: the DICOM tree joined with both train CSVs -> one row per
    image (image_id, study_id, series_id, path, boxes (original pixels), label, study_label and the
    four one-hot class columns), sorted by study / series / image; and the problems.

    A CSV row without its DICOM, a DICOM no CSV lists and a study without a label are problems:
    ``strict`` raises DataFormatError on the first kind found (naming up to five ids); lenient
    mode leaves those images out and returns one problem per image (``dicom`` relative to
    ``data_dir``, ``image_id``, ``stage``, ``reason``) so a batch can go on. ``stage`` is
    ``"missing"`` for an image a CSV lists without its file (an item lost: exit 1) and ``"index"``
    for a file left out (no labels)."""
    data_dir = Path(data_dir)
    dicoms = scan_dicoms(data_dir / "train")
    images = read_image_csv(data_dir / IMAGE_CSV)
    studies = read_study_csv(data_dir / STUDY_CSV)
    df = dicoms.merge(images[["image_id", "boxes", "label"]], on="image_id", how="outer", indicator=True)
    problems: list[dict] = []

    def rel(path) -> str:
        return str(Path(path).relative_to(data_dir)) if isinstance(path, str) else ""

    no_file = df[df["_merge"] == "right_only"]
    if strict and len(no_file):
        raise DataFormatError(f"{data_dir / 'train'}: {len(no_file)} images in {IMAGE_CSV} have no DICOM, "
                              f"e.g. {no_file['image_id'].tolist()[:5]}")
    for r in no_file.itertuples():
        problems.append({"dicom": "", "image_id": r.image_id, "stage": MISSING_STAGE,
                         "reason": f"listed in {IMAGE_CSV} but no train/<study>/<series>/{r.image_id}.dcm found"})
    unlisted = df[df["_merge"] == "left_only"]
    if strict and len(unlisted):
        raise DataFormatError(f"{data_dir / 'train'}: {len(unlisted)} DICOMs not listed in {IMAGE_CSV}, "
                              f"e.g. {[rel(p) for p in unlisted['path'].tolist()[:5]]}")
    for r in unlisted.itertuples():
        problems.append({"dicom": rel(r.path), "image_id": r.image_id, "stage": INDEX_STAGE,
                         "reason": f"DICOM not listed in {IMAGE_CSV} (no labels); skipped"})
    df = df[df["_merge"] == "both"].drop(columns="_merge")
    df = df.merge(studies.rename(columns={"label": "study_label"}), on="study_id", how="left")
    nolabel = df["study_label"].isna()
    if strict and nolabel.any():
        raise DataFormatError(f"{data_dir / STUDY_CSV}: studies {df.loc[nolabel, 'study_id'].unique()[:5].tolist()} "
                              f"of {IMAGE_CSV} have no study label")
    for r in df[nolabel].itertuples():
        problems.append({"dicom": rel(r.path), "image_id": r.image_id, "stage": INDEX_STAGE,
                         "reason": f"study {r.study_id} has no row in {STUDY_CSV}; skipped"})
    df = df[~nolabel].copy()
    df["study_label"] = df["study_label"].astype(int)
    for cls in STUDY_CLASSES:
        df[cls] = df[cls].astype(int)
    return df.sort_values(["study_id", "series_id", "image_id"], ignore_index=True), problems


def load_train(data_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per train image: image_id, study_id, series_id, path, boxes, label, study label
    (:func:`index_train` in strict mode: any mismatch between the CSVs and the files raises)."""
    return index_train(data_dir, strict=True)[0]


def missing_test_images(data_dir: str | os.PathLike, found_ids: Iterable[str]) -> list[dict]:
    """Image ids sample_submission.csv lists without a DICOM under test/ (ids in ``found_ids``
    are there) -> problem rows as :func:`index_train` returns them; [] without a sample."""
    path = Path(data_dir) / SAMPLE_SUBMISSION
    if not path.is_file():
        return []
    ids = _read_csv(path, dtype=str, keep_default_na=False)
    if "id" not in ids.columns:
        raise DataFormatError(f"{path}: no id column")
    listed = [strip_suffix(i, IMAGE_SUFFIX) for i in ids["id"] if str(i).endswith(IMAGE_SUFFIX)]
    found = set(found_ids)
    return [{"dicom": "", "image_id": i, "stage": MISSING_STAGE,
             "reason": f"listed in {SAMPLE_SUBMISSION} but no test/<study>/<series>/{i}.dcm found"}
            for i in listed if i not in found]


def load_test(data_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per test image found under ``test/``: image_id, series_id, study_id, path."""
    return scan_dicoms(Path(data_dir) / "test")


def iter_chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
