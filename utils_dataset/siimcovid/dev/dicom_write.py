"""Writing DICOM files: the synthetic sets' files and the tests' hand-made ones.

Every transfer syntax of the real data (uncompressed, RLE, JPEG 2000 lossless and lossy, JPEG-LS,
JPEG lossless process 14 through this module's own small encoder), both photometrics, VOI by
window or by LUT. Importing it is cheap (numpy only); pydicom and its codecs load lazily.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# Short name -> transfer syntax UID. "jpeg_lossless" (process 14, selection value 1) is
# encoded by this module's own small encoder (:func:`encode_jpeg_lossless`): neither pydicom
# nor the pylibjpeg / pyjpegls plugins ship an encoder for it, and the real data holds it.
TRANSFER_SYNTAXES: dict[str, str] = {
    "explicit": "1.2.840.10008.1.2.1",  # Explicit VR Little Endian, uncompressed
    "rle": "1.2.840.10008.1.2.5",  # RLE Lossless
    "j2k": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Image Compression (Lossless Only)
    "j2k_lossy": "1.2.840.10008.1.2.4.91",  # JPEG 2000 Image Compression
    "jpegls": "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "jpeg_lossless": "1.2.840.10008.1.2.4.70",  # JPEG Lossless, Non-Hierarchical, First-Order Prediction
}
PHOTOMETRICS: tuple[str, ...] = ("MONOCHROME1", "MONOCHROME2")

# Digital X-Ray Image Storage - For Presentation, as most of the real files.
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"


def hex_id(rng: np.random.Generator, n: int = 12) -> str:
    return "".join("0123456789abcdef"[i] for i in rng.integers(0, 16, size=n))


def write_dicom(
    path: str | Path,
    pixels: np.ndarray,
    *,
    study_id: str,
    series_id: str,
    image_id: str,
    patient_id: str = "",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    transfer_syntax: str = "explicit",
    window: tuple[float, float] | None = None,
    voi_lut: bool | np.ndarray = False,
    rescale: tuple[float, float] = (1.0, 0.0),
    voi_lut_first: int | None = None,
    j2k_compression_ratio: float = 10.0,
) -> Path:
    """Write one single-frame grey-scale DICOM the way the competition's files look.

    ``pixels`` are STORED values (uint16, < 2**bits_stored). The UIDs inside the file equal
    the ids of the path, 12-hex-char strings as in the real (anonymised) data. ``window`` is
    (center, width) in rescaled units; ``voi_lut`` True writes a smooth VOI LUT Sequence over
    the rescaled range of ``pixels`` (or pass the LUT data itself; its first entry maps the
    rescaled value ``voi_lut_first``, by default the minimum rescaled value of ``pixels``).
    ``transfer_syntax`` is a key of :data:`TRANSFER_SYNTAXES` or a UID.
    """
    from pydicom import config as dcm_config

    path = Path(path)
    uid = TRANSFER_SYNTAXES.get(transfer_syntax, transfer_syntax)
    if uid not in TRANSFER_SYNTAXES.values():
        raise ValueError(f"{path}: unknown transfer syntax {transfer_syntax!r}; known: {sorted(TRANSFER_SYNTAXES)}")
    if photometric not in PHOTOMETRICS:
        raise ValueError(f"{path}: photometric must be one of {PHOTOMETRICS}, got {photometric!r}")
    if not 8 <= bits_stored <= 16:
        raise ValueError(f"{path}: bits_stored must be 8..16, got {bits_stored}")
    arr = np.asarray(pixels)
    if arr.ndim != 2:
        raise ValueError(f"{path}: pixels must be 2-D, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= 2**bits_stored):
        raise ValueError(f"{path}: stored values {arr.min()}..{arr.max()} do not fit {bits_stored} bits")
    arr = np.ascontiguousarray(arr.astype(np.uint16))

    # The real data uses 12-hex-char "UIDs", which are not valid UI values: write them as-is.
    old_mode = dcm_config.settings.writing_validation_mode
    dcm_config.settings.writing_validation_mode = dcm_config.IGNORE
    try:
        return _write_dataset(path, arr, uid, study_id=study_id, series_id=series_id, image_id=image_id,
                              patient_id=patient_id, photometric=photometric, bits_stored=bits_stored,
                              window=window, voi_lut=voi_lut, rescale=rescale, voi_lut_first=voi_lut_first,
                              j2k_compression_ratio=j2k_compression_ratio)
    finally:
        dcm_config.settings.writing_validation_mode = old_mode


def _write_dataset(path: Path, arr: np.ndarray, uid: str, *, study_id: str, series_id: str, image_id: str,
                   patient_id: str, photometric: str, bits_stored: int, window, voi_lut, rescale,
                   voi_lut_first, j2k_compression_ratio: float) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DcmSequence
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = image_id
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = image_id
    ds.StudyInstanceUID = study_id
    ds.SeriesInstanceUID = series_id
    ds.PatientID = patient_id
    ds.PatientName = ""
    ds.PatientSex = ""
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = int(bits_stored)
    ds.HighBit = int(bits_stored) - 1
    ds.PixelRepresentation = 0
    slope, intercept = rescale
    if (slope, intercept) != (1.0, 0.0):
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter = f"{window[0]:.1f}"
        ds.WindowWidth = f"{max(window[1], 1.0):.1f}"
    if voi_lut is not False and voi_lut is not None:
        lo = float(arr.min()) * slope + intercept if voi_lut_first is None else float(voi_lut_first)
        if isinstance(voi_lut, np.ndarray):
            lut = np.asarray(voi_lut, dtype=np.uint16)
        else:
            hi = float(arr.max()) * slope + intercept
            lut = default_voi_lut(int(round(hi - lo)) + 1)
        # 32767 entries: a US element longer than 64 kB cannot be written in explicit VR.
        if lo < 0 or len(lut) > 32767:
            raise ValueError(f"{path}: a VOI LUT needs rescaled values >= 0 and at most 32767 entries "
                             f"(first {lo:g}, {len(lut)} entries)")
        item = Dataset()
        item.LUTDescriptor = [len(lut), int(round(lo)), 16]
        item.LUTExplanation = "SYNTHETIC SIGMOID"
        item.LUTData = lut.tolist()
        # US VR: LUTDescriptor's first-mapped value is unsigned here (PixelRepresentation 0).
        item["LUTDescriptor"].VR = "US"
        item["LUTData"].VR = "US"
        ds.VOILUTSequence = DcmSequence([item])
    ds.PixelData = arr.tobytes()

    if uid == TRANSFER_SYNTAXES["jpeg_lossless"]:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([encode_jpeg_lossless(arr, bits_stored)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid
        ds.LossyImageCompression = "00"
    elif uid != ExplicitVRLittleEndian:
        kwargs: dict = {"generate_instance_uid": False}  # keep SOPInstanceUID == the file's id
        if uid == TRANSFER_SYNTAXES["rle"]:
            kwargs["encoding_plugin"] = "pydicom"
        elif uid == TRANSFER_SYNTAXES["j2k_lossy"]:
            kwargs["j2k_cr"] = [float(j2k_compression_ratio)]
        ds.compress(uid, arr, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def default_voi_lut(n_entries: int, out_bits: int = 16) -> np.ndarray:
    """A smooth monotone (sigmoid) VOI LUT of ``n_entries`` values over the full output range."""
    n = max(int(n_entries), 2)
    t = np.linspace(-4.0, 4.0, n)
    s = 1.0 / (1.0 + np.exp(-t))
    s = (s - s[0]) / (s[-1] - s[0])
    return np.round(s * (2**out_bits - 1)).astype(np.uint16)


def encode_jpeg_lossless(arr: np.ndarray, precision: int) -> bytes:
    """JPEG Lossless (ITU T.81 process 14), predictor 1, one component, one Huffman table.

    Vectorised with numpy so a full-size radiograph encodes in about a second. The table is
    built from the frame's own difference categories (length-limited to 16 bits)."""
    a = np.asarray(arr, dtype=np.int64)
    h, w = a.shape
    # Predictor 1 (left); first column predicts from above; first pixel from 2**(P-1).
    pred = np.empty_like(a)
    pred[:, 1:] = a[:, :-1]
    pred[1:, 0] = a[:-1, 0]
    pred[0, 0] = 1 << (precision - 1)
    diff = (a - pred) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff).ravel()  # -32767..32768
    mag = np.abs(diff)
    ssss = np.zeros(mag.shape, dtype=np.int64)
    nz = mag > 0
    ssss[nz] = np.floor(np.log2(mag[nz])).astype(np.int64) + 1
    ssss = np.minimum(ssss, 16)  # difference 32768 is category 16 without extra bits
    # Extra bits: value for positive, value - 1 in ssss bits (ones' complement) for negative.
    extra = np.where(diff >= 0, diff, diff + (1 << ssss) - 1)
    extra = np.where(ssss == 16, 0, extra)
    n_extra = np.where(ssss == 16, 0, ssss)

    counts = np.bincount(ssss, minlength=17)
    lengths = _huffman_lengths(counts, max_len=16)
    codes = _canonical_codes(lengths)
    code_len = lengths[ssss]
    code_val = codes[ssss]
    total = code_len + n_extra  # <= 32
    value = (code_val << n_extra) | extra
    # Left-align every symbol in 32 bits, unpack to bits, keep the first `total` bits of each.
    aligned = (value << (32 - total)).astype(">u4")
    bits = np.unpackbits(aligned.view(np.uint8)).reshape(-1, 32)
    keep = np.arange(32)[None, :] < total[:, None]
    stream = bits[keep]
    pad = (-len(stream)) % 8
    stream = np.concatenate([stream, np.ones(pad, dtype=np.uint8)])  # pad with 1-bits (T.81 F.1.2.3)
    data = np.packbits(stream)
    ff = np.flatnonzero(data == 0xFF)
    data = np.insert(data, ff + 1, 0)  # byte stuffing

    def seg(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    sof3 = bytes([precision]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    bits_per_len = [int((lengths == n).sum()) for n in range(1, 17)]
    symbols = sorted(range(17), key=lambda s: (lengths[s], s))
    symbols = [s for s in symbols if lengths[s] > 0]
    dht = bytes([0x00]) + bytes(bits_per_len) + bytes(symbols)
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # Ns=1, Cs=1 Td=0, Ss=predictor 1, Se=0, Ah/Al=0
    out = b"\xff\xd8" + seg(0xC3, sof3) + seg(0xC4, dht) + seg(0xDA, sos) + data.tobytes() + b"\xff\xd9"
    return out


def _huffman_lengths(counts: np.ndarray, max_len: int = 16) -> np.ndarray:
    """Code lengths of a Huffman code over the symbols with counts > 0, limited to ``max_len``.

    Every used symbol gets a code; a lone symbol gets length 1. No code is all ones because
    one extra dummy symbol takes the all-ones slot (T.81 K.2)."""
    import heapq

    used = [int(s) for s in np.flatnonzero(counts)]
    lengths = np.zeros(len(counts), dtype=np.int64)
    if not used:
        return lengths
    # Dummy symbol -1 with count 0 reserves the all-ones code.
    heap = [(int(counts[s]), i, [s]) for i, s in enumerate(used)] + [(0, len(used), [-1])]
    heapq.heapify(heap)
    depth = {s: 0 for s in used + [-1]}
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            depth[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    # Length-limit by the JPEG adjustment procedure (T.81 Figure K.3) on a BITS histogram.
    bits = np.zeros(64, dtype=np.int64)
    for s in depth:
        bits[depth[s]] += 1
    i = len(bits) - 1
    while i > max_len:
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
        i -= 1
    # Drop the dummy from the longest length, then hand lengths out by frequency.
    i = max_len
    while bits[i] == 0:
        i -= 1
    bits[i] -= 1
    order = sorted(used, key=lambda s: (-int(counts[s]), s))
    k = 0
    for n in range(1, max_len + 1):
        for _ in range(int(bits[n])):
            lengths[order[k]] = n
            k += 1
    return lengths


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values for ``lengths`` (symbols ordered by length, then symbol)."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code = 0
    prev_len = 0
    for s in sorted((s for s in range(len(lengths)) if lengths[s] > 0), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev_len
        prev_len = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def display_image(ds) -> np.ndarray:
    """Reference display pipeline for a written file: modality LUT, then the VOI LUT Sequence
    if present, else the first window (linear, DICOM C.11.2.1.2.1), else min-max; MONOCHROME1
    inverted. Float in [0, 1], bright = dense. :func:`encode_display` is its inverse; tests use
    it to check that a written file shows what was drawn."""
    from pydicom.pixels import apply_modality_lut

    v = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        n, first, bits = (int(x) for x in item.LUTDescriptor)
        lut = np.asarray(item.LUTData, dtype=np.float64).ravel()
        n = n or 65536
        idx = np.clip(np.round(v - first), 0, min(n, len(lut)) - 1).astype(np.int64)
        out = lut[idx] / float(2**bits - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        c = float(np.ravel(ds.WindowCenter)[0]) if ds["WindowCenter"].VM > 1 else float(ds.WindowCenter)
        w = float(np.ravel(ds.WindowWidth)[0]) if ds["WindowWidth"].VM > 1 else float(ds.WindowWidth)
        out = ((v - (c - 0.5)) / max(w - 1.0, 1.0) + 0.5).clip(0.0, 1.0)
    else:
        lo, hi = float(v.min()), float(v.max())
        out = (v - lo) / max(hi - lo, 1e-9)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 1.0 - out
    return out.clip(0.0, 1.0)
