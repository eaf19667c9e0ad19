"""The VOI lookup as a compiled loop (numba): ``out[i] = lut[src[i] - offset]``.

numpy's ``take`` first converts every 16-bit index to a 64-bit one (a 60 MB temporary for a
full-size radiograph); this loop reads the 16-bit values directly: 4-5x faster, same result.
Imported lazily by :mod:`siimcovid.dicom`, which falls back to numpy when numba is missing or
cannot compile (a plain gather: both give the same bytes)."""
from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True, boundscheck=False)
def lut_gather(src, lut, offset, out):  # pragma: no cover - compiled
    for i in range(src.size):
        out[i] = lut[src[i] - offset]
