

# ---------------------------------------------------------------- study classifier (issue #4)
# A tiny preprocess-shaped folder (docs/contracts.md): 64 px PNGs whose boxes are drawn as
# bright rectangles on a dark background, so mask/image alignment is checkable.
import json as _study_json

import siimcovid as _study_siimcovid  # noqa: F401  (env for tf_keras/sm before any test imports TF)

import numpy as _study_np
import pytest as _study_pytest

STUDY_FIXTURE_SIZE = 64


def _study_boxes(label: int, rng) -> list[list[float]]:
    if label == 0:
        return []
    if label == 1:  # typical: a bilateral pair
        return [[6, 14, 26, 50], [38, 14, 58, 50]]
    if label == 2:
        x = float(rng.integers(4, 30))
        return [[x, 20, x + 24, 44]]
    return [[20, 4, 44, 20]]


def write_study_fixture(root, n_studies: int = 16, n_test: int = 4, n_folds: int = 2, seed: int = 0):
    import cv2
    import pandas as pd

    rng = _study_np.random.default_rng(seed)
    s = STUDY_FIXTURE_SIZE
    rows = []
    for i in range(n_studies + n_test):
        split = "train" if i < n_studies else "test"
        label = i % 4 if split == "train" else -1
        n_img = 2 if i in (1, 5) else 1  # two multi-image studies; the extra image has no box
        for j in range(n_img):
            image_id, study_id = f"img{i:02d}{j}", f"st{i:02d}"
            truth_label = label if split == "train" else int(rng.integers(0, 4))
            boxes = _study_boxes(truth_label, rng) if j == 0 else []
            img = rng.integers(10, 40, (s, s)).astype(_study_np.uint8)
            for x0, y0, x1, y1 in boxes:
                img[int(y0):int(y1), int(x0):int(x1)] = 230
            d = root / "images" / str(s) / split
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{image_id}.png"), img)
            scale = 4.0  # "original" DICOM frame is 256 px
            rows.append({
                "image_id": image_id, "study_id": study_id, "series_id": f"se{i:02d}", "split": split,
                "dicom": f"{split}/{study_id}/se{i:02d}/{image_id}.dcm", "orig_h": s * 4, "orig_w": s * 4,
                "photometric": "MONOCHROME2", "transfer_syntax": "1.2.840.10008.1.2.1", "bits_stored": 12,
                "keep_aspect": False,
                "boxes": _study_json.dumps([[v * scale for v in b] for b in boxes] if split == "train" else []),
                f"boxes_{s}": _study_json.dumps(boxes if split == "train" else []),
                "study_label": label, "fold": (i % n_folds) if split == "train" else -1,
            })
    pd.DataFrame(rows).to_csv(root / "meta.csv", index=False)
    return root


@_study_pytest.fixture(scope="session")
def study_preprocess(tmp_path_factory):
    """Preprocess-shaped folder: 16 train studies (2 folds, 18 images), 4 test studies."""
    return write_study_fixture(tmp_path_factory.mktemp("study_pre"))
