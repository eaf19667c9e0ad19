"""A constructed out-of-fold set for the ensemble tests: truth, and member tables shaped like the
stages' own outputs (docs/contracts.md), with a known amount of signal in each member."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from siimcovid.data import STUDY_CLASSES

H, W = 1000, 800  # original pixels of every constructed image
PROB = [f"p_{c}" for c in STUDY_CLASSES]


def make_set(n_studies: int = 120, n_folds: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    images, studies = [], []
    for s in range(n_studies):
        label = int(rng.choice(4, p=[0.3, 0.45, 0.17, 0.08]))
        sid = f"s{s:04d}"
        studies.append((sid, label, s % n_folds))
        for j in range(1 + (s % 7 == 0)):
            boxed = label != 0 and (j == 0 or rng.random() < 0.3)
            boxes = []
            if boxed:
                for _ in range(int(rng.integers(1, 3))):
                    x0, y0 = rng.uniform(50, 400), rng.uniform(50, 500)
                    boxes.append([x0, y0, x0 + rng.uniform(150, 300), y0 + rng.uniform(200, 400)])
            images.append({"image_id": f"i{s:04d}{j}", "study_id": sid, "fold": s % n_folds, "boxes": boxes,
                           "study_label": label, "orig_h": H, "orig_w": W})
    img = pd.DataFrame(images)
    return {"images": img, "studies": pd.DataFrame(studies, columns=["study_id", "label", "fold"]), "rng": rng}


def study_member(data: dict, signal: float, seed: int) -> dict[int, pd.DataFrame]:
    """Fold tables of a study member; ``signal`` 0 = noise."""
    rng = np.random.default_rng(seed)
    img = data["images"]
    logits = rng.normal(0, 1, (len(img), 4))
    logits[np.arange(len(img)), img["study_label"].to_numpy()] += signal
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    flip = np.exp(logits + rng.normal(0, 0.3, logits.shape))
    p_tta = (p + flip / flip.sum(1, keepdims=True)) / 2
    df = img[["image_id", "study_id", "fold", "study_label"]].copy()
    df[PROB] = p
    df[[c + "_tta" for c in PROB]] = p_tta
    return {k: g.reset_index(drop=True) for k, g in df.groupby("fold")}


def binary_member(data: dict, signal: float, seed: int) -> dict[int, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    img = data["images"]
    has = np.array([len(b) > 0 for b in img["boxes"]])
    z = rng.normal(0, 1, len(img)) + np.where(has, -signal, signal)
    df = img[["image_id", "study_id", "fold"]].copy()
    df["has_box"] = has.astype(int)
    df["p_none"] = 1 / (1 + np.exp(-z))
    df["p_none_tta"] = 1 / (1 + np.exp(-(z + rng.normal(0, 0.2, len(img)))))
    return {k: g.reset_index(drop=True) for k, g in df.groupby("fold")}


def detector_member(data: dict, quality: float, seed: int) -> dict[int, pd.DataFrame]:
    """Fold tables of a detector (siimcovid.tables.read_detector shape: boxes as (N, 5) arrays, original px)."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in data["images"].itertuples(index=False):
        def one():
            out = []
            for b in r.boxes:
                if rng.random() < quality:
                    j = rng.normal(0, 15, 4)
                    out.append([*(np.asarray(b) + j), rng.uniform(0.4, 0.95)])
            for _ in range(int(rng.integers(0, 3))):
                x0, y0 = rng.uniform(0, 500), rng.uniform(0, 600)
                out.append([x0, y0, x0 + 200, y0 + 300, rng.uniform(0.02, 0.6)])
            a = np.asarray(out, dtype=float).reshape(-1, 5)
            return a[np.argsort(-a[:, 4])]
        rows.append({"image_id": r.image_id, "orig_h": r.orig_h, "orig_w": r.orig_w, "boxes": one(),
                     "boxes_notta": one(), "fold": r.fold})
    df = pd.DataFrame(rows)
    return {k: g.drop(columns="fold").reset_index(drop=True) for k, g in df.groupby("fold")}


def write_run(root: Path, kind: str, name: str, folds: dict[int, pd.DataFrame], test: dict | None = None) -> Path:
    """Fold folders ``root/<name>/fold<k>/`` with config.json, oof.csv (and test.csv)."""
    from siimcovid.tables import write_detector

    for k, df in folds.items():
        d = Path(root) / name / f"fold{k}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"name": name, "stage": kind}))
        tables = {"oof.csv": df, **({"test.csv": test[k]} if test and k in test else {})}
        for fname, t in tables.items():
            if kind == "detect":
                write_detector(t.to_dict("records"), d / fname)
            else:
                t.to_csv(d / fname, index=False)
    return Path(root) / name


def write_meta(pre: Path, data: dict) -> Path:
    """A preprocess-shaped meta.csv holding the truth (boxes JSON, study_label, fold)."""
    pre = Path(pre)
    pre.mkdir(parents=True, exist_ok=True)
    m = data["images"].copy()
    m["split"] = "train"
    m["series_id"] = "x"
    m["boxes"] = [json.dumps(b) for b in m["boxes"]]
    m.to_csv(pre / "meta.csv", index=False)
    return pre
