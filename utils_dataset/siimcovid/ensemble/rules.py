"""The merge: members' predictions -> study rows and image rows (pure functions on DataFrames).

Inputs are the members' own tables (docs/contracts.md): a study member's fold tables (image rows,
``p_<class>`` and ``p_<class>_tta``), a binary member's fold tables (``p_none``, ``p_none_tta``),
a detector member's fold tables (``image_id, orig_h, orig_w, boxes, boxes_notta``, boxes as (N, 5)
arrays in ORIGINAL pixels, :func:`siimcovid.tables.read_detector`). Outputs are the
submission inputs: study rows ``study_id`` + the four classes, image rows ``image_id, boxes, none``.

Study rows: per member the mean over its folds, image -> study mean (renormalised), then the
weighted mean of the members; optionally ``negative = (1 - a) negative + a * mean(image none)``
over the study's images (the 11th place's image evidence). Only ``negative`` moves: each class
is ranked on its own, so the others keep their AP.

Image rows: detector members fused through siimcovid/wbf (two levels: each model's folds, then the
models), then a RULE gives every image its ``none`` and re-scores its boxes as
``conf ** a * m[image]`` (so a box never changes rank inside its image). Presets:

- ``max``:          none = 1 - max box (9th place)
- ``product``:      none = prod(1 - box)
- ``blend``:        none = weighted mean of binary P(none), study negative and the detector's none
                    (``det`` = max or product rule); sources an image lacks drop out (5th place)
- ``power_awsaf``:  box = conf^a (1 - negative)^b p_opacity^c; none = negative^d (1 - p_opacity)^e,
                    p_opacity = 1 - binary P(none) (awsaf49 / cdeotte: 0.7 0.2 0.1 0.8 0.2)
- ``power_11th``:   none_det = prod(1 - box); none = w none_det + (1 - w) negative;
                    box = conf^a (1 - none)^b (11th place: w = 0.5; a, b not published)

A source an image lacks is substituted, and counted in the notes: binary P(none) by the
detector's 1 - max box, else the study negative; the detector's none (no detector row at all)
by binary P(none), else the study negative.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..data import STUDY_CLASSES
from ..tables import DET_BOX_COLS, DET_COLUMNS, PROB_COLS, TTA_COLS
from ..wbf import WBFParams, fuse_two_level

STUDY_COLS = list(STUDY_CLASSES)

PRESETS: dict[str, dict[str, float | str]] = {
    "max": {},
    "product": {},
    "blend": {"w_binary": 0.5, "w_negative": 0.5, "w_det": 0.0, "det": "max"},
    "power_awsaf": {"a": 0.7, "b": 0.2, "c": 0.1, "d": 0.8, "e": 0.2},
    "power_11th": {"w": 0.5, "a": 1.0, "b": 0.2},
}


@dataclass(frozen=True)
class Rule:
    preset: str
    params: Mapping[str, float | str] = field(default_factory=dict)

    @classmethod
    def make(cls, preset: str, params: Mapping | None = None) -> "Rule":
        if preset not in PRESETS:
            raise ValueError(f"merge rule {preset!r}: use one of {list(PRESETS)}")
        unknown = set(params or {}) - set(PRESETS[preset])
        if unknown:
            raise ValueError(f"rule {preset}: unknown parameters {sorted(unknown)}; valid {sorted(PRESETS[preset])}")
        return cls(preset, {**PRESETS[preset], **dict(params or {})})

    def as_dict(self) -> dict:
        return {"preset": self.preset, "params": dict(self.params)}

    def __str__(self) -> str:
        ps = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        return f"{self.preset}({ps})" if ps else self.preset


# ------------------------------------------------------------------------------------ study rows
def member_image_probs(frames: Sequence[pd.DataFrame], tta: bool) -> pd.DataFrame:
    """A study member's fold tables (image rows) -> image_id, study_id + the four classes: per
    image the mean over the tables holding it (test: every fold; OOF: the one that held it out)."""
    cols = TTA_COLS if tta else PROB_COLS
    parts = []
    for f in frames:
        use = cols if set(cols) <= set(f.columns) else PROB_COLS  # a table without TTA columns
        part = f[["image_id", "study_id", *use]].copy()
        part.columns = ["image_id", "study_id", *STUDY_COLS]
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["image_id", "study_id", *STUDY_COLS])
    allp = pd.concat(parts, ignore_index=True)
    return allp.groupby(["image_id", "study_id"], sort=True, as_index=False)[STUDY_COLS].mean()


def to_study(image_probs: pd.DataFrame, how: str = "mean") -> pd.DataFrame:
    """Image rows -> one row per study (``study.evaluate.aggregate_study``: mean, renormalised)."""
    from ..study.evaluate import aggregate_study

    if len(image_probs) == 0:
        return pd.DataFrame(columns=["study_id", *STUDY_COLS])
    return aggregate_study(image_probs, STUDY_COLS, how)


def weighted_mean(tables: Mapping[str, pd.DataFrame], key: str, cols: Sequence[str],
                  weights: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Weighted mean of several members' tables (one row per ``key``); a row missing from a member
    uses the others (weights renormalised over the members that have it)."""
    cols = list(cols)
    names = [n for n in tables if len(tables[n])]
    if not names:
        return pd.DataFrame(columns=[key, *cols])
    w = {n: float((weights or {}).get(n, 1.0)) for n in names}
    keys = sorted(set().union(*(set(tables[n][key]) for n in names)))
    num = pd.DataFrame(0.0, index=keys, columns=cols)
    den = pd.Series(0.0, index=keys)
    for n in names:
        t = tables[n].set_index(key)[cols].astype(float)
        num.loc[t.index] += w[n] * t.to_numpy()
        den.loc[t.index] += w[n]
    out = num.div(den.where(den > 0), axis=0)
    out.index.name = key
    return out.reset_index()


def study_rows(members: Mapping[str, pd.DataFrame], weights: Mapping[str, float] | None = None,
               how: str = "mean") -> pd.DataFrame:
    """Study members (name -> image-level probs of :func:`member_image_probs`) -> study rows."""
    per_member = {n: to_study(t, how) for n, t in members.items()}
    return weighted_mean(per_member, "study_id", STUDY_COLS, weights)


def adjust_negative(study: pd.DataFrame, image_none: pd.DataFrame, a: float) -> pd.DataFrame:
    """``negative = (1 - a) negative + a * mean(none)`` over each study's images (``image_none``:
    study_id, none). Studies without image rows keep their negative."""
    out = study.copy()
    if not a or len(image_none) == 0:
        return out
    mean_none = image_none.groupby("study_id")["none"].mean()
    m = out["study_id"].map(mean_none)
    have = m.notna()
    out.loc[have, "negative"] = (1.0 - a) * out.loc[have, "negative"] + a * m[have]
    return out


# ------------------------------------------------------------------------------------ binary + detectors
def binary_none(members: Mapping[str, Sequence[pd.DataFrame]], weights: Mapping[str, float] | None = None,
                tta: bool = True) -> pd.DataFrame:
    """Binary members (name -> fold tables) -> image_id, p_none (mean over folds, weighted over members)."""
    col = "p_none_tta" if tta else "p_none"
    per_member = {}
    for name, frames in members.items():
        parts = [f[["image_id", col if col in f.columns else "p_none"]].set_axis(["image_id", "p_none"], axis=1)
                 for f in frames]
        if parts:
            per_member[name] = pd.concat(parts).groupby("image_id", as_index=False)["p_none"].mean()
    return weighted_mean(per_member, "image_id", ["p_none"], weights)


def fuse_tables(members: Mapping[str, Sequence[pd.DataFrame]], *, columns=DET_BOX_COLS,
                score_scale: Mapping[str, float] | None = None, model_weights: Mapping[str, float] | None = None,
                folds: Mapping | WBFParams | None = None, models: Mapping | WBFParams | None = None) -> pd.DataFrame:
    """Detector tables of several members (name -> its fold tables) -> one table, fused per image in
    two levels through siimcovid/wbf.py (each member's folds, then the members). An image missing
    from a table counts as "no box" in that list."""
    sizes: dict[str, tuple[int, int]] = {}
    for tables in members.values():
        for t in tables:
            sizes.update({i: (int(h), int(w)) for i, h, w in zip(t["image_id"], t["orig_h"], t["orig_w"])})
    lookups = {name: [{c: dict(zip(t["image_id"], t[c])) for c in columns} for t in tables]
               for name, tables in members.items()}
    rows = []
    empty = np.zeros((0, 5))
    for iid, (h, w) in sizes.items():
        row = {"image_id": iid, "orig_h": h, "orig_w": w}
        for c in columns:
            per_member = {name: [lk[c].get(iid, empty) for lk in lks] for name, lks in lookups.items()}
            row[c] = fuse_two_level(per_member, h, w, score_scale=score_scale, model_weights=model_weights,
                                    folds=folds, models=models)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(DET_COLUMNS[:3]) + list(columns))


def fuse_detectors(members: Mapping[str, Sequence[pd.DataFrame]], *, tta: bool = True, oof: bool = False,
                   wbf_folds: Mapping | None = None, wbf_models: Mapping | None = None,
                   score_scale: Mapping[str, float] | None = None,
                   model_weights: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Detector members (name -> fold prediction tables) -> image_id, orig_h, orig_w, boxes, fused in
    two levels through :func:`fuse_tables`. OOF tables hold each image in
    ONE fold, so a member's folds are one list there (a fold that never saw the image is no
    evidence against its boxes); on test every fold is its own list."""
    col = "boxes" if tta else "boxes_notta"
    use = {n: ([pd.concat(list(t), ignore_index=True)] if oof else list(t)) for n, t in members.items() if len(t)}
    if not use:
        return pd.DataFrame(columns=["image_id", "orig_h", "orig_w", "boxes"])
    fused = fuse_tables(use, columns=(col,), score_scale=score_scale, model_weights=model_weights,
                        folds=wbf_folds, models=wbf_models)
    return fused.rename(columns={col: "boxes"})


# ------------------------------------------------------------------------------------ image rows
@dataclass
class Evidence:
    """Per image (aligned arrays): boxes (list of (N, 5)), whether a detector row exists, the
    detector's none by both rules, binary P(none) and the study negative (NaN = absent)."""
    image_ids: list[str]
    boxes: list[np.ndarray]
    has_det: np.ndarray
    d_max: np.ndarray
    d_prod: np.ndarray
    binary: np.ndarray
    negative: np.ndarray


def evidence(image_ids: Sequence[str], det: pd.DataFrame | None, binary: pd.DataFrame | None,
             negative: Mapping[str, float]) -> Evidence:
    """``det``: image_id, boxes (arrays); ``binary``: image_id, p_none; ``negative``: image_id ->
    the study negative of the image's study."""
    ids = [str(i) for i in image_ids]
    det_map = dict(zip(det["image_id"].astype(str), det["boxes"])) if det is not None and len(det) else {}
    bin_map = dict(zip(binary["image_id"].astype(str), binary["p_none"])) if binary is not None and len(binary) else {}
    empty = np.zeros((0, 5))
    boxes = [np.asarray(det_map.get(i, empty), dtype=np.float64).reshape(-1, 5) for i in ids]
    has = np.array([i in det_map for i in ids], dtype=bool)
    top = np.array([b[:, 4].max() if len(b) else 0.0 for b in boxes])
    prod = np.array([np.prod(1.0 - np.clip(b[:, 4], 0, 1)) for b in boxes])
    nan = np.full(len(ids), np.nan)
    return Evidence(ids, boxes, has, np.where(has, 1.0 - top, nan), np.where(has, prod, nan),
                    np.array([bin_map.get(i, np.nan) for i in ids], dtype=np.float64),
                    np.array([negative.get(i, np.nan) for i in ids], dtype=np.float64))


def _fill(primary: np.ndarray, *fallbacks: np.ndarray) -> tuple[np.ndarray, int]:
    out = primary.copy()
    missing = np.isnan(out)
    n = int(missing.sum())
    for fb in fallbacks:
        m = np.isnan(out)
        out[m] = fb[m]
    return out, n


def apply_rule(rule: Rule, ev: Evidence, notes: list[str] | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """-> (none per image, box exponent a, box multiplier per image): box score = conf**a * m."""
    p = rule.params
    n = len(ev.image_ids)
    neg = ev.negative.copy()
    if np.isnan(neg).any():
        raise ValueError(f"{int(np.isnan(neg).sum())} image(s) without a study negative (fill study rows first)")
    binary, n_bin = _fill(ev.binary, ev.d_max, neg)
    d_max, n_det = _fill(ev.d_max, ev.binary, neg)
    d_prod, _ = _fill(ev.d_prod, ev.binary, neg)
    a, mult = 1.0, np.ones(n)
    if rule.preset == "max":
        none = d_max
    elif rule.preset == "product":
        none = d_prod
    elif rule.preset == "blend":
        d = d_prod if p["det"] in ("prod", "product") else d_max
        srcs = [(float(p["w_binary"]), ev.binary), (float(p["w_negative"]), neg),
                (float(p["w_det"]), np.where(ev.has_det, d, np.nan))]
        num, den = np.zeros(n), np.zeros(n)
        for w, v in srcs:
            ok = ~np.isnan(v) & (w > 0)
            num[ok] += w * v[ok]
            den[ok] += w
        none = np.where(den > 0, num / np.where(den > 0, den, 1.0), neg)
        n_bin = int(((np.isnan(ev.binary)) & (float(p["w_binary"]) > 0)).sum())
    elif rule.preset == "power_awsaf":
        p_op = 1.0 - binary
        a = float(p["a"])
        mult = np.power(np.clip(1.0 - neg, 0, 1), float(p["b"])) * np.power(np.clip(p_op, 0, 1), float(p["c"]))
        none = np.power(np.clip(neg, 0, 1), float(p["d"])) * np.power(np.clip(1.0 - p_op, 0, 1), float(p["e"]))
    elif rule.preset == "power_11th":
        w = float(p["w"])
        none = w * d_prod + (1.0 - w) * neg
        a = float(p["a"])
        mult = np.power(np.clip(1.0 - none, 0, 1), float(p["b"]))
    else:
        raise ValueError(f"merge rule {rule.preset!r}: use one of {list(PRESETS)}")
    if notes is not None:
        uses_bin = rule.preset in ("power_awsaf",) or (rule.preset == "blend" and float(p["w_binary"]) > 0)
        if uses_bin and n_bin:
            notes.append(f"rule {rule.preset}: {n_bin} of {n} images have no binary P(none): substituted")
        if n_det and rule.preset != "power_awsaf":
            notes.append(f"rule {rule.preset}: {n_det} of {n} images have no detector row: substituted")
    return np.clip(none, 0.0, 1.0), a, mult


def image_rows(rule: Rule, ev: Evidence, notes: list[str] | None = None) -> pd.DataFrame:
    """image_id, boxes ((N, 5) arrays, re-scored, best first), none."""
    none, a, mult = apply_rule(rule, ev, notes)
    out = []
    for b, m in zip(ev.boxes, mult):
        b = b.copy()
        if len(b):
            b[:, 4] = np.clip(np.power(np.clip(b[:, 4], 0, 1), a) * m, 0.0, 1.0)
            b = b[np.argsort(-b[:, 4], kind="stable")]
        out.append(b)
    return pd.DataFrame({"image_id": ev.image_ids, "boxes": out, "none": none})


def image_csv_frame(rows: pd.DataFrame, ndigits: int = 5) -> pd.DataFrame:
    """Image rows with ``boxes`` as the JSON text of the image predictions CSV."""
    def js(b):
        return json.dumps([[round(float(v), 1) for v in r[:4]] + [round(float(r[4]), ndigits)] for r in np.asarray(b).reshape(-1, 5)])
    return pd.DataFrame({"image_id": rows["image_id"], "boxes": [js(b) for b in rows["boxes"]],
                         "none": rows["none"].round(6)})
