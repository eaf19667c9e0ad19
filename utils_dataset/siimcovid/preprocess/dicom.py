"""One DICOM -> display-ready 8-bit image: read, check, decode, modality LUT, VOI, invert.

Two paths that must agree:

* :func:`convert` is the fast path. Little-endian uncompressed and RLE files are read in place
  (:func:`read_fast`: header parsed with the pixel data left in the file, pixels viewed in a
  reused buffer or decoded by pylibjpeg-rle directly); the other syntaxes go through an
  explicit decoder chain (dicomsdl for the compressed syntaxes, Pillow/OpenJPEG at reduced
  resolution for JPEG 2000 when the output is small, pydicom with a fixed plugin order as the
  safe fallback; never gdcm first). Modality LUT + VOI are applied as one lookup table built
  by running pydicom's own functions over every possible stored value (exactly the
  full-array result, far cheaper; applied by a compiled loop, :mod:`siimcovid.preprocess.lookup`).
* :func:`reference_convert` is the slow, obvious path (pydicom ``pixel_array``, full-array
  ``apply_modality_lut`` + ``apply_voi_lut``); the tests check the fast path against it
  pixel for pixel.

The grey range mapped to 0..255 never depends on the image's resolution: the VOI LUT's own
output range, the window's output range, or, without either, robust percentiles of the
values (a histogram), so a reduced-resolution decode yields the same levels.

dicomsdl can crash the process on bad files: call :func:`convert` with it only in a child
process (``siimcovid.preprocess.convert`` does) and pre-check the file first (:func:`read_dataset`).
"""
from __future__ import annotations

import io
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..boxes import Resize
from .checks import DicomError, bits_problem, check_regular, looks_encapsulated, stored_bits_warning
from .lookup import apply_lut, scratch, warm_up  # noqa: F401  (warm_up: for the workers)

# Short names for the transfer syntaxes the competition (and the synthetic set) contains.
TS_NAMES: dict[str, str] = {
    "1.2.840.10008.1.2": "implicit",
    "1.2.840.10008.1.2.1": "explicit",
    "1.2.840.10008.1.2.2": "explicit_big",
    "1.2.840.10008.1.2.5": "rle",
    "1.2.840.10008.1.2.4.57": "jpeg_lossless_p14",
    "1.2.840.10008.1.2.4.70": "jpeg_lossless",
    "1.2.840.10008.1.2.4.80": "jpegls",
    "1.2.840.10008.1.2.4.81": "jpegls_near",
    "1.2.840.10008.1.2.4.90": "j2k",
    "1.2.840.10008.1.2.4.91": "j2k_lossy",
    "1.2.840.10008.1.2.4.50": "jpeg_baseline",
    "1.2.840.10008.1.2.4.51": "jpeg_extended",
}
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}  # read straight from the file (read_fast)
RLE = "1.2.840.10008.1.2.5"
J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
ENCAPSULATED = set(TS_NAMES) - UNCOMPRESSED  # pixel data in items (fragments); deflate is not among them

# pydicom plugin order for the safe path. pydicom's own default tries gdcm first when it is
# installed, the slowest J2K path measured; here gdcm is the last resort.
PYDICOM_PLUGINS: tuple[str, ...] = ("pylibjpeg", "pyjpegls", "pydicom", "pillow", "gdcm")

DECODERS: tuple[str, ...] = ("auto", "dicomsdl", "pydicom", "pillow")
NO_VOI_RANGES: tuple[str, ...] = ("percentile", "bits", "minmax")


@dataclass
class DisplayConfig:
    """How stored values become 8-bit grey levels (see module doc)."""

    no_voi_range: str = "percentile"  # used when the file has neither VOI LUT nor window
    percentiles: tuple[float, float] = (0.5, 99.5)
    prefer_lut: bool = True  # VOI LUT Sequence over window when both are present (pydicom's rule)
    # True (default): the lookup table on every pixel, then resize: bit-exact with pydicom's
    # full-array route (reference_convert). False ("fast VOI"): when shrinking, resize the stored
    # values first and look up the small image (and, above 4 M pixels, take the percentile
    # histogram from every 2nd row/column): about 2x less work per uncompressed image. Where a
    # window clips, mean(clip(x)) != clip(mean(x)): measured on full-size synthetic radiographs at
    # 1024 px the mean difference is 0.08 grey levels (max 5), but a narrow window over sharp edges
    # can differ by tens of levels on a few % of pixels. See README, "Preprocess speed".
    exact: bool = True


@dataclass
class Converted:
    """What :func:`convert` returns: one uint8 image per output size plus what was learnt."""

    images: dict[int, np.ndarray]
    orig_h: int
    orig_w: int
    photometric: str
    transfer_syntax: str
    bits_stored: int
    voi: str  # lut | window | percentile | bits | minmax
    decoder: str
    reduce: int  # JPEG 2000 resolution levels skipped (0 = full resolution)
    timings: dict[str, float] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)  # "decoder: reason" of decoders that failed
    warnings: list[str] = field(default_factory=list)  # converted, but something in the file looks wrong


# ---------------------------------------------------------------------------------------
# Reading and checking
# ---------------------------------------------------------------------------------------


def read_dataset(path: str | os.PathLike, raw: bytes | None = None):
    """Parse ``path`` with pydicom and check that it can hold a grey-scale image.

    Returns ``(dataset, raw_bytes)``. Raises :class:`DicomError` with a reason a person can act
    on for an empty, non-DICOM, truncated or pixel-less file. Safe for any input (pure Python).
    """
    import warnings

    import pydicom
    from pydicom.errors import InvalidDicomError

    if raw is None:
        check_regular(path)
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise DicomError(path, "read", f"cannot read file: {exc}") from exc
    if len(raw) == 0:
        raise DicomError(path, "read", "empty file (0 bytes)")
    if len(raw) < 132 or raw[128:132] != b"DICM":
        raise DicomError(path, "read", f"not a DICOM file (no 'DICM' marker at byte 128; {len(raw)} bytes)")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(io.BytesIO(raw))
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, struct.error) as exc:
        raise DicomError(path, "read", f"unreadable DICOM ({type(exc).__name__}: {exc}); truncated or corrupt?") from exc
    warned = "; ".join(str(w.message) for w in caught)
    if "PixelData" not in ds:
        if "end of file" in warned.lower():
            raise DicomError(path, "read", f"truncated: the file ends inside the pixel data ({warned})")
        raise DicomError(path, "header", "no Pixel Data element (7FE0,0010)" + (f" ({warned})" if warned else ""))
    missing = [k for k in ("Rows", "Columns", "BitsAllocated", "BitsStored", "PhotometricInterpretation") if k not in ds]
    if missing:
        raise DicomError(path, "header", f"missing image attributes {missing}")
    photometric = str(ds.PhotometricInterpretation)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(path, "header", f"photometric interpretation {photometric!r} is not grey-scale")
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise DicomError(path, "header", f"SamplesPerPixel={ds.SamplesPerPixel}, expected 1")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows <= 0 or cols <= 0:
        raise DicomError(path, "header", f"image size {rows} x {cols}")
    if (why := bits_problem(ds)):
        raise DicomError(path, "header", why)
    ts = transfer_syntax(ds)
    nbytes = len(ds.PixelData) if ds.PixelData is not None else 0
    if ts in ENCAPSULATED and not looks_encapsulated(ds.PixelData):
        raw_size = rows * cols * int(ds.BitsAllocated) // 8 * int(getattr(ds, "NumberOfFrames", 1) or 1)
        native = f"; {nbytes} bytes is exactly {rows} x {cols} x {ds.BitsAllocated} bits" if nbytes in (
            raw_size, raw_size + 1) else ""
        raise DicomError(path, "header", f"transfer syntax {ts_name(ts)} ({ts}) says compressed, but the pixel data "
                                         f"is not encapsulated (no item tags){native}: raw pixels under a compressed "
                                         f"syntax; the file's TransferSyntaxUID is wrong")
    if ts in UNCOMPRESSED:
        expected = rows * cols * int(ds.BitsAllocated) // 8 * int(getattr(ds, "NumberOfFrames", 1) or 1)
        if nbytes < expected:
            raise DicomError(path, "header", f"truncated: pixel data holds {nbytes} bytes, {rows} x {cols} "
                                             f"x {ds.BitsAllocated} bits needs {expected}")
    else:
        if nbytes < 16:
            raise DicomError(path, "header", f"truncated: compressed pixel data holds only {nbytes} bytes")
        try:
            first_frame(ds)
        except Exception as exc:
            raise DicomError(path, "header", f"truncated or corrupt encapsulated pixel data ({exc})") from exc
    return ds, raw


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut to ``limit`` characters (for CSV / log rows)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_frame(ds) -> bytes:
    """The first compressed frame's bytes (all its fragments joined)."""
    from pydicom.encaps import generate_frames

    nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
    frame = next(generate_frames(ds.PixelData, number_of_frames=nframes))
    if not frame:
        raise ValueError("empty first frame")
    return frame


def transfer_syntax(ds) -> str:
    """The file's Transfer Syntax UID ("" when the file meta lacks it)."""
    return str(ds.file_meta.get("TransferSyntaxUID", ""))


def ts_name(uid: str) -> str:
    return TS_NAMES.get(uid, uid)


# ---------------------------------------------------------------------------------------
# Display mapping (modality LUT + VOI as one table)
# ---------------------------------------------------------------------------------------


def stored_range(ds) -> tuple[int, int]:
    bits = int(ds.BitsStored)
    if int(getattr(ds, "PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _voi_kind(ds, prefer_lut: bool) -> str:
    has_lut = bool(ds.get("VOILUTSequence")) and None not in (
        ds.VOILUTSequence[0].get("LUTDescriptor"), ds.VOILUTSequence[0].get("LUTData"))
    has_win = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if has_lut and (prefer_lut or not has_win):
        return "lut"
    if has_win:
        return "window"
    return "none"


def _apply_voi(values: np.ndarray, ds, kind: str) -> np.ndarray:
    from pydicom.pixels import apply_voi, apply_windowing

    if kind == "lut":
        return apply_voi(values, ds)
    if kind == "window":
        return apply_windowing(values, ds)
    return values


def voi_output_range(ds, kind: str) -> tuple[float, float]:
    """The grey range the VOI step can output, independent of the image content.

    Window: pydicom's y_min / y_max, read back by windowing two extreme values. VOI LUT: the
    min / max of the LUT data (descriptors often claim 16 bits for a 12-bit table)."""
    if kind == "window":
        y = _apply_voi(np.array([-1e30, 1e30]), ds, "window")
        return float(min(y)), float(max(y))
    item = ds.VOILUTSequence[0]
    n, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
    y = _apply_voi(np.arange(first, first + n, dtype=np.int64), ds, "lut")
    return float(y.min()), float(y.max())


def _weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Inverted-CDF percentiles (numpy's method="inverted_cdf") of values with integer counts."""
    keep = weights > 0
    v, w = values[keep], weights[keep]
    order = np.argsort(v, kind="stable")
    v, cw = v[order], np.cumsum(w[order])
    total = cw[-1]
    out = []
    for q in qs:
        # smallest value whose cumulative count reaches q% of the total
        k = np.searchsorted(cw, total * q / 100.0, side="left")
        out.append(float(v[min(k, len(v) - 1)]))
    return out


def to_uint8(values: np.ndarray, lo: float, hi: float, invert: bool) -> np.ndarray:
    """Linear map [lo, hi] -> [0, 255] (clipped, rounded), inverted for MONOCHROME1."""
    span = hi - lo
    if span == 0:
        x = np.zeros(values.shape, dtype=np.float64)
    else:
        x = np.clip((np.asarray(values, dtype=np.float64) - lo) / span, 0.0, 1.0)
    if invert:
        x = 1.0 - x
    return np.rint(x * 255.0).astype(np.uint8)


def display_range(ds, modality_values: np.ndarray, counts: np.ndarray | None, cfg: DisplayConfig,
                  observed: tuple[float, float] | None = None) -> tuple[str, float, float]:
    """(kind, lo, hi) of the VOI output mapped to 0..255.

    ``modality_values`` are the modality-LUT outputs of the stored values whose frequencies
    are ``counts`` (a histogram); ``observed`` the min / max for ``minmax``."""
    kind = _voi_kind(ds, cfg.prefer_lut)
    if kind != "none":
        lo, hi = voi_output_range(ds, kind)
        return kind, lo, hi
    mode = cfg.no_voi_range
    if mode == "bits":
        from pydicom.pixels import apply_modality_lut

        ends = apply_modality_lut(np.array(stored_range(ds), dtype=np.int64), ds)
        return "bits", float(np.min(ends)), float(np.max(ends))
    if mode == "minmax":
        if observed is None:
            raise ValueError("no_voi_range 'minmax' needs the observed min / max")
        return "minmax", float(observed[0]), float(observed[1])
    if mode == "percentile":
        if counts is None:
            raise ValueError("no_voi_range 'percentile' needs the stored-value histogram")
        lo, hi = _weighted_percentiles(np.asarray(modality_values, dtype=np.float64), counts, cfg.percentiles)
        return "percentile", lo, hi
    raise ValueError(f"no_voi_range must be one of {NO_VOI_RANGES}, got {mode!r}")


def stored_values(container: np.ndarray, ds) -> np.ndarray:
    """What pydicom's ``pixel_array`` makes of each container value (int64 in, int64 out): the
    bits above BitsStored dropped, sign-extended for signed data (its "unused bits"
    correction for uncompressed and RLE data), then clipped to the stored range."""
    bits, alloc = int(ds.BitsStored), int(ds.BitsAllocated)
    lo_s, hi_s = stored_range(ds)
    v = np.asarray(container, dtype=np.int64)
    if bits < alloc:
        v = v & ((1 << bits) - 1)
        if int(getattr(ds, "PixelRepresentation", 0)) == 1:
            sign = 1 << (bits - 1)
            v = (v ^ sign) - sign
    return np.clip(v, lo_s, hi_s)


def build_lut(ds, stored: np.ndarray, cfg: DisplayConfig) -> tuple[np.ndarray, int, str]:
    """A uint8 table over the stored-value domain: ``out = lut[stored - offset]``.

    Built by applying pydicom's ``apply_modality_lut`` and VOI functions to every value the
    container can hold, read as pydicom reads it (:func:`stored_values`), so it equals the
    full-array result exactly and the image itself needs no masking pass."""
    from pydicom.pixels import apply_modality_lut

    lo_s, hi_s = stored_range(ds)
    # Cover the whole container range so any bit pattern indexes safely.
    if stored.dtype.kind == "u":
        dom_lo, dom_hi = 0, max(hi_s, int(np.iinfo(stored.dtype).max) if stored.dtype.itemsize <= 2 else hi_s)
    else:
        dom_lo = min(lo_s, int(np.iinfo(stored.dtype).min) if stored.dtype.itemsize <= 2 else lo_s)
        dom_hi = max(hi_s, int(np.iinfo(stored.dtype).max) if stored.dtype.itemsize <= 2 else hi_s)
    domain = stored_values(np.arange(dom_lo, dom_hi + 1, dtype=np.int64), ds)
    core = np.arange(lo_s, hi_s + 1, dtype=np.int64)
    modality_core = apply_modality_lut(core, ds)
    kind = _voi_kind(ds, cfg.prefer_lut)
    counts = observed = None
    if kind == "none" and cfg.no_voi_range in ("percentile", "minmax"):
        # A quarter of a full-size radiograph's pixels gives the same percentiles to well under a
        # grey level; small images are counted whole.
        big = stored.ndim == 2 and stored.size > 2**22
        sample = stored[::2, ::2] if big and not cfg.exact and cfg.no_voi_range == "percentile" else stored
        counts = stored_histogram(np.ascontiguousarray(sample), ds)
        present = np.flatnonzero(counts)
        observed = (float(np.min(modality_core[present])), float(np.max(modality_core[present])))
    kind, lo, hi = display_range(ds, modality_core, counts, cfg, observed)
    values = _apply_voi(apply_modality_lut(domain, ds), ds, kind if kind in ("lut", "window") else "none")
    lut = to_uint8(values, lo, hi, invert=str(ds.PhotometricInterpretation) == "MONOCHROME1")
    return lut, dom_lo, kind


def stored_histogram(stored: np.ndarray, ds) -> np.ndarray:
    """Counts of each stored value lo..hi of :func:`stored_range`, each pixel read as pydicom
    reads it (:func:`stored_values`)."""
    lo, hi = stored_range(ds)
    if stored.dtype in (np.uint8, np.uint16, np.int16) and stored.size < 2**24:
        import cv2

        # calcHist over the container's bit patterns (~8x faster than bincount; float32 counts
        # are exact below 2**24), then each pattern's count moved to the value it stands for
        top = 256 if stored.dtype == np.uint8 else 65536
        as_u = stored.view(np.uint8 if top == 256 else np.uint16)
        h = cv2.calcHist([np.ascontiguousarray(as_u)], [0], None, [top], [0, top]).ravel()
        patterns = np.arange(top, dtype=np.uint8 if top == 256 else np.uint16).view(stored.dtype)
        idx = stored_values(patterns, ds) - lo
        return np.rint(np.bincount(idx, weights=h, minlength=hi - lo + 1)).astype(np.int64)
    return histogram(stored_values(stored, ds), lo, hi)


def histogram(stored: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Counts of each value lo..hi (values outside are counted at the nearest end)."""
    n = hi - lo + 1
    idx = np.clip(stored.ravel().astype(np.int64) - lo, 0, n - 1)
    return np.bincount(idx, minlength=n)


# ---------------------------------------------------------------------------------------
# Decoders
# ---------------------------------------------------------------------------------------


def j2k_header(frame: bytes) -> dict | None:
    """Precision, signedness and wavelet levels from a raw J2K codestream's SIZ and COD
    markers (None for a JP2-wrapped or unexpected stream)."""
    if frame[:4] != b"\xff\x4f\xff\x51":
        return None
    info: dict = {}
    pos = 2
    n = len(frame)
    while pos + 4 <= n:
        marker = frame[pos:pos + 2]
        length = int.from_bytes(frame[pos + 2:pos + 4], "big")
        if marker == b"\xff\x51" and pos + 42 <= n:
            ssiz = frame[pos + 40]
            info["signed"] = bool(ssiz & 0x80)
            info["precision"] = (ssiz & 0x7F) + 1
            info["components"] = int.from_bytes(frame[pos + 38:pos + 40], "big")
        elif marker == b"\xff\x52" and pos + 10 <= n:
            info["levels"] = frame[pos + 9]
        elif marker in (b"\xff\x90", b"\xff\x93"):  # SOT / SOD: main header over
            break
        pos += 2 + length
    return info if {"precision", "levels"} <= info.keys() else None


def reduced_shape(orig_h: int, orig_w: int, reduce: int) -> tuple[int, int]:
    """(h, w) of a JPEG 2000 image decoded with ``reduce`` resolution levels skipped (ceil halving)."""
    return -(-orig_h // 2**reduce), -(-orig_w // 2**reduce)


def choose_reduce(orig_h: int, orig_w: int, out_hw: tuple[int, int], levels: int) -> int:
    """Largest number of halvings that keeps the decoded image at least ``out_hw``."""
    r = 0
    while r < levels:
        nh, nw = reduced_shape(orig_h, orig_w, r + 1)
        if nh < out_hw[0] or nw < out_hw[1]:
            break
        r += 1
    return r


def decode_pillow_j2k(frame: bytes, reduce: int) -> np.ndarray:
    """JPEG 2000 via Pillow's OpenJPEG binding, skipping ``reduce`` resolution levels."""
    from PIL import Image

    info = j2k_header(frame)
    if info is None or info["signed"] or info["components"] != 1 or not 9 <= info["precision"] <= 16:
        raise ValueError(f"Pillow path needs an unsigned 9-16 bit grey codestream, got {info}")
    im = Image.open(io.BytesIO(frame))
    im.reduce = int(reduce)
    im.load()
    if im.mode != "I;16":
        raise ValueError(f"Pillow decoded mode {im.mode}, expected I;16")
    arr = np.asarray(im)
    # Pillow scales samples up to 16 bits (a left shift); undo it to get stored values.
    shift = 16 - info["precision"]
    return (arr >> shift) if shift else arr


def decode_dicomsdl(raw: bytes) -> np.ndarray:
    """Stored values via dicomsdl. May crash the process on a bad file: child processes only."""
    import dicomsdl

    dset = dicomsdl.open_memory(raw)
    arr = dset.pixelData(storedvalue=True)
    if arr is None:
        raise ValueError("dicomsdl returned no pixels")
    return np.asarray(arr)


def decode_pydicom(ds) -> tuple[np.ndarray, str]:
    """Stored values via pydicom with an explicit plugin order (gdcm last)."""
    from pydicom.pixels import get_decoder

    uid = transfer_syntax(ds)
    if uid in UNCOMPRESSED:
        arr = ds.pixel_array
        return (arr if arr.ndim == 2 else arr[0]), "pydicom-native"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise RuntimeError(f"no pydicom decoder for transfer syntax {uid} ({ts_name(uid)})") from exc
    available = [p for p in PYDICOM_PLUGINS if p in decoder.available_plugins]
    if not available:
        raise RuntimeError(f"no installed codec decodes {ts_name(uid)} ({uid}); missing: "
                           f"{'; '.join(decoder.missing_dependencies) or 'no plugins known'}")
    errors = []
    for plugin in available:
        try:
            arr, _meta = decoder.as_array(ds, index=0, decoding_plugin=plugin)
            return arr, f"pydicom-{plugin}"
        except BaseException as exc:  # try the next plugin (Rust codecs panic with BaseException)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            errors.append(f"{plugin}: {type(exc).__name__}: {one_line(exc)}")
    raise RuntimeError("; ".join(errors))


_DEFER_BYTES = 256 * 1024  # larger values (the pixel data) are left in the file; a VOI LUT is at most 128 kB


def read_fast(path: str | os.PathLike, skip: Sequence[str] = ()) -> dict | str | None:
    """The stored image of a little-endian uncompressed or an RLE file without copying it around.

    The header is parsed with the pixel data left in the file; uncompressed pixels are read
    into a reused buffer and viewed in place (``np.frombuffer``, no decode, no unused-bit pass:
    :func:`build_lut` reads the bit patterns as pydicom does); an RLE frame goes to
    pylibjpeg-rle's decoder directly. Returns ``{"ds", "stored", "decoder", "read", "decode"}``
    (``stored`` is valid until the next call in this thread), None for a file this route does
    not take (another syntax, an unusual layout, or a bad file: the general route words its
    error), or a reason string when decoding failed."""
    import warnings

    import pydicom

    t0 = time.perf_counter()
    try:
        check_regular(path)
    except DicomError:
        return None  # the general route words it
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 132 or f.read(132)[128:132] != b"DICM":
                return None
            f.seek(0)
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                ds = pydicom.dcmread(f, defer_size=_DEFER_BYTES)
            uid = transfer_syntax(ds)
            name = "native" if uid in NATIVE_LE else "rle" if uid == RLE else None
            if name is None or name in skip or "PixelData" not in ds:
                return None
            rows, cols, alloc = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
            if (str(ds.PhotometricInterpretation) not in ("MONOCHROME1", "MONOCHROME2") or rows <= 0 or cols <= 0
                    or int(getattr(ds, "SamplesPerPixel", 1)) != 1 or alloc not in (8, 16) or bits_problem(ds)):
                return None
            signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
            dtype = np.dtype(("<i" if signed else "<u") + str(alloc // 8))
            n = rows * cols
            elem = ds.get_item(0x7FE00010, keep_deferred=True)
            if name == "native":
                nbytes = n * dtype.itemsize
                if elem.value is not None:  # small enough to have been read with the header
                    buf = elem.value
                    if len(buf) < nbytes:
                        return None
                else:
                    if elem.value_tell + nbytes > size:
                        return None  # truncated: read_dataset words it
                    f.seek(elem.value_tell)
                    buf = scratch("pixels", nbytes)
                    if f.readinto(buf) != nbytes:
                        return None
                t_read = time.perf_counter()
                stored = np.frombuffer(buf, dtype=dtype, count=n).reshape(rows, cols)
            else:
                from pydicom.encaps import generate_frames

                nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
                if elem.value is not None:
                    frame = next(generate_frames(elem.value, number_of_frames=nframes))
                else:
                    f.seek(elem.value_tell)
                    frame = next(generate_frames(f, number_of_frames=nframes))
                t_read = time.perf_counter()
                try:
                    from rle.rle import decode_frame

                    stored = np.frombuffer(decode_frame(bytes(frame), n, alloc, "<"), dtype=dtype,
                                           count=n).reshape(rows, cols)
                except BaseException as exc:  # pylibjpeg-rle panics with a bare BaseException
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    return f"rle: {type(exc).__name__}: {one_line(exc)}"
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return None
    return {"ds": ds, "stored": stored, "decoder": name, "read": t_read - t0, "decode": time.perf_counter() - t_read}


def decoder_chain(uid: str, decoder: str, reduce: int) -> list[str]:
    """Decoders to try, in order, for a transfer syntax. ``decoder`` "auto" picks the fastest
    measured path with pydicom as the fallback."""
    if decoder == "pydicom":
        return ["pydicom"]
    if decoder == "dicomsdl":
        return ["dicomsdl", "pydicom"]
    if decoder == "pillow":
        return ["pillow", "pydicom"] if uid in J2K else ["pydicom"]
    if decoder != "auto":
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if uid in NATIVE_LE:
        return ["native", "pydicom"]
    if uid == RLE:
        return ["rle", "dicomsdl", "pydicom"]
    if uid in UNCOMPRESSED:
        return ["pydicom"]  # big endian: pydicom swaps the bytes
    if uid in J2K:
        return (["pillow"] if reduce > 0 else []) + ["dicomsdl", "pydicom"]
    return ["dicomsdl", "pydicom"]


# ---------------------------------------------------------------------------------------
# Resizing and the two conversion paths
# ---------------------------------------------------------------------------------------


def content_shape(orig_h: int, orig_w: int, size: int, keep_aspect: bool) -> tuple[int, int]:
    """(h, w) of the picture inside a ``size x size`` output (the plan uses the ORIGINAL size so
    boxes scale with :class:`siimcovid.boxes.Resize` exactly as the pixels do)."""
    ch, cw = Resize.plan(orig_h, orig_w, size, keep_aspect).content_hw
    return max(ch, 1), max(cw, 1)


def resize_content(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``img`` (uint8 or stored uint16 values) -> ``shape``: area averaging when shrinking."""
    import cv2

    ch, cw = shape
    if img.shape == (ch, cw):
        return img
    interp = cv2.INTER_AREA if (img.shape[0] >= ch and img.shape[1] >= cw) else cv2.INTER_LINEAR
    return cv2.resize(img, (cw, ch), interpolation=interp)


def letterbox(content: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``size x size`` with ``content`` top-left and black padding."""
    if content.shape == (size, size):
        return np.ascontiguousarray(content)
    out = np.zeros((size, size), dtype=np.uint8)
    out[: content.shape[0], : content.shape[1]] = content
    return out


def resize_to(img: np.ndarray, orig_h: int, orig_w: int, size: int, keep_aspect: bool) -> np.ndarray:
    """uint8 ``size x size``; letterboxed (top-left, black padding) when ``keep_aspect``.
    ``img`` may be smaller than orig (reduced decode)."""
    return letterbox(resize_content(img, content_shape(orig_h, orig_w, size, keep_aspect)), size)


def render_sizes(stored: np.ndarray, lut: np.ndarray, offset: int, orig_h: int, orig_w: int,
                 sizes: Sequence[int], keep_aspect: bool, exact: bool,
                 timings: dict[str, float] | None = None) -> dict[int, np.ndarray]:
    """The stored image -> one uint8 output per size. Shrinking outputs of the fast route resize
    the stored values and look up the small image (7.7 M -> 1 M lookups at 1024 px); the rest
    (exact, or an output larger than the decoded image) look up every pixel first, into a
    reused buffer. ``timings`` (if given) gets "lut" and "resize" seconds added."""
    out: dict[int, np.ndarray] = {}
    full = None
    t_lut = t_res = 0.0
    for s in sizes:
        shape = content_shape(orig_h, orig_w, int(s), keep_aspect)
        shrink = stored.shape[0] >= shape[0] and stored.shape[1] >= shape[1]
        if not exact and shrink and stored.dtype in (np.uint16, np.uint8):
            t0 = time.perf_counter()
            small = resize_content(stored, shape)
            t1 = time.perf_counter()
            out[int(s)] = letterbox(apply_lut(small, lut, offset), int(s))
            t_res, t_lut = t_res + t1 - t0, t_lut + time.perf_counter() - t1
            continue
        if full is None:
            t0 = time.perf_counter()
            buf = np.frombuffer(scratch("lut", stored.size), dtype=np.uint8).reshape(stored.shape)
            full = apply_lut(stored, lut, offset, out=buf)
            t_lut += time.perf_counter() - t0
        t0 = time.perf_counter()
        img = letterbox(resize_content(full, shape), int(s))
        if np.may_share_memory(img, full):  # no resize needed: do not hand out the reused buffer
            img = img.copy()
        out[int(s)] = img
        t_res += time.perf_counter() - t0
    if timings is not None:
        timings["lut"] = timings.get("lut", 0.0) + t_lut
        timings["resize"] = timings.get("resize", 0.0) + t_res
    return out


def convert(
    path: str | os.PathLike,
    sizes: Sequence[int],
    *,
    keep_aspect: bool = False,
    decoder: str = "auto",
    display: DisplayConfig | None = None,
    reduce_j2k: bool = True,
    skip: Sequence[str] = (),
) -> Converted:
    """Decode one DICOM and return uint8 images at each size (fast path, see module doc).

    ``skip``: decoders not to try (the pool passes "dicomsdl" after it crashed a worker).
    Raises :class:`DicomError` when the file is bad or every decoder fails.
    ``Converted.timings``: read, decode, voi (building the table), lut (applying it), resize.
    """
    cfg = display or DisplayConfig()
    fallbacks: list[str] = []
    fast = read_fast(path, skip) if decoder == "auto" else None
    if isinstance(fast, dict):
        ds, stored, used, reduce = fast["ds"], fast["stored"], fast["decoder"], 0
        uid = transfer_syntax(ds)
        orig_h, orig_w = int(ds.Rows), int(ds.Columns)
        timings = {"read": fast["read"], "decode": fast["decode"]}
    else:
        if isinstance(fast, str):
            fallbacks.append(fast)
            skip = (*skip, "native", "rle")
        ds, uid, orig_h, orig_w, stored, used, reduce, timings = _decode_general(
            path, sizes, keep_aspect, decoder, reduce_j2k, skip, fallbacks)
    t0 = time.perf_counter()
    lut, offset, kind = build_lut(ds, stored, cfg)
    timings["voi"] = time.perf_counter() - t0
    images = render_sizes(stored, lut, offset, orig_h, orig_w, sizes, keep_aspect, cfg.exact, timings)
    warning = stored_bits_warning(stored, ds)
    return Converted(
        images=images, orig_h=orig_h, orig_w=orig_w, photometric=str(ds.PhotometricInterpretation),
        transfer_syntax=uid, bits_stored=int(ds.BitsStored), voi=kind, decoder=used, reduce=reduce,
        timings=timings, fallbacks=fallbacks, warnings=[warning] if warning else [],
    )


def _decode_general(path, sizes, keep_aspect, decoder, reduce_j2k, skip, fallbacks):
    """Every syntax: the whole file parsed and checked (:func:`read_dataset`), then the decoder
    chain. Returns (ds, uid, orig_h, orig_w, stored, decoder used, reduce, timings)."""
    t0 = time.perf_counter()
    ds, raw = read_dataset(path)
    t_read = time.perf_counter()
    uid = transfer_syntax(ds)
    orig_h, orig_w = int(ds.Rows), int(ds.Columns)
    reduce = 0
    if reduce_j2k and uid in J2K and sizes:
        info = j2k_header(first_frame(ds))
        if info is not None:
            biggest = max(Resize.plan(orig_h, orig_w, s, keep_aspect).content_hw for s in sizes)
            reduce = choose_reduce(orig_h, orig_w, biggest, int(info["levels"]))
    chain = [d for d in decoder_chain(uid, decoder, reduce) if d not in skip] or ["pydicom"]
    stored = None
    used = ""
    for name in chain:
        try:
            if name == "pillow":
                stored, used = decode_pillow_j2k(first_frame(ds), reduce), f"pillow-r{reduce}"
            elif name == "dicomsdl":
                stored, used = decode_dicomsdl(raw), "dicomsdl"
            elif name in ("native", "rle"):
                continue  # read_fast's routes; here only when it declined the file
            else:
                stored, used = decode_pydicom(ds)
        except BaseException as exc:  # Rust codecs panic with a BaseException (pyo3 PanicException)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            fallbacks.append(f"{name}: {type(exc).__name__}: {one_line(exc)}")
            continue
        if name != "pillow":
            reduce = 0
        if stored.ndim != 2:
            fallbacks.append(f"{name}: decoded shape {stored.shape} is not 2-D")
            stored = None
            continue
        expect = reduced_shape(orig_h, orig_w, reduce)
        if stored.shape != expect:
            fallbacks.append(f"{name}: decoded shape {stored.shape} != expected {expect}")
            stored = None
            continue
        break
    if stored is None:
        raise DicomError(path, "decode", f"no decoder could decode {ts_name(uid)} ({uid}): " + " | ".join(fallbacks))
    return ds, uid, orig_h, orig_w, stored, used, reduce, {"read": t_read - t0, "decode": time.perf_counter() - t_read}


def reference_display(path: str | os.PathLike, display: DisplayConfig | None = None) -> np.ndarray:
    """Full-resolution uint8 by the obvious route: pydicom ``pixel_array`` (default plugins),
    full-array ``apply_modality_lut`` then ``apply_voi_lut``, the same grey range rule.

    The range is worked out here again on purpose (numpy percentiles over the full array, not
    the histogram of :func:`display_range`): it is what the fast path is tested against."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    cfg = display or DisplayConfig()
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    mod = apply_modality_lut(arr, ds)
    kind = _voi_kind(ds, cfg.prefer_lut)
    voi = apply_voi_lut(mod, ds, prefer_lut=cfg.prefer_lut) if kind != "none" else mod
    if kind != "none":
        lo, hi = voi_output_range(ds, kind)
    elif cfg.no_voi_range == "percentile":
        lo, hi = (float(v) for v in np.percentile(mod, cfg.percentiles, method="inverted_cdf"))
    elif cfg.no_voi_range == "minmax":
        lo, hi = float(mod.min()), float(mod.max())
    elif cfg.no_voi_range == "bits":
        ends = apply_modality_lut(np.array(stored_range(ds), dtype=np.int64), ds)
        lo, hi = float(np.min(ends)), float(np.max(ends))
    else:
        raise ValueError(f"no_voi_range must be one of {NO_VOI_RANGES}, got {cfg.no_voi_range!r}")
    return to_uint8(voi, lo, hi, invert=str(ds.PhotometricInterpretation) == "MONOCHROME1")


def reference_convert(path: str | os.PathLike, size: int, keep_aspect: bool = False,
                      display: DisplayConfig | None = None) -> np.ndarray:
    """:func:`reference_display` resized like :func:`convert` (``size x size``, letterboxed when
    ``keep_aspect``)."""
    img = reference_display(path, display)
    return resize_to(img, img.shape[0], img.shape[1], size, keep_aspect)
