"""The preprocess stage: every train and test DICOM -> 8-bit PNGs at one or more sizes + meta.csv.

Layout (docs/contracts.md, "Preprocess output")::

    OUT/images/<S>/<split>/<image_id>.png   OUT/meta.csv   OUT/errors.csv
    OUT/folds.csv   OUT/preprocess.json   OUT/records.jsonl (resume journal)

Images are converted by :func:`siimcovid.preprocess.dicom.convert` in child processes: dicomsdl can
segfault on a bad file, so a worker that dies costs only the file it held, which is retried
with the safe decoder (pydicom) in a fresh worker; if that fails too the file goes to
``errors.csv`` with the reason. A finished image is journalled (``records.jsonl``) right
after its PNGs are written (atomically), so a re-run after a lost session skips it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..atomic import (
    USER_ERRNOS,
    WriteError,
    atomic_write,
    check_writable,
    describe_os_error,
    folder_lock,
    write_bytes,
    write_csv,
    write_json,
)
from ..boxes import Resize
from ..checkdata import check_or_refuse
from ..data import (
    IMAGE_CSV,
    INDEX_STAGE,
    MISSING_STAGE,
    DataFormatError,
    file_kind,
    find_data_dir,
    index_train,
    missing_test_images,
    scan_dicoms,
)
from .dicom import DECODERS, NO_VOI_RANGES, DicomError, DisplayConfig
from .journal import fingerprint, is_done, read_journal
from ..errors import UserError
from ..folds import FOLDS_CSV, folds_for_data, read_folds, save_folds
from ..layout import (
    ERROR_COLUMNS,
    ERRORS_CSV,
    JOURNAL,
    META_CSV,
    OUTPUT_NAMES,
    SOURCE_JSON,
    SUMMARY_JSON,
    format_boxes,
    holds_output,
    image_path,
    meta_columns,
    read_meta,
    read_source,
)
from ..log import get_logger, run_header


@dataclass
class PreprocessConfig:
    """Preprocess settings (schema of the configs/preprocess/ variants; CLI help per option:)

    data: competition folder (default: found by sample_submission.csv)
    out: output folder (created; re-runs resume)
    sizes: output sizes in px (--size 512 --size 1024)
    workers: worker processes (0 = one per core)
    keep_aspect: letterbox instead of stretching to a square
    decoder: auto = dicomsdl (child process) / reduced-resolution OpenJPEG, pydicom as fallback
    reduce_j2k: decode JPEG 2000 at reduced resolution when the output is small
    no_voi_range: grey range for files with neither VOI LUT nor window
    percentiles: LO HI of the percentile grey range
    exact: VOI table before resizing; --fast-voi resizes stored values first (~2x faster, see README)
    splits: which splits to convert (train test)
    limit: convert at most N images (smoke runs)
    timeout: seconds per image before its worker is killed
    png_compression: PNG compression level 0-9 (none = zlib's Huffman-only strategy, measured fastest at OpenCV's default size; see README)
    n_folds: folds when no folds.csv exists
    seed: fold seed when no folds.csv exists
    tfrecords: also write TFRecord shards (needs tensorflow)
    overwrite: OUT holds another set's output (other ids, data folder or pixel settings): remove it and start clean (default: refuse; the same set resumes)
    keep_going: start although check-data found errors in the CSVs or DICOM tree: the images they concern are left out and listed in errors.csv (off: refuse to start)
    max_drop: largest share of the train images train_image_level.csv lists that may be left out (missing, unlabelled, bad rows) before the run is refused
    progress: progress bar
    """

    data: str
    out: str
    sizes: list[int] = field(default_factory=lambda: [512])
    workers: int = 0  # 0 = one per CPU core
    keep_aspect: bool = False
    decoder: str = "auto"
    reduce_j2k: bool = True  # decode JPEG 2000 at reduced resolution when the output is small
    no_voi_range: str = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    exact: bool = True  # False ("fast VOI"): resize stored values before the VOI table (see dicom.DisplayConfig)
    splits: tuple[str, ...] = ("train", "test")
    limit: int = 0  # process at most this many images (0 = all); for smoke runs
    timeout: float = 600.0  # seconds one image may take before its worker is killed
    png_compression: int | None = None  # None = Huffman-only (same size as OpenCV's default, faster: README)
    n_folds: int = 5
    seed: int = 42
    tfrecords: bool = False
    overwrite: bool = False  # OUT holds another set's output: remove it first instead of refusing
    keep_going: bool = False  # check-data errors: leave the images they concern out instead of refusing
    max_drop: float = 0.05  # more listed train images left out than this share: refuse (a wrong CSV, not a bad file)
    progress: bool = True
    # Test hook for the crash handling: image_id -> "fast" (the worker kills itself with SIGSEGV
    # while the fast decoders are allowed) or "always". Not exposed on the command line.
    fault_injection: dict[str, str] = field(default_factory=dict)

    def display(self) -> DisplayConfig:
        return DisplayConfig(no_voi_range=self.no_voi_range, percentiles=tuple(self.percentiles), exact=self.exact)

    def pixel_key(self) -> str:
        """Fingerprint of everything that changes pixels: a journalled image is reused only
        when it was made with the same settings."""
        d = {"keep_aspect": self.keep_aspect, "reduce_j2k": self.reduce_j2k, "display": asdict(self.display())}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------
# Index: which DICOMs to convert, with their labels
# ---------------------------------------------------------------------------------------


def build_index(data_dir: str | Path, splits: Sequence[str] = ("train", "test"),
                exclude: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """One row per DICOM to convert: image_id, study_id, series_id, split, path, dicom (relative),
    boxes (xyxy, original pixels), study_label (-1 for test). Problems that are not worth
    stopping for (a CSV row without a file, a file without a CSV row, a study without a label,
    a second file with the same image id) come back as error rows (stage "index").
    ``exclude``: train image id -> reason (check-data's errors under ``--keep-going``): left out
    and recorded, so a bad row is never converted with its bad boxes."""
    data_dir = Path(data_dir)
    frames, errors = [], []
    if "train" in splits:
        if not (data_dir / "train").is_dir():
            get_logger().warning("%s: no train/ folder; converting test only", data_dir)
        else:
            df, errors = index_train(data_dir, strict=False)
            noted = {e["image_id"] for e in errors} | set(df["image_id"])
            bad = df["image_id"].isin(list(exclude or {}))
            for r in df[bad].itertuples():
                errors.append({"dicom": str(Path(r.path).relative_to(data_dir)), "image_id": r.image_id,
                               "stage": INDEX_STAGE, "reason": f"left out (--keep-going): {exclude[r.image_id]}"})
            for image_id, why in (exclude or {}).items():  # rows no file stands for: listed, bad, no DICOM
                if image_id not in noted:
                    errors.append({"dicom": "", "image_id": image_id, "stage": INDEX_STAGE,
                                   "reason": f"left out (--keep-going): {why}"})
            df = df[~bad].copy()
            df["split"] = "train"
            frames.append(df)
    if "test" in splits and (data_dir / "test").is_dir():
        odd: list[str] = []
        df = scan_dicoms(data_dir / "test", not_regular=odd)
        for p in odd:  # never opened: a FIFO would block the run
            errors.append({"dicom": str(Path(p).relative_to(data_dir)), "image_id": Path(p).stem,
                           "stage": MISSING_STAGE, "reason": f"{file_kind(p)}, not a regular file: never opened"})
        errors += missing_test_images(data_dir, list(df["image_id"]) + [Path(p).stem for p in odd])
        df["boxes"] = [[] for _ in range(len(df))]
        df["study_label"] = -1
        df["split"] = "test"
        frames.append(df)
    if not frames:
        raise FileNotFoundError(f"{data_dir}: neither train/ nor test/ holds DICOMs for splits {list(splits)}")
    index = pd.concat(frames, ignore_index=True)
    index["dicom"] = [str(Path(p).relative_to(data_dir)) for p in index["path"]]
    dup = index["image_id"].duplicated(keep="first")
    for r in index[dup].itertuples():
        errors.append({"dicom": r.dicom, "image_id": r.image_id, "stage": "index",
                       "reason": "image id seen twice (another file with the same name); second copy skipped"})
    index = index[~dup].reset_index(drop=True)
    return index[["image_id", "study_id", "series_id", "split", "path", "dicom", "boxes", "study_label"]], errors


def load_or_make_folds(data_dir: str | Path, out_dir: str | Path, n_folds: int = 5, seed: int = 42) -> pd.DataFrame:
    """DATA/folds.csv if the data set ships one, else the one a previous run wrote to OUT, else
    computed (patient-grouped, ``n_folds`` folds, ``seed``). Always copied to OUT/folds.csv."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    for src in (data_dir / FOLDS_CSV, out_dir / FOLDS_CSV):
        if src.is_file():
            folds = read_folds(src)
            if src != out_dir / FOLDS_CSV:
                write_bytes(out_dir / FOLDS_CSV, src.read_bytes())  # the table as shipped, atomically
            get_logger().info("folds: %s (%d studies)", src, len(folds))
            return folds
    get_logger().info("folds: none in %s; computing k=%d seed=%d (patient-grouped)", data_dir, n_folds, seed)
    # Folds are a training concern: a subset with fewer patient groups than folds still converts.
    folds = folds_for_data(data_dir, n_folds=n_folds, seed=seed, allow_fewer=True)
    save_folds(folds, out_dir / FOLDS_CSV)
    return folds


# ---------------------------------------------------------------------------------------
# Work done in a child process
# ---------------------------------------------------------------------------------------


def png_params(compression: int | None) -> list[int]:
    """cv2.imencode parameters. None: Huffman coding only (no LZ77 match search): on these
    noisy radiographs the files are as small as with OpenCV's default (level 1, RLE strategy)
    and the encoder up to 2x faster (``bench preprocess-profile``, README "Preprocess speed").
    A level (0-9) uses zlib's default strategy at that level."""
    import cv2

    if compression is None:
        return [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
    return [cv2.IMWRITE_PNG_COMPRESSION, int(compression)]


def _write_png(path: Path, img: np.ndarray, compression: int | None) -> tuple[float, float, list[int]]:
    """Write atomically: a session killed mid-write never leaves a PNG that looks finished.
    Returns (encode, write) seconds and the file's :func:`fingerprint`."""
    import cv2

    t0 = time.perf_counter()
    ok, buf = cv2.imencode(".png", img, png_params(compression))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    t1 = time.perf_counter()
    with atomic_write(path, "wb", fsync=False) as f:  # the journal's fingerprint catches a lost PNG
        f.write(buf.data)  # the encoder's buffer as is (no bytes copy)
    return t1 - t0, time.perf_counter() - t1, fingerprint(buf)


def process_one(task: dict, cfg: PreprocessConfig) -> dict:
    """Convert one DICOM and write its PNGs. Never raises: returns ok + record, or the error.
    Everything per image happens here, in the worker: only the small task and result dicts
    cross the pipe (measured by ``bench preprocess-profile``)."""
    from . import dicom

    t0 = time.perf_counter()
    fault = cfg.fault_injection.get(task["image_id"])
    if fault == "always" or (fault == "fast" and not task.get("skip")):
        os.kill(os.getpid(), signal.SIGSEGV)
    try:
        conv = dicom.convert(task["path"], cfg.sizes, keep_aspect=cfg.keep_aspect, decoder=cfg.decoder,
                             display=cfg.display(), reduce_j2k=cfg.reduce_j2k, skip=tuple(task.get("skip", ())))
        encode = write = 0.0
        files = {}
        for size, img in conv.images.items():
            e, w, files[str(size)] = _write_png(image_path(cfg.out, size, task["split"], task["image_id"]), img,
                                                cfg.png_compression)
            encode, write = encode + e, write + w
        t = conv.timings
        # "resize" and "write" keep their meaning for the stage summary (lookup + resize, PNG
        # encode + file write); "lut" and "encode" are their first parts, for the profile
        timings = dict(t, resize=t.get("lut", 0.0) + t.get("resize", 0.0), encode=encode, write=encode + write,
                       total=time.perf_counter() - t0)
        return {"ok": True, "record": {
            "image_id": task["image_id"], "split": task["split"], "orig_h": conv.orig_h, "orig_w": conv.orig_w,
            "photometric": conv.photometric, "transfer_syntax": conv.transfer_syntax,
            "bits_stored": conv.bits_stored, "voi": conv.voi, "decoder": conv.decoder, "reduce": conv.reduce,
            "sizes": sorted(conv.images), "pixel_key": cfg.pixel_key(), "fallbacks": conv.fallbacks,
            "files": files, "warnings": conv.warnings,
        }, "timings": timings}
    except DicomError as exc:
        return {"ok": False, "stage": exc.stage, "reason": exc.reason}
    except BaseException as exc:  # anything else is still this file's problem, not the batch's
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return {"ok": False, "stage": "convert", "reason": f"{type(exc).__name__}: {dicom.one_line(exc)}"}


def _warm_imports() -> None:
    """Import the decoders up front so the first image's time is the image's."""
    import importlib

    for name in ("pydicom", "pydicom.pixels", "pydicom.encaps", "dicomsdl", "PIL.Image", "PIL.Jpeg2KImagePlugin",
                 "pylibjpeg", "openjpeg", "libjpeg", "jpeg_ls", "rle", "rle.rle"):
        try:
            importlib.import_module(name)
        except ImportError:  # a missing codec shows up per file, with the file's name
            pass
    from .dicom import warm_up

    warm_up()  # the compiled lookup: built once (numba caches it on disk), not on the first image


def _worker_loop(conn, cfg: PreprocessConfig) -> None:
    import warnings

    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the worker processes
    warnings.simplefilter("ignore")  # pydicom warns on the 12-hex "UIDs" of the real data
    _warm_imports()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(process_one(task, cfg))


# ---------------------------------------------------------------------------------------
# A crash-tolerant worker pool
# ---------------------------------------------------------------------------------------


def _mp_context():
    import multiprocessing as mp

    if sys.platform.startswith("linux"):
        ctx = mp.get_context("forkserver")
        # Workers fork from a server that already imported the heavy modules: a respawn
        # after a crash costs milliseconds, and the parent's threads are never forked.
        # siimcovid.preprocess._lutjit compiles the lookup loop there once (ImportError without numba is skipped).
        ctx.set_forkserver_preload(["siimcovid.preprocess.dicom", "siimcovid.preprocess.convert",
                                    "siimcovid.preprocess._lutjit"])
        return ctx
    return mp.get_context("spawn")


class _Worker:
    def __init__(self, ctx, cfg: PreprocessConfig):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_loop, args=(child, cfg), daemon=True)
        self.proc.start()
        child.close()
        self.task: dict | None = None
        self.started = 0.0

    def send(self, task: dict) -> None:
        self.task, self.started = task, time.monotonic()
        self.conn.send(task)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"worker killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"worker killed by signal {-exitcode}"
    return f"worker exited with status {exitcode}"


def run_pool(tasks: Sequence[dict], cfg: PreprocessConfig, n_workers: int, on_result) -> None:
    """Run ``process_one`` over tasks in ``n_workers`` child processes; ``on_result(task, result)``
    is called in this process for every task exactly once. A worker that dies or hangs past
    ``cfg.timeout`` is replaced; its task is retried once with the fast decoders skipped."""
    from multiprocessing.connection import wait

    ctx = _mp_context()
    queue = deque(dict(t) for t in tasks)
    workers = [_Worker(ctx, cfg) for _ in range(max(1, min(n_workers, len(queue))))] if queue else []

    def crashed(w: _Worker, why: str) -> None:
        task = w.task
        w.task = None
        if not task.get("skip"):
            task = dict(task, skip=["dicomsdl", "pillow", "native", "rle"], first_failure=why)
            queue.appendleft(task)  # retry now, with the safe decoder, in a fresh worker
        else:
            on_result(task, {"ok": False, "stage": "decode",
                             "reason": f"{task.get('first_failure', why)} on the first try; retried with "
                                       f"pydicom only: {why}"})
        respawn(w)

    def respawn(w: _Worker) -> None:
        try:
            w.proc.kill()
        except Exception:
            pass
        w.proc.join(timeout=5)
        w.conn.close()
        workers[workers.index(w)] = _Worker(ctx, cfg)

    try:
        while queue or any(w.task is not None for w in workers):
            for w in workers:
                if w.task is None and queue:
                    task = queue.popleft()
                    try:
                        w.send(task)
                    except (OSError, BrokenPipeError):  # died while idle: not this task's fault
                        w.task = None
                        queue.appendleft(task)
                        respawn(w)
            busy = [w for w in workers if w.task is not None]
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=1.0))
            now = time.monotonic()
            for w in busy:
                if w.conn in ready or w.proc.sentinel in ready:
                    try:
                        if w.conn.poll():
                            result = w.conn.recv()
                            task, w.task = w.task, None
                            on_result(task, result)
                            continue
                    except (EOFError, OSError):
                        pass
                    if not w.proc.is_alive():
                        w.proc.join(timeout=1)
                        crashed(w, _death_reason(w.proc.exitcode))
                elif now - w.started > cfg.timeout:
                    crashed(w, f"timed out after {cfg.timeout:.0f} s (worker killed)")
    finally:
        for w in workers:
            w.stop()


# ---------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------


def build_meta(index: pd.DataFrame, records: dict[str, dict], folds: pd.DataFrame | None,
               cfg: PreprocessConfig) -> pd.DataFrame:
    """meta.csv rows for every indexed image with a finished record (columns per contract)."""
    rows = []
    fold_of = dict(zip(folds["study_id"].astype(str), folds["fold"].astype(int))) if folds is not None else {}
    for r in index.itertuples(index=False):
        rec = records.get(r.image_id)
        if not is_done(rec, cfg, r.split):
            continue
        row = {
            "image_id": r.image_id, "study_id": r.study_id, "series_id": r.series_id, "split": r.split,
            "dicom": r.dicom, "orig_h": rec["orig_h"], "orig_w": rec["orig_w"], "photometric": rec["photometric"],
            "transfer_syntax": rec["transfer_syntax"], "bits_stored": rec["bits_stored"],
            "keep_aspect": bool(cfg.keep_aspect), "boxes": format_boxes(r.boxes),
        }
        for s in cfg.sizes:
            plan = Resize.plan(rec["orig_h"], rec["orig_w"], s, cfg.keep_aspect)
            row[f"boxes_{s}"] = format_boxes(plan.to_resized(r.boxes) if len(r.boxes) else [], 3)
        row["study_label"] = int(r.study_label)
        row["fold"] = int(fold_of.get(r.study_id, -1)) if r.split == "train" else -1
        row.update({"voi": rec["voi"], "decoder": rec["decoder"], "reduce": rec["reduce"]})
        rows.append(row)
    return pd.DataFrame(rows, columns=meta_columns(cfg.sizes))


MAX_SIZE = 4096  # px; the competition's largest films are ~4k, a bigger output is a typo


def check_settings(cfg: PreprocessConfig) -> None:
    """UserError naming the option for a setting that cannot work (before anything is written)."""
    cfg.sizes = sorted({int(s) for s in cfg.sizes})
    if not cfg.sizes or min(cfg.sizes) < 8 or max(cfg.sizes) > MAX_SIZE:
        raise UserError(f"--size {cfg.sizes}: sizes must be 8..{MAX_SIZE} px (the largest films are ~4k px; "
                        f"models read 256-1024)")
    if cfg.decoder not in DECODERS:
        raise UserError(f"--decoder {cfg.decoder!r}: must be one of {DECODERS}")
    if cfg.no_voi_range not in NO_VOI_RANGES:
        raise UserError(f"--no-voi-range {cfg.no_voi_range!r}: must be one of {NO_VOI_RANGES}")
    try:
        lo, hi = (float(v) for v in cfg.percentiles)
    except (TypeError, ValueError):
        raise UserError(f"--percentiles {cfg.percentiles!r}: give two numbers, LO HI") from None
    if not 0 <= lo < hi <= 100:  # LO above HI would invert the grey scale of every image it applies to
        raise UserError(f"--percentiles {lo:g} {hi:g}: need 0 <= LO < HI <= 100 (e.g. 0.5 99.5)")
    if not 0 <= cfg.max_drop <= 1:
        raise UserError(f"--max-drop {cfg.max_drop:g}: a share, 0..1")


def upsampled_sizes(meta: pd.DataFrame, sizes: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Sizes larger than some images' longest side -> (how many images, the set's largest side).
    Only known once the headers are read, so a warning after the run rather than a refusal before."""
    if meta.empty or not {"orig_h", "orig_w"} <= set(meta.columns):
        return {}
    longest = meta[["orig_h", "orig_w"]].max(axis=1)
    return {int(s): (int((longest < s).sum()), int(longest.max())) for s in sizes if (longest < s).any()}


def _ids_digest(ids) -> dict:
    ids = sorted(map(str, ids))
    return {"n": len(ids), "sha1": hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]}


def source_of(cfg: PreprocessConfig, index: pd.DataFrame) -> dict:
    """What an output folder holds (source.json): the data folder, the image ids of each split
    (count + digest, before --limit) and the pixel settings. Sizes are not part of it: adding a
    size to a folder is a resume."""
    from ..layout import PIXEL_KEYS

    pixels = {k: v for k, v in asdict(cfg).items() if k in PIXEL_KEYS}
    return {"data": str(Path(cfg.data).resolve()), "pixel_key": cfg.pixel_key(), "pixels": pixels,
            "ids": {split: _ids_digest(df["image_id"]) for split, df in index.groupby("split")}}


def _describe(src: dict) -> str:
    ids = ", ".join(f"{v['n']} {k}" for k, v in sorted(src.get("ids", {}).items()))
    return f"{ids or 'no'} images of {src.get('data', '?')} with pixel settings {src.get('pixels', '?')}"


def same_source(old: dict, new: dict) -> list[str]:
    """What differs between two source.json records ([] = the same set: resume)."""
    diff = []
    if old.get("data") != new["data"]:
        diff.append(f"data folder {old.get('data')} (now {new['data']})")
    if old.get("pixel_key") != new["pixel_key"]:
        diff.append(f"pixel settings {old.get('pixels')} (now {new['pixels']})")
    for split in sorted(set(old.get("ids", {})) & set(new["ids"])):
        if old["ids"][split] != new["ids"][split]:
            diff.append(f"{old['ids'][split]['n']} other {split} ids (now {new['ids'][split]['n']})")
    return diff


def check_out(out: Path, source: dict, overwrite: bool, index_ids=()) -> None:
    """Resume when OUT holds this set's output; else refuse (UserError saying what OUT holds) or,
    with ``overwrite``, remove the preprocess files there (nothing else) and start clean."""
    if not holds_output(out):
        return
    old = read_source(out)
    if old is not None:
        diff = same_source(old, source)
        held = _describe(old)
    else:  # written before source.json existed (or killed before it): judge by the image ids
        known = set(read_journal(out))
        if (out / META_CSV).is_file():
            known |= set(pd.read_csv(out / META_CSV, dtype={"image_id": str}, usecols=["image_id"])["image_id"])
        extra = sorted(known - set(index_ids))
        diff = [f"{len(extra)} images this data set does not have (e.g. {extra[:3]})"] if extra else []
        held = f"{len(known)} images and no {SOURCE_JSON}"
    if not diff:
        return
    if not overwrite:
        raise UserError(f"--out {out}: holds the preprocess output of another set ({held}; differs in "
                        f"{'; '.join(diff)}); pass --overwrite to start clean there, or another --out")
    get_logger().warning("preprocess: --overwrite: removing the output in %s (%s)", out, held)
    for name in OUTPUT_NAMES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


LOCK_FILE = ".preprocess.lock"  # held while a run writes OUT (siimcovid.atomic.folder_lock)


def check_drop(cfg: PreprocessConfig, index: pd.DataFrame, errors: list[dict], listed: int) -> None:
    """UserError when more than ``max_drop`` of the ``listed`` train images would be left out:
    a wrong CSV (a header-only study table, suffixed ids) looks like a few bad files otherwise."""
    if not listed or "train" not in cfg.splits:
        return
    kept = int((index["split"] == "train").sum())
    dropped = listed - kept
    if dropped > cfg.max_drop * listed:
        import re

        # the reason without its ids ("study 1a2b has no row ..." -> "study ... has no row ..."), to count kinds
        why = Counter(re.sub(r"\S*\d\S*", "...", e["reason"].split(";")[0])[:80] for e in errors
                      if not str(e.get("dicom", "")).startswith("test/"))
        raise UserError(f"--data {cfg.data}: {dropped} of the {listed} images {IMAGE_CSV} lists would be left out "
                        f"(more than --max-drop {cfg.max_drop:g}; most common reasons: "
                        f"{'; '.join(f'{n} x {r}' for r, n in why.most_common(3))}); run check-data and fix "
                        f"the CSVs, or raise --max-drop")


def run(cfg: PreprocessConfig) -> dict:
    """The whole stage; returns the summary also written to preprocess.json. Every check that
    can refuse (settings, the data (check-data), what OUT holds, a run already writing there, an
    OUT that cannot be written) runs before anything is written."""
    t_start = time.time()
    check_settings(cfg)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; pass a folder for the preprocess output")
    report = check_or_refuse(cfg.data, cfg.splits, keep_going=cfg.keep_going)
    try:
        index, errors = build_index(cfg.data, cfg.splits, exclude=report.bad_images if cfg.keep_going else None)
    except FileNotFoundError as exc:
        raise UserError(f"--data {cfg.data}: {exc}; pass the competition folder (the one holding "
                        f"sample_submission.csv, train/ and test/)") from None
    check_drop(cfg, index, errors, report.counts.get("train image rows", 0))
    source = source_of(cfg, index)
    check_writable(out)
    with folder_lock(out, LOCK_FILE, what="preprocess run"):
        check_out(out, source, cfg.overwrite, index["image_id"])
        try:
            return _convert(cfg, out, index, errors, source, report, t_start)
        except WriteError:
            raise
        except OSError as exc:  # the journal or a table: a full disk, a folder made read-only mid-run
            if exc.errno not in USER_ERRNOS:
                raise
            raise WriteError(f"--out {out}: cannot write {getattr(exc, 'filename', '') or 'there'} "
                             f"({describe_os_error(exc)}); finished images are journalled, a re-run resumes") from exc


def _convert(cfg: PreprocessConfig, out: Path, index: pd.DataFrame, errors: list[dict], source: dict, report,
             t_start: float) -> dict:
    """The stage once every check passed, with OUT locked."""
    log = get_logger()
    write_json(out / SOURCE_JSON, source, indent=2)
    n_workers = cfg.workers or os.cpu_count() or 1
    run_header("preprocess", dict(asdict(cfg), workers_used=n_workers), out)

    folds = load_or_make_folds(cfg.data, out, cfg.n_folds, cfg.seed) if (index["split"] == "train").any() else None
    if cfg.limit:
        index = index.iloc[: cfg.limit].reset_index(drop=True)
    records = read_journal(out)
    todo = [r for r in index.itertuples(index=False) if not is_done(records.get(r.image_id), cfg, r.split)]
    n_skipped = len(index) - len(todo)
    # journalled with these settings, but a PNG is gone or not the one written: converted again
    n_redone = sum(1 for r in todo if (rec := records.get(r.image_id)) and rec.get("pixel_key") == cfg.pixel_key()
                   and set(cfg.sizes) <= set(rec.get("sizes", [])))
    if n_redone:
        log.warning("preprocess: %d journalled image(s) have a PNG that is missing or differs from the one written "
                    "(size or fingerprint): converting them again", n_redone)
    log.info("preprocess: %d images indexed, %d already done, %d to convert with %d worker(s), sizes %s",
             len(index), n_skipped, len(todo), n_workers, cfg.sizes)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="img", desc="preprocess", disable=not cfg.progress, smoothing=0.05)
    stage_time: Counter = Counter()
    n_ok = n_retried = 0
    new_errors: list[dict] = []
    warned: list[dict] = []
    t_pool = time.time()
    with open(out / JOURNAL, "a") as journal:
        def on_result(task: dict, res: dict) -> None:
            nonlocal n_ok, n_retried
            if res["ok"]:
                rec = res["record"]
                if task.get("skip"):
                    rec["fallbacks"] = [f"crash: {task.get('first_failure')}"] + rec["fallbacks"]
                    n_retried += 1
                journal.write(json.dumps(rec) + "\n")
                journal.flush()
                records[rec["image_id"]] = rec
                for w in rec.get("warnings") or ():
                    warned.append({"dicom": task["dicom"], "image_id": task["image_id"], "warning": w})
                    log.warning("preprocess: %s: %s", task["dicom"], w)
                stage_time.update(res["timings"])
                n_ok += 1
            else:
                new_errors.append({"dicom": task["dicom"], "image_id": task["image_id"],
                                   "stage": res["stage"], "reason": res["reason"]})
                bar.set_postfix(failed=len(new_errors), refresh=False)
            bar.update(1)

        tasks = [{"path": r.path, "dicom": r.dicom, "image_id": r.image_id, "split": r.split} for r in todo]
        run_pool(tasks, cfg, n_workers, on_result)
    bar.close()
    pool_seconds = time.time() - t_pool

    meta = build_meta(index, records, folds, cfg)
    write_csv(meta, out / META_CSV)
    upsampled = upsampled_sizes(meta, cfg.sizes)
    for size, (n, largest) in upsampled.items():
        log.warning("preprocess: --size %d is larger than %s of the %d images (the largest side in the set is "
                    "%d px): those were upsampled, which adds no detail and costs disk and training time",
                    size, "every one" if n == len(meta) else n, len(meta), largest)
    errors = errors + new_errors
    write_csv(pd.DataFrame(errors, columns=ERROR_COLUMNS), out / ERRORS_CSV)
    if cfg.tfrecords:
        from .tfrecords import write_tfrecords

        write_tfrecords(out, meta, cfg.sizes)

    busy = sum(stage_time[k] for k in ("read", "decode", "voi", "resize", "write"))
    summary = {
        "config": asdict(cfg),
        "workers": n_workers,
        "counts": {
            "indexed": int(len(index)), "skipped_done": int(n_skipped), "converted": n_ok, "redone": n_redone,
            "warnings": len(warned), "check_data_errors": len(report.errors),
            "failed": len(new_errors), "index_problems": len(errors) - len(new_errors),
            "missing": sum(e["stage"] == MISSING_STAGE for e in errors),
            "retried_after_crash": n_retried, "meta_rows": int(len(meta)),
            "transfer_syntax": meta["transfer_syntax"].value_counts().to_dict(),
            "photometric": meta["photometric"].value_counts().to_dict(),
            "voi": meta["voi"].value_counts().to_dict(),
            "decoder": meta["decoder"].value_counts().to_dict(),
            "errors_by_stage": Counter(e["stage"] for e in errors),
            "upsampled_by_size": {str(k): n for k, (n, _) in upsampled.items()},
        },
        "warnings": warned,
        "timing": {
            "seconds": round(time.time() - t_start, 2),
            "convert_seconds": round(pool_seconds, 2),
            "images_per_second": round(n_ok / pool_seconds, 3) if n_ok and pool_seconds > 0 else None,
            "worker_seconds": {k: round(v, 2) for k, v in stage_time.items()},
            "decode_share": round(stage_time["decode"] / busy, 3) if busy else None,
        },
    }
    write_json(out / SUMMARY_JSON, summary, indent=2, default=str)
    log.info("preprocess: %d converted, %d skipped (done before), %d failed%s, %d index problems (%d listed but "
             "missing); meta.csv %d rows; %.1f s", n_ok, n_skipped, len(new_errors),
             f" (see {out / ERRORS_CSV})" if new_errors else "", summary["counts"]["index_problems"],
             summary["counts"]["missing"], len(meta), summary["timing"]["seconds"])
    return summary


def cli(argv: list[str]) -> int:
    """DICOM -> 8-bit images + meta.csv under OUT (exit 0 when every image converted, 1 when some
    failed or a CSV lists a file that is not there, 2 for a user error: nothing written)."""
    from dataclasses import replace

    from ..variants import add_schema_args, load, overrides_from_args

    ap = argparse.ArgumentParser(prog="python -m siimcovid preprocess", description=cli.__doc__)
    add_schema_args(ap, PreprocessConfig, stage="preprocess", exclude=("fault_injection",),
                    choices={"decoder": DECODERS, "no_voi_range": NO_VOI_RANGES},
                    aliases={"--size": "sizes", "--split": "splits", "--k": "n_folds",
                             "--no-reduce": ("reduce_j2k", False), "--fast-voi": ("exact", False)})
    a = ap.parse_args(argv)
    o = overrides_from_args(a)
    if o.get("splits") in (["all"], "all"):
        o["splits"] = ["train", "test"]
    try:
        cfg = load("preprocess", a.config, {"data": "", **o}, PreprocessConfig, default_name="default")
        # --data itself when it holds sample_submission.csv, else searched
        cfg = replace(cfg, data=str(find_data_dir(cfg.data or None)))
        summary = run(cfg)
    except (FileNotFoundError, DataFormatError, ValueError) as exc:
        print(f"preprocess: {exc}", file=sys.stderr)
        return 2
    c = summary["counts"]
    print(f"preprocess: {c['converted']} converted, {c['skipped_done']} already done, {c['failed']} failed, "
          f"{c['index_problems']} index problems ({c['missing']} listed but missing) -> {cfg.out}"
          + (f" (see {Path(cfg.out) / ERRORS_CSV})" if c["failed"] or c["missing"] else ""))
    return 1 if c["failed"] or c["missing"] else 0


def example_grid(out: str | Path, size: int | None = None, per_group: int = 1, cols: int = 4):
    """A matplotlib figure: ``per_group`` output images for each (photometric, transfer syntax),
    boxes of ``boxes_<size>`` drawn, titled with what the file was. For the notebook."""
    import cv2
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .dicom import ts_name

    meta = read_meta(out)
    size = size or min(int(c.split("_")[1]) for c in meta.columns if c.startswith("boxes_"))
    # prefer images with boxes so the frame of the boxes can be checked by eye
    meta = meta.assign(_n=meta["boxes"].map(len)).sort_values(["_n", "image_id"], ascending=[False, True])
    picks = meta.groupby(["photometric", "transfer_syntax"], sort=True).head(per_group)
    rows = max(1, -(-len(picks) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), picks.itertuples()):
        img = cv2.imread(str(image_path(out, size, r.split, r.image_id)), cv2.IMREAD_UNCHANGED)
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        for x0, y0, x1, y1 in getattr(r, f"boxes_{size}"):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1.5))
        ax.set_title(f"{ts_name(r.transfer_syntax)} MONO{r.photometric[-1]}\n{r.voi}, {r.decoder}", fontsize=8)
    fig.tight_layout()
    return fig


def parse_sizes(value) -> list[int]:
    """Sizes from a notebook parameter: 512, [512, 1024], "[512, 1024]" or "512,1024"
    (papermill's ``-p sizes "[128]"`` passes a string)."""
    if isinstance(value, str):
        text = value.strip().strip("[]()")
        return [int(v) for v in text.replace(",", " ").split()]
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    return [int(v) for v in value]
