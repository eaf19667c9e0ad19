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
from typing import Iterable, Mapping, Sequence

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


# ---------------------------------------------------------------------------------------
# Row-by-row checks (check-data): every problem of a CSV at once, by file and line
# ---------------------------------------------------------------------------------------

BOX_TOLERANCE = 0.5  # px a box may reach past the image edge (float rounding of the annotation tool)
IMAGE_COLUMNS: tuple[str, ...] = ("id", "boxes", "label", "StudyInstanceUID")


def _lenient_read(path: Path, expected: Sequence[str], problems: list[str]) -> pd.DataFrame | None:
    """The CSV as strings, or None (with the problem) when it cannot be read or its header is wrong."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        problems.append(f"{path}: not found")
        return None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})")
        return None
    if list(df.columns) != list(expected):
        problems.append(f"{path} line 1: header {list(df.columns)} != {list(expected)}")
        return None
    return df


def _suffix_problem(value: str, suffix: str, other: str) -> str | None:
    if value.endswith(suffix):
        return None if len(value) > len(suffix) else f"id {value!r} is only the {suffix} suffix"
    if value.endswith(other):
        return f"id {value!r} ends in {other}, expected {suffix} (a row of the other CSV?)"
    return f"id {value!r} lacks the {suffix} suffix"


def check_study_csv(path: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """train_study_level.csv row by row -> (study_id, label, line of every good row; problems).

    Problems (each ``FILE line N: ...``, header = line 1): header, id suffix, a one-hot row
    without exactly one 1 among 0s, a repeated id, and a file with no rows at all."""
    path = Path(path)
    problems: list[str] = []
    out = pd.DataFrame(columns=["study_id", "label", "line"])
    df = _lenient_read(path, ["id", *STUDY_COLUMNS], problems)
    if df is None:
        return out, problems
    if df.empty:
        return out, [f"{path}: holds only its header (no study has a label)"]
    rows, seen = [], {}
    for i, r in enumerate(df.itertuples(index=False)):
        line = i + 2
        sid = str(r[0])
        bad = _suffix_problem(sid, STUDY_SUFFIX, IMAGE_SUFFIX)
        cells = [str(v).strip() for v in r[1:]]
        if not all(c in ("0", "1", "0.0", "1.0") for c in cells) or sum(c.startswith("1") for c in cells) != 1:
            bad = (bad + "; " if bad else "") + f"labels {cells} do not hold exactly one 1 among 0s"
        key = strip_suffix(sid, STUDY_SUFFIX)
        if key in seen:
            bad = (bad + "; " if bad else "") + f"study {key} repeats line {seen[key]}"
        seen.setdefault(key, line)
        if bad:
            problems.append(f"{path} line {line}: {bad}")
            continue
        rows.append({"study_id": key, "label": [c.startswith("1") for c in cells].index(True), "line": line})
    return pd.DataFrame(rows, columns=out.columns), problems


def box_problems(boxes: Sequence[Sequence[float]], image_hw: tuple[int, int] | None = None) -> list[str]:
    """What is wrong with opacity boxes (x0, y0, x1, y1) in original pixels: not finite, empty or
    inverted, negative, or (``image_hw`` known) past the image's edge."""
    out = []
    for k, b in enumerate(boxes):
        x0, y0, x1, y1 = (float(v) for v in b)
        what = f"box {k + 1} {[round(v, 2) for v in (x0, y0, x1, y1)]}"
        if not all(np.isfinite((x0, y0, x1, y1))):
            out.append(f"{what}: not finite")
        elif x1 <= x0 or y1 <= y0:
            out.append(f"{what}: empty or inverted (needs x0 < x1 and y0 < y1)")
        elif min(x0, y0) < -BOX_TOLERANCE:
            out.append(f"{what}: negative coordinates")
        elif image_hw is not None and (x1 > image_hw[1] + BOX_TOLERANCE or y1 > image_hw[0] + BOX_TOLERANCE):
            out.append(f"{what}: outside the {image_hw[1]} x {image_hw[0]} (w x h) image")
    return out


def check_image_csv(path: str | os.PathLike,
                    image_sizes: Mapping[str, tuple[int, int]] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """train_image_level.csv row by row -> (image_id, study_id, line, boxes, problem per row; problems).

    Both box columns are parsed (``label``: the boxes the package uses; ``boxes``: the
    annotation tool's x/y/width/height) and must agree: a ``none`` label beside boxes, or boxes
    that differ, is a problem. Boxes are checked by :func:`box_problems` (against the image size
    when ``image_sizes`` has it: image_id -> (rows, cols)). Also: header, id suffixes, an empty
    StudyInstanceUID, a repeated id. Every row is returned; ``problem`` is "" for a good one."""
    path = Path(path)
    problems: list[str] = []
    cols = ["image_id", "study_id", "line", "boxes", "problem"]
    df = _lenient_read(path, IMAGE_COLUMNS, problems)
    if df is None:
        return pd.DataFrame(columns=cols), problems
    rows, seen = [], {}
    for i, r in enumerate(df.itertuples(index=False)):
        line = i + 2
        where = f"{path} line {line}"
        iid = strip_suffix(str(r.id), IMAGE_SUFFIX)
        bad: list[str] = []
        if (p := _suffix_problem(str(r.id), IMAGE_SUFFIX, STUDY_SUFFIX)):
            bad.append(p)
        study = str(r.StudyInstanceUID).strip()
        if not study:
            bad.append("empty StudyInstanceUID")
        elif study.endswith(STUDY_SUFFIX) or study.endswith(IMAGE_SUFFIX):
            bad.append(f"StudyInstanceUID {study!r} carries a suffix (the column holds the bare study UID)")
        if iid in seen:
            bad.append(f"image {iid} repeats line {seen[iid]}")
        seen.setdefault(iid, line)
        boxes: list = []
        try:
            boxes = parse_label(r.label, source="label")
            from_column = parse_boxes_column(r.boxes, source="boxes")
            is_none = any(t == "none" for t in str(r.label).split()[::6])
            if is_none and (boxes or from_column):
                bad.append(f"label says none but {len(boxes) or len(from_column)} box(es) are given")
            elif len(from_column) != len(boxes) or not np.allclose(np.reshape(from_column, (-1, 4)),
                                                                  np.reshape(boxes, (-1, 4)), atol=BOX_TOLERANCE):
                bad.append(f"the boxes column ({len(from_column)} box(es)) and the label ({len(boxes)}) disagree")
            bad.extend(box_problems(boxes, (image_sizes or {}).get(iid)))
        except (DataFormatError, TypeError, ValueError) as exc:
            bad.append(str(exc))
        problem = "; ".join(bad)
        if problem:
            problems.append(f"{where}: {problem}")
        rows.append({"image_id": iid, "study_id": strip_suffix(study, STUDY_SUFFIX), "line": line,
                     "boxes": boxes, "problem": problem})
    return pd.DataFrame(rows, columns=cols), problems


@dataclass(frozen=True)
class DicomRef:
    image_id: str
    series_id: str
    study_id: str
    path: str


def scan_dicoms(root: str | os.PathLike, not_regular: list[str] | None = None) -> pd.DataFrame:
    """Walk ``<root>/<study>/<series>/<image>.dcm`` -> image_id, series_id, study_id, path.

    Only regular files (or links to them) are listed: a FIFO, socket or device named ``.dcm``
    would block or never end when opened, so it is never opened and its path goes to
    ``not_regular`` (when given) for the caller to report."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: DICOM folder not found")
    rows = []

    def subdirs(path: str):
        with os.scandir(path) as it:
            return sorted((e for e in it if e.is_dir(follow_symlinks=False)), key=lambda e: e.name)

    for study in subdirs(str(root)):
        for series in subdirs(study.path):
            with os.scandir(series.path) as it:
                entries = [e for e in it if e.name.endswith(".dcm")]
            for e in entries:
                try:
                    regular = e.is_file()  # follows a link: a link to a regular file is fine
                except OSError:
                    regular = False
                if not regular:
                    if not_regular is not None and not e.is_dir():
                        not_regular.append(e.path)
                    continue
                rows.append({"image_id": e.name[:-4], "series_id": series.name, "study_id": study.name,
                             "path": e.path})
    df = pd.DataFrame(rows, columns=["image_id", "series_id", "study_id", "path"])
    return df.sort_values(["study_id", "series_id", "image_id"], ignore_index=True)


def file_kind(path: str | os.PathLike) -> str:
    """'a FIFO', 'a socket', 'a device', ... for a message about a path that is not a regular file."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


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
    for a file left out (no labels).

    Also problems: a ``.dcm`` that is not a regular file (never opened: "missing"), a second file
    with a listed image id (the copy in the study the CSV names is used, the other reported:
    "index") and a file in another study folder than the CSV names (left out: "index")."""
    data_dir = Path(data_dir)
    odd: list[str] = []
    dicoms = scan_dicoms(data_dir / "train", not_regular=odd)
    images = read_image_csv(data_dir / IMAGE_CSV)
    studies = read_study_csv(data_dir / STUDY_CSV)
    problems: list[dict] = []

    def rel(path) -> str:
        return str(Path(path).relative_to(data_dir)) if isinstance(path, str) else ""

    odd_ids = {Path(p).stem for p in odd}
    if strict and odd:
        raise DataFormatError(f"{data_dir / 'train'}: {len(odd)} .dcm entries are not regular files, e.g. {odd[:5]}")
    for p in odd:  # never opened (a FIFO would block); the image is lost, as if missing
        problems.append({"dicom": rel(p), "image_id": Path(p).stem, "stage": MISSING_STAGE,
                         "reason": f"{file_kind(p)}, not a regular file: never opened, image left out"})
    dicoms, copies = pick_listed_copy(dicoms, dict(zip(images["image_id"], images["study_id"])))
    if strict and copies:
        raise DataFormatError(f"{data_dir / 'train'}: {len(copies)} stray copies of listed DICOMs, "
                              f"e.g. {[rel(c['path']) for c in copies[:5]]}")
    for c in copies:
        problems.append({"dicom": rel(c["path"]), "image_id": c["image_id"], "stage": INDEX_STAGE,
                         "reason": f"stray copy: {IMAGE_CSV} puts image {c['image_id']} in study {c['listed']}, "
                                   f"this file is in study {c['study_id']}; {rel(c['kept'])} is used, this one skipped"})
    df = dicoms.merge(images[["image_id", "boxes", "label"]].assign(listed=images["study_id"]), on="image_id",
                      how="outer", indicator=True)
    elsewhere = (df["_merge"] == "both") & (df["study_id"] != df["listed"])
    if strict and elsewhere.any():
        raise DataFormatError(f"{data_dir / 'train'}: {int(elsewhere.sum())} DICOMs lie in another study folder than "
                              f"{IMAGE_CSV} says, e.g. {[rel(p) for p in df.loc[elsewhere, 'path'].tolist()[:5]]}")
    for r in df[elsewhere].itertuples():
        problems.append({"dicom": rel(r.path), "image_id": r.image_id, "stage": INDEX_STAGE,
                         "reason": f"{IMAGE_CSV} puts this image in study {r.listed} but the file is in study "
                                   f"{r.study_id}: which label is right is unknown; left out"})
    df = df[~elsewhere]
    no_file = df[(df["_merge"] == "right_only") & ~df["image_id"].isin(odd_ids)]
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
    df = df[df["_merge"] == "both"].drop(columns=["_merge", "listed"])
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


def pick_listed_copy(dicoms: pd.DataFrame, listed_study: Mapping[str, str]) -> tuple[pd.DataFrame, list[dict]]:
    """One file per image id: of several (a stray copy an unzip left in another study), the one in
    the study the image CSV names wins, else the first in path order. -> (dicoms, the copies
    skipped: image_id, path, study_id, listed, kept)."""
    dup = dicoms["image_id"].duplicated(keep=False)
    if not dup.any():
        return dicoms, []
    keep = ~dup
    skipped = []
    for image_id, group in dicoms[dup].groupby("image_id", sort=False):
        listed = listed_study.get(image_id)
        match = group.index[group["study_id"] == listed]
        kept = match[0] if len(match) else group.index[0]
        keep[kept] = True
        for i in group.index.drop(kept):
            skipped.append({"image_id": image_id, "path": dicoms.at[i, "path"], "study_id": dicoms.at[i, "study_id"],
                            "listed": listed, "kept": dicoms.at[kept, "path"]})
    return dicoms[keep].reset_index(drop=True), skipped


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
