"""What every external chest X-ray adapter shares: settings, finding the source, converting its
images, the duplicate check against a competition set, and writing the preprocess layout.

An adapter (one module per source) only reads its source as published and returns one
:class:`Item` per image; this module turns the items into ``OUT/images/<S>/train/<id>.png``,
``OUT/meta.csv`` (the competition's columns plus :data:`siimcovid.layout.EXTERNAL_COLUMNS`),
``OUT/errors.csv`` and ``OUT/preprocess.json`` (docs/contracts.md, "External sets"), so a stage
reads an external set through ``layout`` exactly as it reads the competition's preprocess output.
"""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ...atomic import check_writable, folder_lock, write_csv, write_json
from ...boxes import Resize
from ...errors import UserError
from ...layout import (
    ERROR_COLUMNS,
    ERRORS_CSV,
    EXTERNAL_STAGE,
    META_CSV,
    SUMMARY_JSON,
    available_sizes,
    format_boxes,
    image_path,
    meta_columns,
    read_meta,
    read_summary,
)
from ...log import get_logger, run_header
from ...paths import find_input, search_roots

# errors.csv stages written here besides preprocess's own (read / decode / convert / missing / index)
LATERAL_STAGE = "lateral"  # a lateral view, left out (keep_lateral off)
DUPLICATE_STAGE = "duplicate"  # looks like a competition image (perceptual hash), left out
EXCLUDED_STAGES = (LATERAL_STAGE, DUPLICATE_STAGE)  # left out on purpose: not failures (exit 0)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class ExternalConfig:
    """Settings every source shares (schema base of configs/external/<source>.yaml):

    src: the source folder as published (empty: found under SIIM_INPUT / /kaggle/input by the source's marker file, first under the handle's slug)
    out: output folder (preprocess layout)
    sizes: output sizes in px (--size 256 --size 512)
    keep_aspect: letterbox instead of stretching to a square
    handle: the source's Kaggle handle (competition slug or owner/dataset)
    keep_lateral: keep lateral views (off: they are left out and listed in errors.csv)
    exclude_like: a competition preprocess output: images whose perceptual hash is within hash_distance of one of its images are duplicates
    keep_duplicates: convert duplicates too (off: they are left out and listed in errors.csv)
    hash_distance: largest Hamming distance (of 64 bits) between pHashes that counts as the same picture
    n_folds: folds, assigned by a hash of the source's patient id
    decoder: DICOM decoder, auto | dicomsdl | pydicom | pillow (pydicom: images decode in this process, and pydicom raises where dicomsdl can crash it)
    limit: convert at most N images (smoke runs; 0 = all)
    workers: worker processes (0 = one per core, 1 = in this process)
    """

    src: str = ""
    out: str = "external"
    sizes: list[int] = field(default_factory=lambda: [512])
    keep_aspect: bool = False
    handle: str = ""
    keep_lateral: bool = False
    exclude_like: str = ""
    keep_duplicates: bool = False
    hash_distance: int = 6
    n_folds: int = 5
    decoder: str = "pydicom"
    limit: int = 0
    workers: int = 0

    def validate(self) -> None:
        if not self.sizes or min(int(s) for s in self.sizes) < 8 or max(int(s) for s in self.sizes) > 4096:
            raise UserError(f"--size {self.sizes}: sizes must be 8..4096 px")
        if not 0 <= int(self.hash_distance) < 32:
            raise UserError(f"--hash-distance {self.hash_distance}: use 0..31 (of 64 bits)")
        if int(self.n_folds) < 1:
            raise UserError(f"--n-folds {self.n_folds}: at least 1")
        from ..dicom import DECODERS

        if self.decoder not in DECODERS:
            raise UserError(f"--decoder {self.decoder!r}: one of {list(DECODERS)}")


@dataclass
class Item:
    """One image of a source, as its adapter read it (boxes in ORIGINAL pixels of the file)."""

    image_id: str
    file: Path  # absolute
    rel: str  # path relative to the source folder (meta.csv ``dicom`` column)
    study_id: str
    group: str  # the source's patient id: folds never split it
    opacity: int  # 1 / 0, -1 = unknown (e.g. only uncertain labels under the ignore policy)
    labels: dict  # the source's own labels, as it spells them
    boxes: list = field(default_factory=list)
    box_labelled: bool = False  # the source says where opacities are (its boxes are the truth, [] = none)
    view: str = ""  # PA / AP / LATERAL / "" (not given)
    reader_boxes: dict | None = None  # reader -> boxes, fused once the image's size is known


def is_lateral(view: str) -> bool:
    return str(view).strip().upper() in ("LATERAL", "LL", "RL", "LAT")


def fold_of(group: str, n_folds: int) -> int:
    """A patient's fold: stable across runs and machines (crc32 of the id), never splitting a patient."""
    return int(zlib.crc32(str(group).encode()) % int(n_folds))


def locate(marker: str, src: str, handle: str) -> Path:
    """The source folder: under ``src`` when given, else where Kaggle mounts the handle in each input
    root (``competitions/<slug>``, ``datasets/<owner>/<slug>``, or the older flat ``<slug>``), else
    anywhere in the roots (a marker as plain as VinBigData's ``train.csv`` then needs the handle)."""
    if src:
        return find_input(marker, hint=src)
    handle = (handle or "").strip("/")
    rels = [f"competitions/{handle}", f"datasets/{handle}", handle.split("/")[-1]] if handle else []
    for root in search_roots(None):
        for rel in rels:
            if (root / rel).is_dir():
                try:
                    return find_input(marker, hint=root / rel)
                except FileNotFoundError:
                    pass
    return find_input(marker)


def check_header(path: Path, expected: Iterable[str]) -> None:
    """A UserError naming the file when its first line is not the published header."""
    with open(path, newline="") as f:
        head = f.readline().rstrip("\r\n")
    want = ",".join(expected)
    if head != want:
        raise UserError(f"{path}: header {head!r} is not the published one {want!r}: not this source's file")


# ---------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------


def read_picture(path: Path) -> np.ndarray:
    """A PNG / JPEG as one uint8 grey channel (RGB(A) -> grey, alpha dropped; 16-bit -> its range)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("not a readable image (cv2.imread returned nothing)")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if img.dtype != np.uint8:
        from ..dicom import to_uint8

        img = to_uint8(img.astype(np.float32), float(img.min()), float(max(img.max(), img.min() + 1)), False)
    return img


def convert_item(item: Item, cfg: ExternalConfig) -> dict:
    """Decode one item -> {size: uint8 image} plus what meta.csv records (DICOMs through
    preprocess's own converter, pictures resized the same way)."""
    from .. import dicom

    sizes = sorted({int(s) for s in cfg.sizes})
    if item.file.suffix.lower() in IMAGE_SUFFIXES:
        img = read_picture(item.file)
        h, w = img.shape
        images = {s: dicom.resize_to(img, h, w, s, cfg.keep_aspect) for s in sizes}
        return {"images": images, "orig_h": h, "orig_w": w, "photometric": "", "transfer_syntax": "",
                "bits_stored": 8, "voi": "none", "decoder": "cv2", "reduce": 0}
    conv = dicom.convert(item.file, sizes, keep_aspect=cfg.keep_aspect, decoder=cfg.decoder)
    return {"images": conv.images, "orig_h": conv.orig_h, "orig_w": conv.orig_w, "photometric": conv.photometric,
            "transfer_syntax": conv.transfer_syntax, "bits_stored": conv.bits_stored, "voi": conv.voi,
            "decoder": conv.decoder, "reduce": conv.reduce}


def phash(img: np.ndarray) -> int:
    """64-bit perceptual hash: the 8x8 lowest DCT frequencies (DC left out) of the 32x32 picture
    against their median. Survives resizing, JPEG and small grey changes; one uint64."""
    import cv2

    small = cv2.resize(img.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()[1:]
    bits = np.concatenate([[0], (low > np.median(low)).astype(np.uint8)])  # 64 bits, first always 0
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances (len(a), len(b)) between uint64 hashes."""
    x = np.bitwise_xor(a.astype(np.uint64)[:, None], b.astype(np.uint64)[None, :])
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)


def competition_hashes(like: str | Path) -> tuple[list[str], np.ndarray]:
    """(image ids, pHashes) of every image of a competition preprocess output (its smallest size;
    a letterboxed picture is cropped to its content first)."""
    import cv2

    sizes = available_sizes(like)
    if not sizes:
        raise UserError(f"--exclude-like {like}: no images/<size>/ folders (pass a preprocess output)")
    meta = read_meta(like, size=sizes[0])
    ids, hashes = [], []
    for r in meta.itertuples(index=False):
        img = cv2.imread(r.path, cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        if r.keep_aspect:
            ch, cw = Resize.plan(int(r.orig_h), int(r.orig_w), sizes[0], True).content_hw
            img = img[: max(ch, 1), : max(cw, 1)]
        ids.append(str(r.image_id))
        hashes.append(phash(img))
    return ids, np.array(hashes, dtype=np.uint64)


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


def _error(item: Item, stage: str, reason: str) -> dict:
    return {"dicom": item.rel, "image_id": item.image_id, "stage": stage, "reason": reason}


def check_out(out: Path, source: str) -> None:
    """Refuse (UserError) an output folder holding another set: a competition preprocess output or
    another source's (their images would mix in one images/ tree). The same source is redone."""
    held = read_summary(out)
    if held is None and not (out / META_CSV).is_file():
        return
    if not isinstance(held, dict) or held.get("stage") != EXTERNAL_STAGE or held.get("source") != source:
        what = f"external {held.get('source')}" if isinstance(held, dict) and held.get("stage") == EXTERNAL_STAGE \
            else "another preprocess output"
        raise UserError(f"--out {out}: holds {what}; pass an empty folder (one per source)")


_WORKER: dict = {}  # a pool worker's settings and competition hashes (set once, not sent per image)


def _init_worker(cfg: ExternalConfig, like_ids: list[str], like_hashes: np.ndarray) -> None:
    _WORKER.update(cfg=cfg, like_ids=like_ids, like_hashes=like_hashes)


def process_item(it: Item, cfg: ExternalConfig, like_ids: list[str], like_hashes: np.ndarray) -> dict:
    """Convert one item, check it against the competition hashes and write its PNGs. Never raises:
    ``{"conv": what meta.csv records}``, ``{"error": row}`` (missing / did not decode) and / or
    ``{"dup": row}`` (a duplicate: without ``conv`` when left out)."""
    from ..convert import _write_png
    from ..dicom import one_line

    if not it.file.is_file():
        return {"error": _error(it, "missing", f"{it.rel}: listed in the labels but not there")}
    try:
        conv = convert_item(it, cfg)
    except Exception as exc:  # one bad file is that file's problem, not the run's
        return {"error": _error(it, "convert", f"{type(exc).__name__}: {one_line(exc)}")}
    out: dict = {}
    if len(like_hashes):
        d = hamming(np.array([phash(conv["images"][min(conv["images"])])], np.uint64), like_hashes)[0]
        j = int(np.argmin(d))
        if d[j] <= cfg.hash_distance:
            out["dup"] = _error(it, DUPLICATE_STAGE, f"looks like competition image {like_ids[j]} (pHash distance "
                                f"{int(d[j])} <= {cfg.hash_distance})"
                                + ("; kept (keep_duplicates)" if cfg.keep_duplicates else "; left out"))
            if not cfg.keep_duplicates:
                return out
    try:
        for size, img in conv.pop("images").items():
            _write_png(image_path(cfg.out, size, "train", it.image_id), img, None)
    except OSError as exc:
        return {**out, "error": _error(it, "write", f"{type(exc).__name__}: {one_line(exc)}")}
    return {**out, "conv": conv}


def _pooled(it: Item) -> dict:
    return process_item(it, _WORKER["cfg"], _WORKER["like_ids"], _WORKER["like_hashes"])


def _results(todo: list[Item], cfg: ExternalConfig, like_ids: list[str], like_hashes: np.ndarray):
    """(item, :func:`process_item` result) in ``todo``'s order: in this process for one worker, else
    in a pool of ``cfg.workers`` processes (0 = one per core)."""
    import os

    n = int(cfg.workers) or (os.cpu_count() or 1)
    if n <= 1 or len(todo) < 2:
        for it in todo:
            yield it, process_item(it, cfg, like_ids, like_hashes)
        return
    from concurrent.futures import ProcessPoolExecutor

    from ..convert import _mp_context

    with ProcessPoolExecutor(n, mp_context=_mp_context(), initializer=_init_worker,
                             initargs=(cfg, like_ids, like_hashes)) as pool:
        yield from zip(todo, pool.map(_pooled, todo, chunksize=8))


def run(source: str, cfg: ExternalConfig, items: list[Item], errors: list[dict], fuse=None,
        src_dir: Path | None = None) -> dict:
    """Convert ``items`` into the preprocess layout under ``cfg.out``; returns the summary
    (preprocess.json). ``fuse(item, h, w) -> boxes`` fuses several readers' boxes once the
    image's size is known. Bad files go to errors.csv and the run goes on."""
    log = get_logger()
    out = Path(cfg.out)
    check_out(out, source)  # before the lock file: a refused folder gets nothing written into it
    check_writable(out)
    sizes = sorted({int(s) for s in cfg.sizes})
    t0 = time.time()
    counts = {"listed": len(items), "converted": 0, "failed": 0, LATERAL_STAGE: 0, DUPLICATE_STAGE: 0}
    like_ids, like_hashes = competition_hashes(cfg.exclude_like) if cfg.exclude_like else ([], np.zeros(0, np.uint64))
    rows = []
    with folder_lock(out, ".external.lock", what="external"):
        run_header(f"external-{source}", cfg, out)
        todo, seen = [], set()
        for it in items:
            if it.image_id in seen:  # two files map to one PNG name: the first one wins
                errors.append(_error(it, "index", "image id seen twice (another file with the same name); skipped"))
                continue
            seen.add(it.image_id)
            if not cfg.keep_lateral and is_lateral(it.view):
                errors.append(_error(it, LATERAL_STAGE, f"lateral view ({it.view}) left out (keep_lateral off)"))
                counts[LATERAL_STAGE] += 1
            else:
                todo.append(it)
        if cfg.limit:
            todo = todo[: int(cfg.limit)]
        for it, res in _results(todo, cfg, like_ids, like_hashes):
            if "dup" in res:
                counts[DUPLICATE_STAGE] += 1
                errors.append(res["dup"])
            if "error" in res:
                errors.append(res["error"])
                counts["failed"] += 1
            if "conv" not in res:
                continue
            conv = res["conv"]
            h, w = conv["orig_h"], conv["orig_w"]
            boxes = it.boxes
            if fuse is not None and it.reader_boxes is not None:
                boxes = fuse(it, h, w)
                it.opacity = int(bool(boxes))  # what the readers agreed on (min_readers), not any one reader
            row = {"image_id": it.image_id, "study_id": it.study_id, "series_id": "", "split": "train",
                   "dicom": it.rel, "orig_h": h, "orig_w": w, "photometric": conv["photometric"],
                   "transfer_syntax": conv["transfer_syntax"], "bits_stored": conv["bits_stored"],
                   "keep_aspect": bool(cfg.keep_aspect), "boxes": format_boxes(boxes)}
            for s in sizes:
                plan = Resize.plan(h, w, s, cfg.keep_aspect)
                row[f"boxes_{s}"] = format_boxes(plan.to_resized(boxes) if len(boxes) else [], 3)
            row.update({"study_label": -1, "fold": fold_of(it.group, cfg.n_folds), "voi": conv["voi"],
                        "decoder": conv["decoder"], "reduce": conv["reduce"], "source": source,
                        "opacity": int(it.opacity), "view": it.view, "box_labelled": int(bool(it.box_labelled)),
                        "labels": json.dumps(it.labels, sort_keys=True)})
            rows.append(row)
            counts["converted"] += 1
        meta = pd.DataFrame(rows, columns=meta_columns(sizes, external=True))
        write_csv(meta, out / META_CSV, index=False)
        write_csv(pd.DataFrame(errors, columns=ERROR_COLUMNS), out / ERRORS_CSV, index=False)
        counts["opacity"] = {str(k): int(v) for k, v in meta["opacity"].value_counts().items()} if len(meta) else {}
        counts["errors_by_stage"] = dict(pd.Series([e["stage"] for e in errors], dtype=str).value_counts()) \
            if errors else {}
        counts["errors_by_stage"] = {k: int(v) for k, v in counts["errors_by_stage"].items()}
        summary = {"stage": EXTERNAL_STAGE, "source": source, "src": str(src_dir or cfg.src), "config": asdict(cfg),
                   "duplicates_checked_against": str(cfg.exclude_like) if cfg.exclude_like else None,
                   "counts": counts, "seconds": round(time.time() - t0, 2)}
        write_json(out / SUMMARY_JSON, summary, indent=1)
    log.info("external %s: %d converted, %d failed, %d lateral, %d duplicates -> %s", source, counts["converted"],
             counts["failed"], counts[LATERAL_STAGE], counts[DUPLICATE_STAGE], out)
    if not cfg.exclude_like:
        log.warning("external %s: no --exclude-like: duplicates of competition images were NOT looked for", source)
    return summary
