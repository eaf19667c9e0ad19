"""The VOI lookup as a compiled loop (numba): ``out[i] = lut[src[i] - offset]``.

numpy's ``take`` first converts every 16-bit index to a 64-bit one (a 60 MB temporary for a
full-size radiograph); this loop reads the 16-bit values directly: 4-5x faster, same bytes.
Compiled when this module is imported (numba's on-disk cache makes that quick after the first
time); the preprocess forkserver imports it once, so its workers inherit the machine code.
``lut_gather`` is None when numba is missing or cannot compile: :mod:`siimcovid.preprocess.dicom` then
uses numpy's take (the same result)."""
from __future__ import annotations


def _compile():
    import numba
    from numba import types

    sigs = []
    for t in (types.uint16, types.int16, types.uint8):
        for readonly in (False, True):  # np.frombuffer on the file's bytes gives a read-only array
            sigs.append(types.void(types.Array(t, 1, "C", readonly=readonly), types.Array(types.uint8, 1, "C"),
                                   types.int64, types.Array(types.uint8, 1, "C")))

    @numba.njit(sigs, cache=True, nogil=True, boundscheck=False)
    def lut_gather(src, lut, offset, out):  # pragma: no cover - compiled
        for i in range(src.size):
            out[i] = lut[src[i] - offset]

    return lut_gather


try:
    lut_gather = _compile()
except Exception:  # numba absent, or no usable cache / compiler on this platform
    lut_gather = None
