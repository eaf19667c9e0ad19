"""The preprocess stage's resume journal (``OUT/records.jsonl``): one JSON record per finished
image, written right after its PNGs, and the check that what a resume skips is still what was
written (each PNG's size and a cheap fingerprint, recorded in the record)."""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

from ..layout import JOURNAL, image_path


FINGERPRINT_BYTES = 4096  # of each end of a PNG: its header (IHDR) and its last chunks (IEND)


def fingerprint(data) -> list[int]:
    """[length, crc32 of the first and last FINGERPRINT_BYTES]: recorded in the journal when a
    PNG is written, compared on resume. Cheap (8 KiB read per file) and catches a file zeroed,
    truncated, replaced or cut short after the run; not a full digest."""
    view = memoryview(data).cast("B")
    n = len(view)
    return [n, zlib.crc32(view[-FINGERPRINT_BYTES:], zlib.crc32(view[:FINGERPRINT_BYTES]))]


def file_fingerprint(path: Path) -> list[int] | None:
    """:func:`fingerprint` of a file on disk, None when it is not a readable regular file."""
    try:
        with open(path, "rb") as f:
            n = os.fstat(f.fileno()).st_size
            head = f.read(FINGERPRINT_BYTES)
            if n > FINGERPRINT_BYTES:
                f.seek(max(n - FINGERPRINT_BYTES, FINGERPRINT_BYTES))
                tail = f.read()
                # the same bytes fingerprint() reads when head and tail overlap
                tail = (head + tail)[-FINGERPRINT_BYTES:]
            else:
                tail = head
    except OSError:
        return None
    return [n, zlib.crc32(tail, zlib.crc32(head))]


def read_journal(out: str | Path) -> dict[str, dict]:
    """image_id -> last record; a line cut short by a killed session is ignored."""
    path = Path(out) / JOURNAL
    records: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                records[rec["image_id"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return records


def is_done(rec: dict | None, cfg, split: str) -> bool:
    """A journalled image whose PNGs are still the ones written: same pixel settings, every size,
    and each file's :func:`fingerprint` as recorded (a record from before fingerprints: a valid
    PNG header of the right size). Anything else is converted again."""
    if not rec or rec.get("pixel_key") != cfg.pixel_key() or not set(cfg.sizes) <= set(rec.get("sizes", [])):
        return False
    files = rec.get("files") or {}
    for s in cfg.sizes:
        path = image_path(cfg.out, s, split, rec["image_id"])
        if str(s) in files:
            if file_fingerprint(path) != list(files[str(s)]):
                return False
        elif not _png_header_ok(path, s):
            return False
    return True


def _png_header_ok(path: Path, size: int) -> bool:
    """The PNG signature and an IHDR of ``size`` x ``size`` (journal records without fingerprints)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return False
    return (len(head) == 24 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
            and int.from_bytes(head[16:20], "big") == size == int.from_bytes(head[20:24], "big"))
