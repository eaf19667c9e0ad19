"""Box conversions, in one place.

Forms: ``xywh`` (the competition's ``boxes`` column: top-left + size), ``xyxy`` (corners,
the ``label`` column and the submission). Frames: the ORIGINAL DICOM pixel grid and a
resized training image. A :class:`Resize` records how one was made from the other so a
prediction on a resized image goes back to original pixels with the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ArrayLike = np.ndarray | list


def as_array(boxes: ArrayLike) -> np.ndarray:
    a = np.asarray(boxes, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {a.shape}")
    return a


def xywh_to_xyxy(boxes: ArrayLike) -> np.ndarray:
    a = as_array(boxes).copy()
    a[:, 2] += a[:, 0]
    a[:, 3] += a[:, 1]
    return a


def xyxy_to_xywh(boxes: ArrayLike) -> np.ndarray:
    a = as_array(boxes).copy()
    a[:, 2] -= a[:, 0]
    a[:, 3] -= a[:, 1]
    return a


def clip(boxes: ArrayLike, height: float, width: float) -> np.ndarray:
    a = as_array(boxes).copy()
    a[:, [0, 2]] = a[:, [0, 2]].clip(0, width)
    a[:, [1, 3]] = a[:, [1, 3]].clip(0, height)
    return a


def normalize(boxes: ArrayLike, height: float, width: float) -> np.ndarray:
    """Pixels -> [0, 1] relative to the image (what WBF and TF pipelines want)."""
    return as_array(boxes) / np.array([width, height, width, height], dtype=np.float64)


def denormalize(boxes: ArrayLike, height: float, width: float) -> np.ndarray:
    return as_array(boxes) * np.array([width, height, width, height], dtype=np.float64)


def iou_matrix(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, shape (len(a), len(b))."""
    a, b = as_array(a), as_array(b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (ix1 - ix0).clip(0) * (iy1 - iy0).clip(0)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass(frozen=True)
class Resize:
    """How an output image of ``out_h x out_w`` was made from an ``orig_h x orig_w`` image:
    ``out = orig * scale + pad`` per axis. ``keep_aspect`` letterboxes (one scale, padding
    at the bottom/right); otherwise each axis is stretched independently."""

    orig_h: int
    orig_w: int
    out_h: int
    out_w: int
    scale_y: float
    scale_x: float
    pad_y: float = 0.0
    pad_x: float = 0.0

    @classmethod
    def plan(cls, orig_h: int, orig_w: int, size: int | tuple[int, int], keep_aspect: bool = False) -> "Resize":
        out_h, out_w = (size, size) if isinstance(size, int) else size
        if keep_aspect:
            s = min(out_h / orig_h, out_w / orig_w)
            return cls(orig_h, orig_w, out_h, out_w, s, s, 0.0, 0.0)
        return cls(orig_h, orig_w, out_h, out_w, out_h / orig_h, out_w / orig_w)

    @property
    def content_hw(self) -> tuple[int, int]:
        """Size of the resized picture inside the (possibly letterboxed) output."""
        return (
            min(self.out_h, int(round(self.orig_h * self.scale_y))),
            min(self.out_w, int(round(self.orig_w * self.scale_x))),
        )

    def to_resized(self, boxes: ArrayLike) -> np.ndarray:
        a = as_array(boxes)
        s = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        p = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y])
        return a * s + p

    def to_original(self, boxes: ArrayLike, clip_to_image: bool = True) -> np.ndarray:
        a = as_array(boxes)
        s = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        p = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y])
        out = (a - p) / s
        return clip(out, self.orig_h, self.orig_w) if clip_to_image else out


def paint_mask(boxes: ArrayLike, height: int, width: int) -> np.ndarray:
    """uint8 mask with the boxes (xyxy, in this frame's pixels) painted 1: the aux-seg target."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for x0, y0, x1, y1 in as_array(boxes):
        c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        c1, r1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = 1
    return mask
