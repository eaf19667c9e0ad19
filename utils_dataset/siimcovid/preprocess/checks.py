"""Checks a DICOM must pass before its pixels are trusted: a regular file, bit depths that can
describe a grey image, pixel data encapsulated when the transfer syntax says compressed, and
no stored values above BitsStored (a warning). :mod:`siimcovid.preprocess.dicom` runs them."""
from __future__ import annotations

import os
import stat

import numpy as np

from ..data import file_kind


class DicomError(Exception):
    """A file that cannot become an image; ``stage`` says where (read, header, decode, ...)."""

    def __init__(self, path: str | os.PathLike, stage: str, reason: str):
        self.path, self.stage, self.reason = str(path), stage, reason
        super().__init__(f"{path}: {stage}: {reason}")


def check_regular(path: str | os.PathLike) -> None:
    """DicomError unless ``path`` is a regular file: opening a FIFO blocks until a writer comes,
    and a device never ends, so such a path is refused before it is opened."""
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError as exc:
        raise DicomError(path, "read", f"cannot read file: {exc}") from exc
    if not regular:
        raise DicomError(path, "read", f"{file_kind(path)}, not a regular file: never opened")


def bits_problem(ds) -> str | None:
    """Why BitsStored / BitsAllocated / HighBit cannot describe a grey image, or None. A BitsStored
    of 0 or above BitsAllocated turns every pixel into the same value (an all-white PNG)."""
    alloc, bits = int(ds.BitsAllocated), int(ds.BitsStored)
    if alloc not in (1, 8, 16, 32):
        return f"BitsAllocated {alloc}: expected 1, 8, 16 or 32"
    if not 1 <= bits <= alloc:
        return f"BitsStored {bits} with BitsAllocated {alloc}: needs 1 <= BitsStored <= BitsAllocated"
    high = ds.get("HighBit")
    if high is not None and int(high) >= alloc:
        return f"HighBit {int(high)} with BitsAllocated {alloc}: needs HighBit < BitsAllocated"
    return None


def looks_encapsulated(pixel_data) -> bool:
    """Encapsulated pixel data starts with an item tag (FFFE,E000), the basic offset table."""
    return bool(pixel_data) and bytes(pixel_data[:4]) == b"\xfe\xff\x00\xe0"


def stored_bits_warning(stored: np.ndarray, ds) -> str | None:
    """A warning when unsigned container values use bits above BitsStored: the standard says to
    drop them (pydicom does, so does this package), which scrambles an image whose BitsStored is
    simply wrong (8 on 15-bit data). Converted as the standard says; the warning names it."""
    bits, alloc = int(ds.BitsStored), int(ds.BitsAllocated)
    if bits >= alloc or int(getattr(ds, "PixelRepresentation", 0)) == 1 or stored.dtype.kind != "u":
        return None
    top = int(stored.max(initial=0))
    if top < (1 << bits):
        return None
    return (f"pixel values up to {top} need {top.bit_length()} bits but BitsStored is {bits} (BitsAllocated "
            f"{alloc}): the bits above BitsStored were dropped as the standard says, so the picture is likely "
            f"scrambled; the file's BitsStored is probably wrong")
