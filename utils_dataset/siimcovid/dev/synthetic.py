"""A synthetic, competition-shaped data set: DICOM trees, train CSVs, sample submission, truth.

``python -m siimcovid synth --out DIR --studies N --seed S`` writes a folder that every stage
can read exactly as it reads ``/kaggle/input/siim-covid19-detection``, plus ``truth/`` so a
local run of the whole pipeline can be scored. The numbers it imitates (class priors, boxes
per image, box and image sizes, multi-image studies, patients, DICOM variety) are counts of
the real train CSVs and DICOMs, written next to the constants that use them.

``--out`` must be new or empty: two sets are never merged in one folder (the next stage would
read files no CSV lists). A folder holding this very set is left as it is, an interrupted run of
it is redone from scratch, and ``--overwrite`` replaces another set that synth wrote.

The images carry a learnable, class-dependent signal: a chest-like background and soft
opacities inside the boxes (typical = bilateral peripheral lower-zone pair, indeterminate =
faint or unilateral, atypical = single dense central or upper-zone box, negative = none).
The signal lives in DISPLAY space (after modality LUT, VOI LUT / window and MONOCHROME1
inversion), so a pipeline that gets any of those steps, the box frame or the class order
wrong scores visibly worse.

Importing this module is cheap (numpy only); pydicom, its codecs and OpenCV load lazily.
"""
from __future__ import annotations

import argparse
import sys
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..boxes import denormalize
from ..data import (
    IMAGE_CSV,
    IMAGE_SUFFIX,
    SAMPLE_SUBMISSION,
    STUDY_CLASSES,
    STUDY_COLUMNS,
    STUDY_CSV,
    STUDY_SUFFIX,
    TRUTH_DIR,
    TRUTH_IMAGE_CSV,
    TRUTH_STUDY_CSV,
    format_boxes_column,
    format_label,
)
from .dicom_write import (  # noqa: F401  (the writer's names stay importable from here)
    DX_SOP_CLASS,
    PHOTOMETRICS,
    TRANSFER_SYNTAXES,
    hex_id,
    default_voi_lut,
    display_image,
    encode_jpeg_lossless,
    write_dicom,
)
from ..errors import UserError
from ..submission import DEFAULT_IMAGE, DEFAULT_STUDY

# Ground truth of the test split, inside the set: what `score --truth` and the oracle read.

# Study-class priors of the real train set (typical 2855, negative 1676, indeterminate 1049,
# atypical 474 of 6054), in STUDY_CLASSES order.
CLASS_COUNTS = {"negative": 1676, "typical": 2855, "indeterminate": 1049, "atypical": 474}
# Fraction of a positive study's first image without boxes (153 / 59 / 92 of each class).
POSITIVE_NONE_RATE = {"typical": 153 / 2855, "indeterminate": 59 / 1049, "atypical": 92 / 474}


# ---------------------------------------------------------------------------------------
# Rendering (display space: float in [0, 1], bright = dense, as MONOCHROME2 shows it)
# ---------------------------------------------------------------------------------------


@dataclass
class Anatomy:
    """Chest geometry in image-relative units; one per patient so a patient's studies look alike."""

    cx: float = 0.5  # body midline
    lung_top: float = 0.16
    lung_bottom: float = 0.84
    lung_gap: float = 0.075  # midline -> medial lung edge
    lung_outer: float = 0.39  # midline -> lateral lung edge
    body_half: float = 0.47
    heart_r: float = 0.13
    rib_phase: float = 0.0
    tilt: float = 0.0  # small rotation of the rib pattern

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Anatomy":
        return cls(
            cx=0.5 + rng.normal(0, 0.02),
            lung_top=rng.uniform(0.11, 0.2),
            lung_bottom=rng.uniform(0.78, 0.9),
            lung_gap=rng.uniform(0.06, 0.09),
            lung_outer=rng.uniform(0.36, 0.42),
            body_half=rng.uniform(0.43, 0.5),
            heart_r=rng.uniform(0.11, 0.15),
            rib_phase=rng.uniform(0, 1),
            tilt=rng.normal(0, 0.02),
        )

    def lungs(self) -> list[tuple[float, float, float, float]]:
        """(x0, y0, x1, y1) of the image-left (patient's right) and image-right lung."""
        return [
            (self.cx - self.lung_outer, self.lung_top, self.cx - self.lung_gap, self.lung_bottom),
            (self.cx + self.lung_gap, self.lung_top, self.cx + self.lung_outer, self.lung_bottom),
        ]


# Mean opacity contrast (display units) per class; faint indeterminate, dense atypical.
OPACITY_STRENGTH = {"typical": (0.14, 0.05), "indeterminate": (0.085, 0.03), "atypical": (0.2, 0.06)}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid upsampled bicubically."""
    import cv2

    ch, cw = max(2, int(round(cells * h / max(h, w)))), max(2, int(round(cells * w / max(h, w))))
    g = rng.standard_normal((ch, cw)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def render_study_image(
    rng: np.random.Generator,
    height: int,
    width: int,
    study_class: str,
    boxes: Sequence[Sequence[float]] = (),
    anatomy: Anatomy | None = None,
    work_size: int = 384,
) -> np.ndarray:
    """A chest-like radiograph in display space (float32 in [0, 1], bright = dense).

    ``boxes`` are (x0, y0, x1, y1) in this image's pixels; an opacity (soft, textured,
    brighter) is drawn inside each, with a strength that depends on ``study_class``.
    The picture is composed at ``work_size`` px on the long side and upsampled, then
    full-resolution grain is added, so full-size images cost little more than small ones.
    """
    import cv2

    if study_class not in STUDY_CLASSES:
        raise ValueError(f"study_class must be one of {STUDY_CLASSES}, got {study_class!r}")
    an = anatomy or Anatomy.sample(rng)
    s = min(1.0, work_size / max(height, width))
    h, w = max(16, int(round(height * s))), max(16, int(round(width * s)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y = (yy + 0.5) / h
    x = (xx + 0.5) / w

    def soft(d: np.ndarray, k: float) -> np.ndarray:  # smooth step, d > 0 inside
        return 1.0 / (1.0 + np.exp(np.clip(-k * d, -60.0, 60.0)))  # clipped: no overflow far outside

    # Body (soft tissue) with a rounded outline; shoulders narrower at the top.
    body_half = an.body_half * (0.85 + 0.15 * soft(y - 0.15, 25))
    body = soft(body_half - np.abs(x - an.cx), 60) * soft(y - 0.02, 40)
    img = 0.06 + 0.5 * body

    # Lungs: rounded fields with a domed base, darker than soft tissue.
    lung = np.zeros_like(img)
    for x0, y0, x1, y1 in an.lungs():
        xc, yc, a, b = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        r = ((x - xc) / a) ** 2 + (np.clip(y - yc, None, 0) / b) ** 2 + (np.clip(y - yc, 0, None) / (b * 1.05)) ** 4
        lung = np.maximum(lung, soft(1.0 - r, 8))
    vessels = 0.5 + 0.5 * _smooth_noise(rng, h, w, 28)
    blotch = _smooth_noise(rng, h, w, 7)  # uneven aeration / overlying soft tissue
    img = img - lung * (0.34 - 0.06 * vessels - 0.035 * blotch)

    # Mediastinum, heart (to the image right, patient's left), spine with vertebrae.
    med = soft(0.055 - np.abs(x - an.cx), 80) * soft(y - 0.05, 30)
    heart = soft(1.0 - (((x - an.cx - 0.05) / (an.heart_r * 1.1)) ** 2 + ((y - 0.66) / an.heart_r) ** 2), 6)
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * (y * 22 + an.rib_phase))
    spine = soft(0.03 - np.abs(x - an.cx), 200) * (0.7 + 0.3 * vert)
    img = img + 0.18 * med + 0.22 * heart * (0.6 + 0.4 * lung) + 0.1 * spine

    # Ribs: posterior arcs across each hemithorax, plus two clavicles.
    ribs = np.zeros_like(img)
    dx = np.abs(x - an.cx)
    for k in range(10):
        y_k = an.lung_top - 0.04 + k * (an.lung_bottom - an.lung_top) / 9.5 + an.tilt * (x - an.cx)
        curve = y_k + 0.18 * (dx - 0.05) - 0.22 * np.clip(dx - 0.25, 0, None) ** 1.0
        ribs += np.exp(-(((y - curve) / 0.012) ** 2))
    ribs *= soft(an.body_half - 0.03 - dx, 60) * soft(dx - 0.04, 60)
    clav = np.exp(-(((y - (an.lung_top + 0.01 - 0.15 * (dx - 0.2))) / 0.012) ** 2)) * soft(0.3 - dx, 40) * soft(dx - 0.04, 60)
    img = img + 0.09 * ribs + 0.12 * clav

    # Opacities: soft textured ellipses filling each box, stronger inside the lung field.
    mean, sd = OPACITY_STRENGTH.get(study_class, (0.0, 0.0))
    texture = 0.55 + 0.45 * np.clip(0.5 + 0.5 * _smooth_noise(rng, h, w, 40), 0, 1)
    for bx0, by0, bx1, by1 in boxes:
        if study_class == "negative":
            raise ValueError("negative studies have no boxes")
        X0, X1 = bx0 / width, bx1 / width
        Y0, Y1 = by0 / height, by1 / height
        xc, yc = (X0 + X1) / 2, (Y0 + Y1) / 2
        a, b = max((X1 - X0) / 2, 1e-3), max((Y1 - Y0) / 2, 1e-3)
        m = np.clip(1.0 - ((x - xc) / a) ** 2 - ((y - yc) / b) ** 2, 0, 1) ** 0.6
        strength = max(0.04, rng.normal(mean, sd))
        img = img + strength * m * texture * (0.45 + 0.55 * lung)

    # Markers: a small bright letter-like block in an upper corner on most films.
    if rng.random() < 0.7:
        mx = rng.choice([0.06, 0.88]) + rng.uniform(-0.02, 0.02)
        my = rng.uniform(0.04, 0.12)
        img = img + 0.5 * ((np.abs(x - mx) < 0.02) & (np.abs(y - my) < 0.025))

    # Exposure: contrast, gamma, and offset vary per film.
    img = np.clip(img, 0, None)
    img = img ** rng.uniform(0.8, 1.25)
    img = rng.uniform(0.85, 1.1) * img + rng.uniform(-0.03, 0.05)
    out = cv2.resize(img.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) if s < 1 else img
    out = out + rng.normal(0, rng.uniform(0.008, 0.02), size=out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Boxes and study layout
# ---------------------------------------------------------------------------------------


def _box_size(rng: np.random.Generator) -> tuple[float, float]:
    """Relative (w, h): lognormal around the real medians (w .215, h .362), p10/p90 about right."""
    w = float(np.clip(0.215 * np.exp(rng.normal(0, 0.31)), 0.07, 0.42))
    h = float(np.clip(0.362 * np.exp(rng.normal(0, 0.39)), 0.1, 0.68))
    return w, h


def sample_boxes(rng: np.random.Generator, study_class: str, anatomy: Anatomy, n_boxes: int) -> list[tuple[float, float, float, float]]:
    """Relative (x0, y0, x1, y1) boxes with the class's pattern:
    typical = bilateral peripheral lower-zone pair (+ extra upper boxes when n > 2),
    indeterminate = unilateral or random zones, atypical = central (perihilar) or upper zone."""
    lungs = anatomy.lungs()
    out = []

    def place(side: int, zone: str, w: float, h: float) -> tuple[float, float, float, float]:
        lx0, ly0, lx1, ly1 = lungs[side]
        w = min(w, (lx1 - lx0) + 0.04)
        h = min(h, (ly1 - ly0) * 0.9)
        if zone == "lower_peripheral":
            yb = ly1 - rng.uniform(-0.01, 0.08)
            y0 = yb - h
            if side == 0:
                x0 = lx0 + rng.uniform(-0.02, 0.04)
            else:
                x0 = lx1 - rng.uniform(-0.02, 0.04) - w
        elif zone == "central":
            y0 = rng.uniform(0.32, 0.5) - h / 2
            medial = lx1 if side == 0 else lx0
            x0 = medial - w + rng.uniform(0.0, 0.04) if side == 0 else medial - rng.uniform(0.0, 0.04)
        elif zone == "upper":
            y0 = ly0 + rng.uniform(-0.02, 0.06)
            h = min(h, 0.32)
            x0 = rng.uniform(lx0, max(lx0, lx1 - w))
        else:  # anywhere in the lung
            y0 = rng.uniform(ly0, max(ly0, ly1 - h))
            x0 = rng.uniform(lx0 - 0.02, max(lx0, lx1 - w + 0.02))
        x0 = float(np.clip(x0, 0.005, 0.995 - w))
        y0 = float(np.clip(y0, 0.005, 0.995 - h))
        return (x0, y0, x0 + w, y0 + h)

    if n_boxes <= 0:
        return []
    if study_class == "typical":
        sides = [0, 1] if n_boxes >= 2 else [int(rng.integers(2))]
        for side in sides:
            out.append(place(side, "lower_peripheral", *_box_size(rng)))
        for _ in range(n_boxes - len(sides)):
            out.append(place(int(rng.integers(2)), "upper" if rng.random() < 0.6 else "any", *_box_size(rng)))
    elif study_class == "indeterminate":
        side = int(rng.integers(2))
        for i in range(n_boxes):
            s_ = side if (i == 0 or rng.random() < 0.5) else 1 - side
            out.append(place(s_, "any", *_box_size(rng)))
    elif study_class == "atypical":
        side = int(rng.integers(2))
        zone = "central" if rng.random() < 0.55 else "upper"
        for i in range(n_boxes):
            w, h = _box_size(rng)
            out.append(place(side if i == 0 else 1 - side, zone, w * 0.85, h * 0.8))
    else:
        raise ValueError(f"{study_class!r} studies have no boxes")
    return out


def _n_boxes(rng: np.random.Generator, study_class: str) -> int:
    """Boxes on an image that has findings; overall histogram close to the real 1:973, 2:3113,
    3:183, 4:23 (5 and 8 once each)."""
    table = {
        "typical": ([1, 2, 3, 4, 5], [0.12, 0.8, 0.07, 0.009, 0.001]),
        "indeterminate": ([1, 2, 3], [0.45, 0.5, 0.05]),
        "atypical": ([1, 2], [0.8, 0.2]),
    }
    vals, p = table[study_class]
    return int(rng.choice(vals, p=np.asarray(p) / np.sum(p)))


def _n_images(rng: np.random.Generator, multi_rate: float = 232 / 6054) -> int:
    """5822 of 6054 studies hold one image; the rest 2..9, mostly 2."""
    if rng.random() >= multi_rate:
        return 1
    return int(rng.choice([2, 3, 4, 5, 6, 7, 8, 9], p=[0.72, 0.16, 0.05, 0.03, 0.015, 0.01, 0.01, 0.005]))


def _image_size(rng: np.random.Generator, scale: float) -> tuple[int, int]:
    """(H, W): median 2544 x 3028, min about 846 x 1140, max about 4900, times ``scale``."""
    hh = float(np.clip(2544 * np.exp(rng.normal(0, 0.16)), 846, 4900))
    ww = float(np.clip(hh * (3028 / 2544) * np.exp(rng.normal(0, 0.1)), 1140, 4900))
    return max(32, int(round(hh * scale))), max(32, int(round(ww * scale)))


@dataclass
class DicomStyle:
    """How one file stores its display image."""

    photometric: str = "MONOCHROME2"
    bits_stored: int = 12
    transfer_syntax: str = "explicit"
    voi: str = "none"  # none | window | lut
    rescale: tuple[float, float] = (1.0, 0.0)
    stored_range: tuple[int, int] = (0, 4095)
    window_narrowing: float = 1.0
    j2k_cr: float = 12.0

    @classmethod
    def sample(cls, rng: np.random.Generator, syntaxes: dict[str, float]) -> "DicomStyle":
        names = list(syntaxes)
        p = np.asarray([syntaxes[n] for n in names], dtype=float)
        ts = str(rng.choice(names, p=p / p.sum()))
        bits = int(rng.choice([12, 14, 15, 16], p=[0.45, 0.2, 0.15, 0.2]))
        maxv = 2**bits - 1
        lo = int(rng.uniform(0.0, 0.15) * maxv)
        hi = int(max(lo + 255, rng.uniform(0.55, 1.0) * maxv))
        hi = min(hi, maxv)
        rescale = (1.0, 0.0)
        if rng.random() < 0.15:
            rescale = (float(rng.choice([1.0, 2.0])), float(rng.choice([-1024.0, 0.0, 512.0])))
        u = rng.random()
        voi = "window" if u < 0.35 else ("lut" if u < 0.42 else "none")
        if voi == "lut":
            # A VOI LUT Sequence needs rescaled values >= 0 and <= 32767 entries.
            rescale = (1.0, rescale[1] if rescale[1] >= 0 else 0.0)
            hi = min(hi, lo + 32000)
        return cls(
            photometric="MONOCHROME1" if rng.random() < 0.25 else "MONOCHROME2",
            bits_stored=bits,
            transfer_syntax=ts,
            voi=voi,
            rescale=rescale,
            stored_range=(lo, hi),
            window_narrowing=float(rng.uniform(0.9, 1.0)),
            j2k_cr=float(rng.uniform(8, 20)),
        )


def encode_display(display: np.ndarray, style: DicomStyle) -> tuple[np.ndarray, dict]:
    """Display image [0, 1] -> (stored uint16 pixels, write_dicom keyword arguments) such that
    the standard display pipeline (:func:`display_image`) shows ``display`` again."""
    d = np.asarray(display, dtype=np.float64)
    if style.photometric == "MONOCHROME1":
        d = 1.0 - d  # the VOI output is inverted for display
    lo, hi = style.stored_range
    slope, intercept = style.rescale
    kwargs: dict = {"photometric": style.photometric, "bits_stored": style.bits_stored,
                    "transfer_syntax": style.transfer_syntax, "rescale": style.rescale,
                    "j2k_compression_ratio": style.j2k_cr}
    if style.voi == "lut":
        n = hi - lo + 1
        lut = default_voi_lut(n)
        # Invert the monotone LUT: output fraction -> index in [0, n).
        idx = np.interp(d, lut / float(lut[-1]), np.arange(n, dtype=np.float64))
        stored = lo + np.round(idx)
        kwargs["voi_lut"] = lut
        kwargs["voi_lut_first"] = int(round(lo * slope + intercept))
    else:
        stored = lo + np.round(d * (hi - lo))
        if style.voi == "window":
            v_lo, v_hi = lo * slope + intercept, hi * slope + intercept
            full = v_hi - v_lo
            width = full * style.window_narrowing + 1.0
            center = v_lo + full / 2 + 0.5
            kwargs["window"] = (center, width)
    stored = np.clip(stored, 0, 2**style.bits_stored - 1).astype(np.uint16)
    return stored, kwargs


# ---------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------

# Share of files per transfer syntax (the real mix is not published; every kind occurs).
DEFAULT_SYNTAX_MIX: dict[str, float] = {
    "explicit": 0.45, "rle": 0.1, "j2k": 0.12, "j2k_lossy": 0.1, "jpegls": 0.1, "jpeg_lossless": 0.13,
}


@dataclass
class SynthConfig:
    out: str
    studies: int = 300
    seed: int = 0
    scale: float = 0.25
    test_fraction: float = 0.2
    multi_image_rate: float = 232 / 6054  # share of studies with 2..9 images
    duplicate_rate: float = 0.2  # share of extra images that repeat the study's first image
    syntax_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SYNTAX_MIX))


@dataclass
class _Image:
    image_id: str
    series_id: str
    boxes: list  # (x0, y0, x1, y1) original pixels
    height: int
    width: int
    style: DicomStyle
    duplicate_of: str | None = None


def _unique_hex(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        h = hex_id(rng)
        if h not in used:
            used.add(h)
            return h


def plan_dataset(cfg: SynthConfig) -> pd.DataFrame:
    """Decide every study, image, box and file style (no pixels yet): one row per image."""
    rng = np.random.default_rng(cfg.seed)
    used: set[str] = set()
    classes = list(STUDY_CLASSES)
    prior = np.array([CLASS_COUNTS[c] for c in classes], dtype=float)
    prior /= prior.sum()

    # Patients hold 1.86 studies on average (6054 studies / 3261 patients).
    patients: list[tuple[str, Anatomy, int]] = []
    n_left = cfg.studies
    while n_left > 0:
        k = min(n_left, 1 + int(rng.poisson(0.86)))
        patients.append((_unique_hex(rng, used), Anatomy.sample(rng), k))
        n_left -= k
    # Test split by patient so no patient straddles train and test.
    order = rng.permutation(len(patients))
    n_test_target = int(round(cfg.test_fraction * cfg.studies))
    test_patients, n_test = set(), 0
    for i in order:
        if n_test >= n_test_target:
            break
        test_patients.add(i)
        n_test += patients[i][2]

    rows = []
    for pi, (patient_id, anatomy, k) in enumerate(patients):
        split = "test" if pi in test_patients else "train"
        for _ in range(k):
            study_id = _unique_hex(rng, used)
            cls = classes[int(rng.choice(len(classes), p=prior))]
            n_img = _n_images(rng, cfg.multi_image_rate)
            series_first = _unique_hex(rng, used)
            first: _Image | None = None
            for j in range(n_img):
                series_id = series_first if (j == 0 or rng.random() < 0.3) else _unique_hex(rng, used)
                if first is not None and rng.random() < cfg.duplicate_rate:
                    # Duplicate image: same pixels, new ids; often labelled none (as in the real data).
                    boxes = [] if rng.random() < 0.6 else list(first.boxes)
                    img = _Image(_unique_hex(rng, used), series_id, boxes, first.height, first.width,
                                 first.style, duplicate_of=first.image_id)
                else:
                    H, W = _image_size(rng, cfg.scale)
                    if cls == "negative":
                        has = False
                    elif j == 0:
                        has = rng.random() >= POSITIVE_NONE_RATE[cls]
                    else:
                        has = rng.random() < 0.35  # extra images of a positive study: often none
                    rel = sample_boxes(rng, cls, anatomy, _n_boxes(rng, cls)) if has else []
                    boxes = [tuple(round(float(v), 5) for v in b) for b in denormalize(rel, H, W)]
                    img = _Image(_unique_hex(rng, used), series_id, boxes, H, W,
                                 DicomStyle.sample(rng, cfg.syntax_mix))
                if first is None:
                    first = img
                rows.append({
                    "split": split, "patient_id": patient_id, "study_id": study_id, "study_class": cls,
                    "series_id": img.series_id, "image_id": img.image_id, "boxes": img.boxes,
                    "height": img.height, "width": img.width, "style": img.style,
                    "duplicate_of": img.duplicate_of, "anatomy": anatomy,
                    "render_seed": int(rng.integers(2**31)),
                })
    return pd.DataFrame(rows)


def _write_csvs(plan: pd.DataFrame, out: Path) -> None:
    def study_table(df: pd.DataFrame) -> pd.DataFrame:
        st = df.drop_duplicates("study_id")
        table = {"id": st["study_id"] + STUDY_SUFFIX}
        for cls, col in zip(STUDY_CLASSES, STUDY_COLUMNS):
            table[col] = (st["study_class"] == cls).astype(int)
        return pd.DataFrame(table)

    def image_table(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({
            "id": df["image_id"] + IMAGE_SUFFIX,
            "boxes": df["boxes"].map(format_boxes_column),
            "label": df["boxes"].map(format_label),
            "StudyInstanceUID": df["study_id"],
        })

    train, test = plan[plan["split"] == "train"], plan[plan["split"] == "test"]
    study_table(train).to_csv(out / STUDY_CSV, index=False)
    image_table(train).to_csv(out / IMAGE_CSV, index=False)
    truth = out / TRUTH_DIR
    truth.mkdir(parents=True, exist_ok=True)
    study_table(test).to_csv(truth / TRUTH_STUDY_CSV, index=False)
    image_table(test).to_csv(truth / TRUTH_IMAGE_CSV, index=False)
    sub_ids = list(test.drop_duplicates("study_id")["study_id"] + STUDY_SUFFIX) + list(test["image_id"] + IMAGE_SUFFIX)
    sub_preds = [DEFAULT_STUDY] * test["study_id"].nunique() + [DEFAULT_IMAGE] * len(test)
    pd.DataFrame({"id": sub_ids, "PredictionString": sub_preds}).to_csv(out / SAMPLE_SUBMISSION, index=False)
    # One row per file: how it was stored, so decoder tests and benchmarks can pick cases.
    files = plan[["split", "image_id", "series_id", "study_id", "patient_id", "height", "width", "duplicate_of"]].copy()
    for key in ("photometric", "bits_stored", "transfer_syntax", "voi", "rescale"):
        files[key] = [getattr(st, key) for st in plan["style"]]
    files["rescale"] = files["rescale"].map(lambda r: f"{r[0]:g},{r[1]:g}")
    files["dicom"] = files["split"] + "/" + files["study_id"] + "/" + files["series_id"] + "/" + files["image_id"] + ".dcm"
    files.to_csv(truth / "files.csv", index=False)


SUMMARY_JSON = "synth.json"  # written last: its presence means the set is complete
PARTIAL_JSON = "synth.partial.json"  # written first, removed last: an interrupted run of this config


def _config_key(cfg: SynthConfig | dict) -> dict:
    """What decides a set's content (everything but the folder), JSON-normalised for comparison."""
    d = asdict(cfg) if isinstance(cfg, SynthConfig) else dict(cfg)
    d.pop("out", None)
    return json.loads(json.dumps(d, sort_keys=True))


def _describe_config(d: dict) -> str:
    return f"{d.get('studies')} studies, seed {d.get('seed')}, scale {d.get('scale')}"


def _read_config(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_config(cfg: SynthConfig) -> None:
    """Reject impossible settings (UserError) before anything is written."""
    if cfg.studies < 1:
        raise UserError(f"--studies {cfg.studies}: must be >= 1")
    if not 0.0 <= cfg.test_fraction < 1.0:
        raise UserError(f"--test-fraction {cfg.test_fraction}: must be in [0, 1)")
    if cfg.scale <= 0:
        raise UserError(f"--scale {cfg.scale}: must be > 0")
    unknown = set(cfg.syntax_mix) - set(TRANSFER_SYNTAXES)
    if unknown:
        raise UserError(f"--syntaxes: unknown transfer syntaxes {sorted(unknown)}; known: {', '.join(TRANSFER_SYNTAXES)}")
    if not cfg.syntax_mix or sum(cfg.syntax_mix.values()) <= 0:
        raise UserError("--syntaxes: name at least one transfer syntax")


def prepare_out(cfg: SynthConfig, overwrite: bool = False) -> bool:
    """Make ``cfg.out`` ready for a fresh set; True when it already holds exactly this set.

    Two sets are never merged: a folder holding anything else is refused with a UserError that
    says what it holds, unless ``overwrite`` and the folder was written by synth (then it is
    emptied). The folder of an interrupted run of the SAME config is emptied and redone."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder: choose a folder")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if not entries:
        return False
    want = _config_key(cfg)
    done = _read_config(out / SUMMARY_JSON)
    partial = _read_config(out / PARTIAL_JSON)
    if done is not None and _config_key(done) == want and not overwrite:
        return True
    if done is not None:
        holds = f"a synthetic set of {_describe_config(done)} ({SUMMARY_JSON})"
    elif partial is not None:
        holds = f"an interrupted synthetic set of {_describe_config(partial)} ({PARTIAL_JSON})"
    else:
        names = [p.name + ("/" if p.is_dir() else "") for p in entries]
        more = f" and {len(names) - 6} more" if len(names) > 6 else ""
        holds = f"{len(names)} entries not written by synth ({', '.join(names[:6])}{more})"
    ours = done is not None or partial is not None
    redo = partial is not None and done is None and _config_key(partial) == want
    if not (redo or (overwrite and ours)):
        if overwrite:
            raise UserError(f"--out {out} holds {holds}: --overwrite only replaces a folder written by synth; "
                            "remove it yourself or choose another --out")
        raise UserError(f"--out {out} is not empty: it holds {holds}, not the set asked for "
                        f"({_describe_config(want)}): choose a new or empty --out, or pass --overwrite to replace it")
    import shutil

    from ..log import get_logger

    get_logger().info("synth: emptying %s (it held %s)", out, holds)
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return False


def generate(cfg: SynthConfig, progress: bool = True, *, overwrite: bool = False) -> dict:
    """Write the whole data set under ``cfg.out``; returns the summary saved as synth.json.

    ``cfg.out`` must be new, empty or already hold this very set (then nothing is written and
    its summary is returned); see :func:`prepare_out` for ``overwrite``."""
    from tqdm import tqdm

    from ..log import get_logger, run_header

    t0 = time.time()
    out = Path(cfg.out)
    check_config(cfg)
    if prepare_out(cfg, overwrite):
        get_logger().info("synth: %s already holds this set (%s): nothing written; --overwrite regenerates it",
                          out, SUMMARY_JSON)
        return json.loads((out / SUMMARY_JSON).read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTIAL_JSON).write_text(json.dumps({"config": asdict(cfg)}, indent=2))
    run_header("synth", cfg)
    plan = plan_dataset(cfg)
    _write_csvs(plan, out)

    pixels_of: dict[str, tuple[np.ndarray, dict]] = {}
    current_study = None
    for r in tqdm(plan.itertuples(index=False), total=len(plan), desc="synth", disable=not progress):
        if isinstance(r.duplicate_of, str):
            stored, kwargs = pixels_of[r.duplicate_of]
        else:
            rng = np.random.default_rng(r.render_seed)
            disp = render_study_image(rng, r.height, r.width, r.study_class, r.boxes, anatomy=r.anatomy)
            stored, kwargs = encode_display(disp, r.style)
        path = out / r.split / r.study_id / r.series_id / f"{r.image_id}.dcm"
        write_dicom(path, stored, study_id=r.study_id, series_id=r.series_id, image_id=r.image_id,
                    patient_id=r.patient_id, **kwargs)
        # Keep only what a later duplicate in the same study needs: the study's first image.
        if r.study_id != current_study:
            current_study, pixels_of = r.study_id, {r.image_id: (stored, kwargs)}

    def counts(df: pd.DataFrame) -> dict:
        st = df.drop_duplicates("study_id")
        nb = df["boxes"].map(len)
        return {
            "studies": int(len(st)),
            "images": int(len(df)),
            "patients": int(df["patient_id"].nunique()),
            "classes": {c: int((st["study_class"] == c).sum()) for c in STUDY_CLASSES},
            "boxes_per_image": {int(k): int(v) for k, v in nb.value_counts().sort_index().items()},
            "multi_image_studies": int((df.groupby("study_id").size() > 1).sum()),
            "duplicates": int(df["duplicate_of"].notna().sum()),
        }

    styles = list(plan["style"])
    summary = {
        "config": asdict(cfg),
        "train": counts(plan[plan["split"] == "train"]),
        "test": counts(plan[plan["split"] == "test"]),
        "transfer_syntax": {k: sum(s.transfer_syntax == k for s in styles) for k in TRANSFER_SYNTAXES},
        "photometric": {k: sum(s.photometric == k for s in styles) for k in PHOTOMETRICS},
        "voi": {k: sum(s.voi == k for s in styles) for k in ("none", "window", "lut")},
        "bits_stored": {str(b): sum(s.bits_stored == b for s in styles) for b in (12, 14, 15, 16)},
        "seconds": round(time.time() - t0, 1),
    }
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2))
    (out / PARTIAL_JSON).unlink()
    get_logger().info("synth: %d studies, %d images in %.1f s -> %s", summary["train"]["studies"] + summary["test"]["studies"],
                      len(plan), summary["seconds"], out)
    return summary


def cli(argv: list[str]) -> int:
    from ..clihelp import HelpFormatter

    ap = argparse.ArgumentParser(
        prog="python -m siimcovid synth", formatter_class=HelpFormatter,
        description=__doc__.split("\n\n")[0],
        epilog=f"Writes OUT/train/ and OUT/test/ (<study>/<series>/<image>.dcm), {STUDY_CSV}, {IMAGE_CSV}, "
               f"{SAMPLE_SUBMISSION}, OUT/{TRUTH_DIR}/ (test ground truth + files.csv) and OUT/{SUMMARY_JSON}. "
               "OUT must be new or empty; a folder that already holds this very set is left as is; anything else "
               "is refused (--overwrite replaces an earlier synth set). Prints the train/test counts as JSON.")
    ap.add_argument("--out", required=True, metavar="OUT", help="folder to write the data set into (created)")
    ap.add_argument("--studies", type=int, default=300, help="number of studies, train + test")
    ap.add_argument("--seed", type=int, default=0, help="random seed: the same seed and options give the same set")
    ap.add_argument("--scale", type=float, default=0.25, help="image size relative to the real data (1 = full size)")
    ap.add_argument("--test-fraction", type=float, default=0.2, help="share of studies (by patient) in test/")
    ap.add_argument("--syntaxes", default=None,
                    help="comma list of transfer syntaxes to use, evenly mixed (default: the built-in mix); "
                         f"known: {','.join(TRANSFER_SYNTAXES)}")
    ap.add_argument("--overwrite", action="store_true",
                    help="empty OUT first when it holds another set written by synth (never merges two sets)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--check", action="store_true",
                    help="then run check-data on what was written (exit 1 when it finds an error)")
    a = ap.parse_args(argv)
    mix = dict(DEFAULT_SYNTAX_MIX)
    if a.syntaxes is not None:
        mix = {s.strip(): 1.0 for s in a.syntaxes.split(",") if s.strip()}
    cfg = SynthConfig(out=a.out, studies=a.studies, seed=a.seed, scale=a.scale, test_fraction=a.test_fraction,
                      syntax_mix=mix)
    summary = generate(cfg, progress=not a.no_progress, overwrite=a.overwrite)
    print(json.dumps({k: summary[k] for k in ("train", "test", "seconds")}, indent=1))
    if a.check:
        from ..checkdata import check_data

        report = check_data(a.out)
        report.print(file=sys.stdout)
        return 0 if report.ok else 1
    return 0
