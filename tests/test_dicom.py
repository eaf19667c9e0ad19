"""siimcovid.preprocess.dicom: the fast conversion path against the full-array pydicom reference, the
grey-range rules, reduced-resolution JPEG 2000, and every kind of bad input."""
from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest

from siimcovid.preprocess import dicom
from siimcovid.dev.synthetic import write_dicom

# the synthetic files use short non-UID ids, as the real (anonymised) data does
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

SYNTAXES = ["explicit", "rle", "jpeg_lossless", "jpegls", "j2k", "j2k_lossy"]
# (photometric, bits, voi style): no VOI, window, VOI LUT, rescale + window
STYLES = {
    "mono2_none": ("MONOCHROME2", 12, {}),
    "mono1_window": ("MONOCHROME1", 12, {"window": (1800.0, 2000.0)}),
    "mono2_lut": ("MONOCHROME2", 14, {"voi_lut": True}),
    "mono1_rescale": ("MONOCHROME1", 16, {"rescale": (2.0, -1024.0), "window": (3000.0, 5000.0)}),
}
H, W = 72, 96


def _pixels(bits: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 0.8, W)[None, :] + np.linspace(0, 0.15, H)[:, None]
    noise = rng.normal(0, 0.02, (H, W))
    return np.clip((ramp + noise) * (2**bits - 1), 0, 2**bits - 1).astype(np.uint16)


def _write(path, ts="explicit", style="mono2_none", pixels=None, **extra):
    phot, bits, kw = STYLES[style]
    arr = _pixels(bits) if pixels is None else pixels
    return write_dicom(path, arr, study_id="s1", series_id="r1", image_id=path.stem, patient_id="p1",
                       photometric=phot, bits_stored=bits, transfer_syntax=ts, **{**kw, **extra})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dicoms")
    return {(ts, st): _write(d / f"{ts}_{st}.dcm", ts, st) for ts in SYNTAXES for st in STYLES}


@pytest.mark.parametrize("ts", SYNTAXES)
@pytest.mark.parametrize("style", list(STYLES))
def test_fast_path_equals_full_array_reference(files, ts, style):
    path = files[(ts, style)]
    ref = dicom.reference_display(path)
    full = dicom.resize_to(ref, H, W, 128, False)
    decoders = ("auto", "dicomsdl", "pydicom") + (("pillow",) if ts.startswith("j2k") else ())
    for decoder in decoders:
        # size > image: no resize, so the comparison is pixel for pixel at full resolution
        got = dicom.convert(path, [128], decoder=decoder, reduce_j2k=False)
        # the decoder asked for did the work (a silent fallback would leave it untested)
        assert got.fallbacks == [], (decoder, got.fallbacks)
        if decoder != "auto":
            assert got.decoder.startswith({"pillow": "pillow-r0"}.get(decoder, decoder)), (decoder, got.decoder)
        assert got.orig_h == H and got.orig_w == W and got.reduce == 0
        assert np.array_equal(got.images[128], full), (decoder, got.decoder)
        assert got.photometric == STYLES[style][0]
    assert got.voi == {"mono2_none": "percentile", "mono2_lut": "lut"}.get(style, "window")


FAST = dicom.DisplayConfig(exact=False)


@pytest.mark.parametrize("ts", ["explicit", "rle", "jpeg_lossless"])
@pytest.mark.parametrize("style", list(STYLES))
def test_shrinking_is_bit_exact_by_default(files, ts, style):
    path = files[(ts, style)]
    ref = dicom.reference_convert(path, 40)  # 72 x 96 -> 40 x 40: area averaging
    assert np.array_equal(dicom.convert(path, [40]).images[40], ref)


@pytest.mark.parametrize("style", list(STYLES))
def test_fast_voi_is_close_on_a_radiograph(tmp_path, style):
    """Resizing stored values before the VOI table differs from the reference where the table
    is not linear over the averaged pixels (a clipping window edge, a curved VOI LUT): tiny for
    a linear range, larger (still under a grey level on average) for the test windows."""
    from siimcovid.dev.synthetic import render_study_image

    phot, bits, kw = STYLES[style]
    img = render_study_image(np.random.default_rng(1), 576, 768, "typical", [(100, 250, 300, 500)])
    stored = np.rint(np.clip(img, 0, 1) * (2**bits - 1)).astype(np.uint16)
    if phot == "MONOCHROME1":
        stored = (2**bits - 1) - stored
    p = _write(tmp_path / f"{style}.dcm", "explicit", style, pixels=stored)
    ref = dicom.reference_convert(p, 128)
    fast = dicom.convert(p, [128], display=FAST).images[128]
    diff = np.abs(fast.astype(int) - ref.astype(int))
    linear = not kw  # percentile range: one linear ramp, clipping only the 0.5 % tails
    assert diff.mean() < (0.1 if linear else 0.3), (diff.mean(), diff.max())
    assert np.mean(diff > 1) < (0.005 if linear else 0.06)


def test_fast_voi_looks_up_the_small_image_only(monkeypatch, files):
    seen = []
    real = dicom.apply_lut
    monkeypatch.setattr(dicom, "apply_lut", lambda img, lut, off, **kw: seen.append(img.shape) or real(img, lut, off, **kw))
    dicom.convert(files[("explicit", "mono1_window")], [40, 24], display=FAST)
    assert seen == [(40, 40), (24, 24)]
    seen.clear()
    dicom.convert(files[("explicit", "mono1_window")], [40, 24])
    assert seen == [(H, W)]  # exact: one full-resolution lookup shared by both sizes


def test_window_values_by_hand(tmp_path):
    stored = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (4, 1))  # 4 x 64
    p2 = write_dicom(tmp_path / "w2.dcm", stored, study_id="s", series_id="r", image_id="w2",
                     photometric="MONOCHROME2", bits_stored=12, window=(1000.5, 1001.0))
    p1 = write_dicom(tmp_path / "w1.dcm", stored, study_id="s", series_id="r", image_id="w1",
                     photometric="MONOCHROME1", bits_stored=12, window=(1000.5, 1001.0))
    out2 = dicom.convert(p2, [64]).images[64][0]
    out1 = dicom.convert(p1, [64]).images[64][0]
    # DICOM LINEAR window: c - 0.5 = 1000, w - 1 = 1000 -> [500, 1500] maps onto 0..255
    expect = np.rint(np.clip((stored[0].astype(float) - 500) / 1000, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(out2, expect)
    assert np.array_equal(out1, 255 - expect)  # MONOCHROME1 is inverted


def test_voi_lut_range_is_the_table_range(tmp_path):
    stored = np.tile(np.arange(100, 1124, 16, dtype=np.uint16), (4, 1))
    lut = np.linspace(0, 4095, 1024).astype(np.uint16)  # 12-bit data in a "16-bit" descriptor
    p = write_dicom(tmp_path / "lut.dcm", stored, study_id="s", series_id="r", image_id="lut",
                    bits_stored=12, voi_lut=lut, voi_lut_first=100)
    got = dicom.convert(p, [64])
    assert got.voi == "lut"
    expect = np.rint(lut[stored[0] - 100] / 4095 * 255).astype(np.uint8)
    assert np.array_equal(got.images[64][0], expect)


def test_no_voi_range_modes(tmp_path):
    arr = _pixels(12)
    arr[0, 0] = 4095  # one hot pixel: min-max would follow it, percentiles do not
    p = _write(tmp_path / "nv.dcm", pixels=arr)
    cfgs = {m: dicom.DisplayConfig(m, (1.0, 99.0)) for m in ("percentile", "minmax", "bits")}
    full = {m: dicom.reference_display(p, c) for m, c in cfgs.items()}
    pct, mm, bits = full["percentile"], full["minmax"], full["bits"]
    assert (pct == 255).mean() >= 0.01 and (pct == 0).mean() >= 0.01  # 1 % clipped at each end
    assert (mm == 255).sum() == 1 and mm.min() == 0
    assert np.array_equal(bits, np.rint(arr.astype(float) / 4095 * 255).astype(np.uint8))
    for mode, cfg in cfgs.items():  # the lookup-table path gives the same pixels
        got = dicom.convert(p, [128], display=cfg)
        assert got.voi == mode
        assert np.array_equal(got.images[128], dicom.resize_to(full[mode], H, W, 128, False))


def test_percentile_range_does_not_depend_on_resolution(tmp_path):
    big = np.kron(_pixels(12), np.ones((4, 4), dtype=np.uint16))  # same picture, 4x the pixels
    a = dicom.convert(_write(tmp_path / "a.dcm"), [48]).images[48]
    b = dicom.convert(_write(tmp_path / "b.dcm", pixels=big), [48]).images[48]
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0


@pytest.mark.parametrize("ts", ["j2k", "j2k_lossy"])
def test_pillow_j2k_full_resolution_is_exact_and_reduced_is_close(tmp_path, ts):
    big = np.kron(_pixels(12), np.ones((4, 4), dtype=np.uint16))  # 288 x 384, smooth
    p = _write(tmp_path / f"{ts}.dcm", ts, "mono1_window", pixels=big)
    ds, _ = dicom.read_dataset(p)
    frame = dicom.first_frame(ds)
    info = dicom.j2k_header(frame)
    assert info["precision"] == 12 and not info["signed"] and info["levels"] >= 2
    full_pillow = dicom.decode_pillow_j2k(frame, 0)
    full_ref, _ = dicom.decode_pydicom(ds)
    assert np.array_equal(full_pillow, full_ref)  # Pillow's 16-bit scaling is undone exactly
    got = dicom.convert(p, [64])
    assert got.reduce == 2 and got.decoder == "pillow-r2"  # 288/4 = 72 >= 64, 288/8 < 64
    ref = dicom.reference_convert(p, 64)
    # averaging before vs after the (clipping) window differs a little; levels must not shift
    assert np.abs(got.images[64].astype(int) - ref.astype(int)).mean() < 3.0
    assert abs(float(got.images[64].mean()) - float(ref.mean())) < 2.0


def test_unknown_no_voi_range_is_refused(files):
    bad = dicom.DisplayConfig(no_voi_range="histogram")
    path = files[("explicit", "mono2_none")]  # neither VOI LUT nor window: the mode is used
    with pytest.raises(ValueError, match="no_voi_range"):
        dicom.convert(path, [32], display=bad)
    with pytest.raises(ValueError, match="no_voi_range"):
        dicom.reference_display(path, bad)


def test_choose_reduce():
    assert dicom.choose_reduce(2544, 3028, (1024, 1024), 5) == 1
    assert dicom.choose_reduce(2544, 3028, (512, 512), 5) == 2
    assert dicom.choose_reduce(2544, 3028, (256, 256), 5) == 3
    assert dicom.choose_reduce(2544, 3028, (256, 256), 1) == 1  # capped by the wavelet levels
    assert dicom.choose_reduce(500, 600, (512, 512), 5) == 0
    assert dicom.reduced_shape(2544, 3027, 2) == (636, 757)  # OpenJPEG rounds odd sizes up


def test_keep_aspect_letterboxes(files):
    got = dicom.convert(files[("explicit", "mono2_none")], [48], keep_aspect=True).images[48]
    assert got.shape == (48, 48)
    assert got[36:].max() == 0  # 72 x 96 -> 36 x 48 content, bottom padded black
    assert got[:36].mean() > 20


# --------------------------------------------------------------------------- bad input


def _raises(path, stage, *words):
    with pytest.raises(dicom.DicomError) as ei:
        dicom.convert(path, [32])
    assert ei.value.stage == stage and str(path) in str(ei.value)
    for w in words:
        assert w in ei.value.reason, ei.value.reason
    return ei.value


def test_empty_file(tmp_path):
    (tmp_path / "e.dcm").write_bytes(b"")
    _raises(tmp_path / "e.dcm", "read", "empty file")


def test_not_dicom(tmp_path):
    (tmp_path / "n.dcm").write_bytes(b"PNG or anything else" * 20)
    _raises(tmp_path / "n.dcm", "read", "not a DICOM file")


@pytest.mark.parametrize("ts", ["explicit", "jpeg_lossless", "j2k"])
def test_truncated(files, tmp_path, ts):
    raw = files[(ts, "mono2_none")].read_bytes()
    p = tmp_path / f"t_{ts}.dcm"
    p.write_bytes(raw[: len(raw) - 200])
    _raises(p, "read" if ts != "explicit" else "header", "truncated")


def test_no_pixel_data(files, tmp_path):
    import pydicom

    ds = pydicom.dcmread(files[("rle", "mono2_none")])
    del ds.PixelData
    ds.save_as(tmp_path / "np.dcm")
    _raises(tmp_path / "np.dcm", "header", "no Pixel Data")


def test_missing_codec_names_the_syntax(files, monkeypatch):
    monkeypatch.setattr(dicom, "PYDICOM_PLUGINS", ("gdcm",))  # as if only gdcm were known
    err = _raises_with(files[("jpegls", "mono2_none")], decoder="pydicom")
    assert err.stage == "decode" and "jpegls" in err.reason and "no installed codec" in err.reason


def _raises_with(path, **kw):
    with pytest.raises(dicom.DicomError) as ei:
        dicom.convert(path, [32], **kw)
    assert str(path) in str(ei.value)  # the message names the file
    return ei.value


def test_failing_fast_decoder_falls_back(files, monkeypatch):
    import rle.rle

    def boom(*a, **kw):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(rle.rle, "decode_frame", boom)  # read_fast's RLE decoder
    got = dicom.convert(files[("rle", "mono2_none")], [32])
    assert got.decoder == "dicomsdl" and got.fallbacks == ["rle: RuntimeError: simulated failure"]
    monkeypatch.setattr(dicom, "decode_dicomsdl", boom)
    got = dicom.convert(files[("rle", "mono2_none")], [32])
    assert got.decoder.startswith("pydicom") and "simulated failure" in got.fallbacks[1]
    ref = dicom.reference_convert(files[("rle", "mono2_none")], 32)
    assert np.array_equal(got.images[32], ref)


@pytest.mark.parametrize("ts", ["explicit", "rle"])
def test_default_route_reads_in_place_and_is_exact(files, ts):
    """Uncompressed and RLE files take read_fast (pixels viewed in place / pylibjpeg-rle) and
    still equal pydicom's full-array route, with and without the compiled lookup."""
    for style in STYLES:
        path = files[(ts, style)]
        for size in (128, 40):  # no resize (pixel for pixel) and area shrinking
            ref = dicom.reference_convert(path, size)
            got = dicom.convert(path, [size])
            assert got.decoder == {"explicit": "native", "rle": "rle"}[ts] and got.fallbacks == []
            assert np.array_equal(got.images[size], ref), (style, size)
            assert {"read", "decode", "voi", "lut", "resize"} <= set(got.timings)


def test_numpy_lookup_equals_compiled(files, monkeypatch):
    path = files[("explicit", "mono1_rescale")]
    compiled = dicom.convert(path, [40, 128]).images
    from siimcovid.preprocess import lookup

    if lookup._lut_kernel() is None:
        pytest.skip("numba not installed: only the numpy lookup exists")
    monkeypatch.setattr(lookup, "_LUT_KERNEL", [None])
    plain = dicom.convert(path, [40, 128]).images
    assert all(np.array_equal(compiled[s], plain[s]) for s in (40, 128))
    rng = np.random.default_rng(3)
    for dt in (np.uint16, np.int16, np.uint8):  # every bit pattern of the container
        info = np.iinfo(dt)
        lut = rng.integers(0, 256, int(info.max) - int(info.min) + 1, dtype=np.uint8)
        src = rng.integers(info.min, int(info.max) + 1, (37, 53), dtype=dt)
        monkeypatch.setattr(lookup, "_LUT_KERNEL", [])
        got = dicom.apply_lut(src, lut, int(info.min))
        assert np.array_equal(got, lut[src.astype(np.int64) - int(info.min)])


def test_reused_buffers_never_leak_into_results(files):
    a = dicom.convert(files[("explicit", "mono2_none")], [128])  # no resize: the lookup output itself
    keep = a.images[128].copy()
    dicom.convert(files[("explicit", "mono1_window")], [128])
    assert np.array_equal(a.images[128], keep)


@pytest.mark.parametrize("ts", ["explicit", "rle"])
@pytest.mark.parametrize("style", ["mono2_none", "mono1_window"])
def test_garbage_in_unused_high_bits_is_read_like_pydicom(tmp_path, ts, style):
    """Bits above BitsStored are dropped as pydicom does (its unused-bits correction), both by
    the in-place route and in the percentile histogram."""
    import pydicom

    arr = _pixels(12) | (np.random.default_rng(5).integers(0, 16, (H, W)).astype(np.uint16) << 12)
    phot, _, kw = STYLES[style]
    p = write_dicom(tmp_path / f"g_{ts}_{style}.dcm", arr, study_id="s1", series_id="r1", image_id="g",
                    photometric=phot, bits_stored=16, transfer_syntax=ts, **kw)
    ds = pydicom.dcmread(p)  # the same bytes declared as 12 bits stored: 4 bits of garbage on top
    ds.BitsStored, ds.HighBit = 12, 11
    ds.save_as(p)
    for size in (128, 40):
        got = dicom.convert(p, [size])
        assert got.decoder in ("native", "rle")
        assert np.array_equal(got.images[size], dicom.reference_convert(p, size))


def test_codec_panic_is_a_fallback_not_a_crash(tmp_path):
    # pylibjpeg-rle panics on this corrupt stream with pyo3's PanicException, a BaseException
    # that `except Exception` misses; the pydicom path must still move on to the next plugin.
    rng = np.random.default_rng(0)
    arr = (np.linspace(0, 3000, 72 * 96).reshape(72, 96) + rng.normal(0, 50, (72, 96))).clip(0, 4095)
    p = write_dicom(tmp_path / "c.dcm", arr.astype(np.uint16), study_id="s", series_id="r", image_id="c",
                    transfer_syntax="rle")
    raw = bytearray(p.read_bytes())
    raw[len(raw) - 3000:len(raw) - 1000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    p.write_bytes(bytes(raw))
    ds, _ = dicom.read_dataset(p)
    from pydicom.pixels import get_decoder

    with pytest.raises(BaseException) as ei:
        get_decoder(dicom.transfer_syntax(ds)).as_array(ds, decoding_plugin="pylibjpeg")
    assert not isinstance(ei.value, Exception)  # the panic really is a bare BaseException
    got = dicom.convert(p, [32], decoder="pydicom")
    assert got.decoder == "pydicom-pydicom"  # pylibjpeg panicked, pydicom's own RLE decoder took over


# ---------------------------------------------------------------- issue 24: bits and syntax that lie


def _retag(src, dst, uid: str) -> None:
    """Copy a DICOM with another TransferSyntaxUID in its file meta and nothing else changed
    (pydicom refuses to write raw pixels under a compressed syntax, so the bytes are patched)."""
    import struct

    raw = bytearray(src.read_bytes())
    i = raw.index(b"\x02\x00\x10\x00UI")
    n = struct.unpack_from("<H", raw, i + 6)[0]
    val = uid.encode() + (b"\x00" if len(uid) % 2 else b"")
    raw[i + 8:i + 8 + n] = val
    struct.pack_into("<H", raw, i + 6, len(val))
    g = raw.index(b"\x02\x00\x00\x00UL")
    struct.pack_into("<I", raw, g + 8, struct.unpack_from("<I", raw, g + 8)[0] + len(val) - n)
    dst.write_bytes(bytes(raw))


def _gradient_file(path, bits_stored=12, top=4000):
    arr = (np.arange(64 * 64).reshape(64, 64) * 7 % top).astype(np.uint16)
    write_dicom(path, arr, study_id="s", series_id="r", image_id=path.stem, transfer_syntax="explicit",
                bits_stored=bits_stored)
    return path


@pytest.mark.parametrize("bits", [0, 17])
def test_bits_stored_zero_or_above_allocated_is_refused(tmp_path, bits):
    """Both used to give an all-white PNG (exit 0); now a header error naming the fields."""
    src = _gradient_file(tmp_path / "g.dcm")
    ds = pydicom.dcmread(src)
    ds.BitsStored = bits
    bad = tmp_path / f"b{bits}.dcm"
    ds.save_as(bad)
    for decoder in ("auto", "pydicom"):
        with pytest.raises(dicom.DicomError, match=f"BitsStored {bits} with BitsAllocated 16") as e:
            dicom.convert(bad, [32], decoder=decoder)
        assert e.value.stage == "header"


def test_high_bits_above_bits_stored_are_a_warning(tmp_path):
    """BitsStored 8 on 15-bit data: converted as the standard says, but no longer silently."""
    src = _gradient_file(tmp_path / "g.dcm", bits_stored=15, top=30000)
    assert dicom.convert(src, [32]).warnings == []
    ds = pydicom.dcmread(src)
    ds.BitsStored, ds.HighBit = 8, 7
    ds.save_as(tmp_path / "b8.dcm")
    (w,) = dicom.convert(tmp_path / "b8.dcm", [32]).warnings
    assert "need 15 bits but BitsStored is 8" in w


def test_raw_pixels_under_a_compressed_syntax_name_the_mismatch(tmp_path):
    src = _gradient_file(tmp_path / "g.dcm")
    bad = tmp_path / "j.dcm"
    _retag(src, bad, "1.2.840.10008.1.2.4.90")
    with pytest.raises(dicom.DicomError) as e:
        dicom.convert(bad, [32])
    assert "truncated or corrupt" not in e.value.reason
    assert "j2k" in e.value.reason and "not encapsulated" in e.value.reason
    assert "exactly 64 x 64 x 16 bits" in e.value.reason and "TransferSyntaxUID is wrong" in e.value.reason


def test_a_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "f.dcm"
    os.mkfifo(fifo)
    from fifo_guard import call_without_hanging

    with pytest.raises(dicom.DicomError, match="FIFO") as e:
        call_without_hanging(lambda: dicom.convert(fifo, [32]), fifo, 30)  # open() would block
    assert e.value.stage == "read"
