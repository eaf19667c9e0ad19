"""The preprocess output folder: its file names, and the one reader of each file in it.

``python -m siimcovid preprocess`` writes (docs/contracts.md, "Preprocess output")::

    P/images/<S>/<split>/<image_id>.png   P/meta.csv   P/errors.csv   P/folds.csv
    P/preprocess.json   P/records.jsonl   P/run.json   P/source.json   [P/tfrecords/<S>/*.tfrec]

Every stage that reads a preprocess output goes through this module: meta.csv with its box
columns parsed once (:func:`read_meta`), the PNG of an image (:func:`image_path`), the sizes
present (:func:`available_sizes`), the failed files (:func:`read_errors`) and the pixel settings
a test set must share with its train set (:func:`pixel_settings`). It imports only core modules,
so the writer (``preprocess``) and every reader sit above it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from .errors import UserError

META_CSV = "meta.csv"
ERRORS_CSV = "errors.csv"
FOLDS_CSV = "folds.csv"  # same name as siimcovid.folds.FOLDS_CSV (the fold table's own module)
JOURNAL = "records.jsonl"  # resume journal: one JSON record per finished image
SUMMARY_JSON = "preprocess.json"  # config, counts and timing of the last run
SOURCE_JSON = "source.json"  # which data set and pixel settings the folder holds (written first)
RUN_JSON = "run.json"  # siimcovid.log.run_header
IMAGES_DIR = "images"
TFRECORDS_DIR = "tfrecords"
ERROR_COLUMNS = ["dicom", "image_id", "stage", "reason"]
# meta.csv columns an external set (``python -m siimcovid external``) adds after the competition's:
# source name, opacity 1/0/-1 (unknown), view, box_labelled 1/0 (the source gives this image's boxes),
# labels (JSON: the source's own labels as it spells them). docs/contracts.md, "External sets".
EXTERNAL_COLUMNS = ("source", "opacity", "view", "box_labelled", "labels")


def meta_columns(sizes: Iterable[int], external: bool = False) -> list[str]:
    """meta.csv's columns in their order for a run of ``sizes`` (``external``: plus EXTERNAL_COLUMNS)."""
    return ["image_id", "study_id", "series_id", "split", "dicom", "orig_h", "orig_w", "photometric",
            "transfer_syntax", "bits_stored", "keep_aspect", "boxes", *[f"boxes_{int(s)}" for s in sizes],
            "study_label", "fold", "voi", "decoder", "reduce", *(EXTERNAL_COLUMNS if external else ())]
# The preprocess settings that change pixels: a test set is converted with the train set's values.
PIXEL_KEYS = ("keep_aspect", "decoder", "reduce_j2k", "no_voi_range", "percentiles", "exact")
# Every name preprocess writes at the top of P (what --overwrite removes, nothing else).
OUTPUT_NAMES = (META_CSV, ERRORS_CSV, FOLDS_CSV, JOURNAL, SUMMARY_JSON, SOURCE_JSON, RUN_JSON, IMAGES_DIR,
                TFRECORDS_DIR)


class MissingPreprocess(UserError, FileNotFoundError):
    """A folder that should hold a preprocess output does not (a wrong path, a stage not run).
    Also a FileNotFoundError, so callers that batch over folders can skip it."""


def find_preprocess(hint: str | os.PathLike | None = None) -> Path:
    """The preprocess output folder: ``hint`` or the folder holding META_CSV below it (else under
    SIIM_INPUT, /kaggle/input); a UserError naming where it looked otherwise."""
    from .paths import find_input

    try:
        return find_input(META_CSV, hint=hint)
    except FileNotFoundError as exc:
        raise MissingPreprocess(f"{exc}; pass --preprocess (the preprocess output folder)") from None


EXTERNAL_STAGE = "external"  # preprocess.json's `stage` in an external set's folder


def find_external(source: str, hint: str | os.PathLike | None = None) -> Path:
    """The external set of ``source`` (``python -m siimcovid external``'s output, or the
    preprocess-external kernel's ``<source>/`` folder) under ``hint`` or the inputs."""
    from .errors import UserError
    from .paths import find_all

    hits = [p for p in find_all(META_CSV, hint)
            if (read_summary(p) or {}).get("stage") == EXTERNAL_STAGE and read_summary(p).get("source") == source]
    if not hits:
        where = hint or "the inputs (attach the preprocess-external kernel)"
        raise UserError(f"no external {source} set (a {META_CSV} whose {SUMMARY_JSON} says source {source}) under {where}")
    if len(hits) > 1:
        raise UserError(f"{len(hits)} external {source} sets: {', '.join(map(str, hits))}; pass the one you mean")
    return hits[0]


def image_path(pre_dir: str | os.PathLike, size: int, split: str, image_id: str) -> Path:
    """``P/images/<size>/<split>/<image_id>.png``."""
    return Path(pre_dir) / IMAGES_DIR / str(int(size)) / split / f"{image_id}.png"


def tfrecord_dir(pre_dir: str | os.PathLike, size: int) -> Path:
    return Path(pre_dir) / TFRECORDS_DIR / str(int(size))


def available_sizes(pre_dir: str | os.PathLike, input_format: str = "png") -> list[int]:
    """Sizes S with an ``images/<S>/`` (``input_format="tfrecord"``: ``tfrecords/<S>/``) folder."""
    root = Path(pre_dir) / (IMAGES_DIR if input_format == "png" else TFRECORDS_DIR)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def pick_size(pre_dir: str | os.PathLike, image_size: int, src_size: int | None = None,
              input_format: str = "png") -> int:
    """The images/<S>/ (or tfrecords/<S>/) folder to read: the one asked for, else the smallest S >= image_size."""
    if input_format not in ("png", "tfrecord"):
        raise ValueError(f"input_format must be one of ('png', 'tfrecord'), got {input_format!r}")
    sizes = available_sizes(pre_dir, input_format)
    root = Path(pre_dir) / (IMAGES_DIR if input_format == "png" else TFRECORDS_DIR)
    if not sizes:
        hint = "run preprocess" + (" --tfrecords" if input_format == "tfrecord" else "")
        raise FileNotFoundError(f"{root}: no {root.name}/<size>/ folders ({hint})")
    if src_size is not None:
        if src_size not in sizes:
            raise FileNotFoundError(f"{root / str(src_size)}: not there; sizes found {sizes}")
        return src_size
    bigger = [s for s in sizes if s >= image_size]
    return bigger[0] if bigger else sizes[-1]


def meta_sizes(meta: pd.DataFrame) -> list[int]:
    """Sizes S with a ``boxes_<S>`` column in a meta frame (the sizes of the run that wrote it)."""
    return sorted(int(c[6:]) for c in meta.columns if c.startswith("boxes_") and c[6:].isdigit())


# ---------------------------------------------------------------------------------------
# Boxes: the one JSON box parser / writer of meta.csv cells
# ---------------------------------------------------------------------------------------


def parse_boxes(cell: object, source: str = "boxes") -> list[list[float]]:
    """A meta.csv box cell (JSON list of [x0, y0, x1, y1]; empty / NaN = none) -> list of lists.
    A list already parsed passes through (checked)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return []
    if isinstance(cell, str):
        if cell.strip() in ("", "nan"):
            return []
        try:
            cell = json.loads(cell)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: boxes cell is not JSON: {cell!r}") from exc
    try:
        boxes = [[float(v) for v in b] for b in cell]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: boxes must be a list of [x0, y0, x1, y1], got {cell!r}") from exc
    if any(len(b) != 4 for b in boxes):
        raise ValueError(f"{source}: boxes must be a list of [x0, y0, x1, y1], got {cell!r}")
    return boxes


def format_boxes(boxes: Iterable, ndigits: int = 4) -> str:
    """Inverse of :func:`parse_boxes`: the JSON text of a meta.csv box cell."""
    return json.dumps([[round(float(v), ndigits) for v in b] for b in boxes])


def _flag(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes")
    return bool(v) if v == v else False  # NaN -> False


# ---------------------------------------------------------------------------------------
# meta.csv
# ---------------------------------------------------------------------------------------


def read_meta(pre_dir: str | os.PathLike, size: int | None = None, split: str | None = None, *,
              require: Iterable[str] = ()) -> pd.DataFrame:
    """meta.csv with every box column parsed once: ``boxes`` (ORIGINAL pixels) and each
    ``boxes_<S>`` as lists of [x0, y0, x1, y1]; ``keep_aspect`` as bool; ``study_label`` and
    ``fold`` as int (-1 where unknown). ``split`` keeps that split's rows only.

    With ``size``: also ``path`` (the size-px PNG, :func:`image_path`) and ``boxes_frame`` (the
    boxes in the size-px frame: the ``boxes_<size>`` column when the run wrote one, else mapped
    from the original frame through :class:`siimcovid.boxes.Resize`). ``require``: more columns
    that must be there. A missing file or column raises, naming it; no file is checked here
    (callers drop rows whose PNG is missing with :func:`existing`)."""
    pre_dir = Path(pre_dir)
    path = pre_dir / META_CSV
    if not path.is_file():
        raise MissingPreprocess(f"{path}: not found (run `python -m siimcovid preprocess` first, or pass the "
                                f"folder that holds {META_CSV})")
    df = pd.read_csv(path, dtype={"image_id": str, "study_id": str, "series_id": str})
    need = {"image_id", "study_id", "split", *require}
    if size is not None:
        need |= {"orig_h", "orig_w", "boxes"}
    missing = need - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    if split:
        df = df[df["split"] == split].reset_index(drop=True)
    for c in [c for c in df.columns if c == "boxes" or c.startswith("boxes_")]:
        df[c] = [parse_boxes(v, f"{path} image {i} {c}") for v, i in zip(df[c], df["image_id"])]
    df["keep_aspect"] = df["keep_aspect"].map(_flag) if "keep_aspect" in df.columns else False
    for col in ("study_label", "fold"):
        df[col] = df[col].fillna(-1).astype(int) if col in df.columns else -1
    if size is not None:
        size = int(size)
        df["path"] = [str(image_path(pre_dir, size, s, i)) for s, i in zip(df["split"], df["image_id"])]
        col = f"boxes_{size}"
        if col in df.columns:
            df["boxes_frame"] = df[col]
        else:
            from .boxes import Resize

            df["boxes_frame"] = [
                Resize.plan(int(h), int(w), size, bool(k)).to_resized(b).tolist() if len(b) else []
                for h, w, k, b in zip(df["orig_h"], df["orig_w"], df["keep_aspect"], df["boxes"])]
        df.attrs["size"] = size
    return df


def existing(meta: pd.DataFrame) -> pd.Series:
    """Boolean mask of the rows of ``read_meta(..., size=S)`` whose PNG is on disk."""
    return meta["path"].map(os.path.exists)


def image_sizes(meta: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """image_id -> (orig_h, orig_w): what a submission needs to clip boxes to the image."""
    return {str(i): (int(h), int(w)) for i, h, w in zip(meta["image_id"], meta["orig_h"], meta["orig_w"])}


# ---------------------------------------------------------------------------------------
# errors.csv, preprocess.json, source.json
# ---------------------------------------------------------------------------------------


def read_errors(pre_dir: str | os.PathLike) -> pd.DataFrame:
    """errors.csv (``dicom, image_id, stage, reason``, all text); empty when there is none."""
    path = Path(pre_dir) / ERRORS_CSV
    if not path.is_file():
        return pd.DataFrame(columns=ERROR_COLUMNS)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_summary(pre_dir: str | os.PathLike) -> dict | None:
    """preprocess.json (config, counts, timing) or None when absent or unreadable."""
    try:
        return json.loads((Path(pre_dir) / SUMMARY_JSON).read_text())
    except (OSError, ValueError):
        return None


def pixel_settings(pre_dir: str | os.PathLike | None) -> dict:
    """The preprocess run's pixel settings (:data:`PIXEL_KEYS`), {} if unknown (logged)."""
    if pre_dir is None:
        return {}
    summary = read_summary(pre_dir)
    cfg = summary.get("config") if isinstance(summary, dict) else None
    if not isinstance(cfg, dict):
        from .log import get_logger

        get_logger().warning("%s: no readable %s; test images use the default pixel settings", pre_dir, SUMMARY_JSON)
        return {}
    out = {k: cfg[k] for k in PIXEL_KEYS if k in cfg}
    if "percentiles" in out:
        out["percentiles"] = tuple(out["percentiles"])
    return out


def read_source(pre_dir: str | os.PathLike) -> dict | None:
    """source.json: what data set (folder, ids per split) and pixel settings the folder holds."""
    try:
        return json.loads((Path(pre_dir) / SOURCE_JSON).read_text())
    except (OSError, ValueError):
        return None


def write_subset(pre_dir: str | os.PathLike, out: str | os.PathLike, image_ids: Iterable[str] | None = None, *,
                 split: str | None = None, n: int | None = None) -> Path:
    """A preprocess-shaped folder ``out`` (replaced if it exists) holding some rows of ``pre_dir``: its
    meta.csv restricted to ``split``, then to ``image_ids`` (when given), then to the first ``n``, with
    links to those rows' PNGs at every size (copies where links are refused). For running a stage
    on a few images (timing a model) without converting them again."""
    import shutil

    pre_dir, out = Path(pre_dir), Path(out)
    meta = pd.read_csv(pre_dir / META_CSV, dtype=str)  # raw text: written back unchanged
    if split is not None:
        meta = meta[meta["split"] == split]
    if image_ids is not None:
        meta = meta[meta["image_id"].isin(set(map(str, image_ids)))]
    if n is not None:
        meta = meta.head(int(n))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    meta.to_csv(out / META_CSV, index=False)
    for size in available_sizes(pre_dir):
        for row_split, image_id in zip(meta["split"], meta["image_id"]):
            src = image_path(pre_dir, size, row_split, image_id)
            if not src.is_file():
                continue
            dst = image_path(out, size, row_split, image_id)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(src.resolve(), dst)
            except OSError:
                shutil.copy2(src, dst)
    return out


def holds_output(pre_dir: str | os.PathLike) -> bool:
    """True when the folder holds anything preprocess writes."""
    p = Path(pre_dir)
    return p.is_dir() and any((p / n).exists() for n in OUTPUT_NAMES if n != RUN_JSON)
