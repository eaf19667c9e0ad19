"""The per-pixel part of :mod:`siimcovid.preprocess.dicom`: the VOI table applied to every pixel, and
reused scratch buffers. Kept apart so the compiled loop (numba, :mod:`siimcovid.preprocess._lutjit`) is
imported only when an image is converted."""
from __future__ import annotations

import threading

import numpy as np

_LUT_KERNEL: list = []  # [compiled gather or None], filled on first use


def _lut_kernel():
    if not _LUT_KERNEL:
        try:
            from ._lutjit import lut_gather
        except Exception:  # numba missing or unable to set up: numpy's take does the same
            lut_gather = None
        _LUT_KERNEL.append(lut_gather)
    return _LUT_KERNEL[0]


def apply_lut(stored: np.ndarray, lut: np.ndarray, offset: int, out: np.ndarray | None = None) -> np.ndarray:
    """``lut[stored - offset]`` as uint8 (into ``out`` when given and the compiled loop runs)."""
    dt = stored.dtype
    kernel = _lut_kernel() if dt.kind in "ui" and dt.itemsize <= 2 else None
    # the compiled loop does not check bounds: only for a table over the whole container range
    if kernel is not None and offset == int(np.iinfo(dt).min) and len(lut) >= int(np.iinfo(dt).max) - offset + 1:
        src = np.ascontiguousarray(stored)
        if out is None or out.shape != stored.shape or out.dtype != np.uint8:
            out = np.empty(stored.shape, dtype=np.uint8)
        try:
            kernel(src.reshape(-1), np.ascontiguousarray(lut, dtype=np.uint8), int(offset), out.reshape(-1))
            return out
        except TypeError:  # an input type outside the compiled signatures: numpy below, same bytes
            pass
    if offset == 0 and dt.kind == "u":
        return np.take(lut, stored)  # one pass over uint16 indices, no int64 temporary
    return np.take(lut, stored.astype(np.int64) - offset, mode="clip")  # clip: values beyond BitsStored


def warm_up() -> None:
    """Load the compiled lookup loop (numba compiles or reads its cache on import), so a
    worker's first image is timed like the others."""
    _lut_kernel()


_SCRATCH = threading.local()


def scratch(name: str, nbytes: int) -> memoryview:
    """A reused buffer of at least ``nbytes`` (one per name and thread): a fresh 15 MB array per
    image costs page faults on first touch; valid until the next call with the same name."""
    bufs = _SCRATCH.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or len(buf) < nbytes:
        buf = bufs[name] = bytearray(max(nbytes, 1))
    return memoryview(buf)[:nbytes]
