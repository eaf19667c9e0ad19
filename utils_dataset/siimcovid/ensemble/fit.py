"""Fitting the merge on out-of-fold predictions: member weights, the image rule and its
parameters, the image-evidence share of the study negative.

Everything is scored with the project metric's APs (:mod:`.scoring`, through
``siimcovid.metric``) on the OOF tables, deterministically:

- member weights (study: study mAP; binary: none AP): non-negative, summing to 1, found by
  pairwise coordinate moves with shrinking steps from equal weights;
- rule parameters: coordinate search over a small grid per parameter from the preset's values,
  maximising opacity AP + none AP (each is 1/6 of the final score); ``rule: auto`` fits every
  preset and keeps the best;
- image evidence a: a grid over [0, 0.5], maximising study mAP.

An OOF-fitted optimum is optimistic, so every fitted value is kept only when it beats the default
(equal weights, the preset's published values, a = 0) by ``fit_margin``; the JSON records both.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..atomic import write_csv, write_json
from .config import EnsembleConfig
from .merge import Settings, Tables, fill_studies, image_inputs, negatives, run_merge
from .rules import (PRESETS, STUDY_COLS, Rule, adjust_negative, apply_rule, binary_none, evidence,
                    member_image_probs, study_rows, to_study)
from ..scoring import FullBoxAP, OpacityAP, StudyMAP, final

FIT_JSON = "ensemble_fit.json"
GRIDS: dict[str, Sequence] = {
    "w_binary": np.round(np.arange(0, 1.01, 0.1), 2), "w_negative": np.round(np.arange(0, 1.01, 0.1), 2),
    "w_det": np.round(np.arange(0, 1.01, 0.1), 2), "det": ("max", "product"),
    "a": np.round(np.arange(0.3, 1.51, 0.1), 2), "b": np.round(np.arange(0, 1.01, 0.1), 2),
    "c": np.round(np.arange(0, 1.01, 0.1), 2), "d": np.round(np.arange(0, 1.51, 0.1), 2),
    "e": np.round(np.arange(0, 1.01, 0.1), 2), "w": np.round(np.arange(0, 1.01, 0.1), 2),
}
EVIDENCE_GRID = np.round(np.arange(0, 0.51, 0.05), 2)


@dataclass
class Truth:
    """OOF ground truth: ``images`` (image_id, study_id, boxes: list of [x0, y0, x1, y1] original
    px) and per study its class index (``labels``)."""
    images: pd.DataFrame
    labels: Mapping[str, int]

    @classmethod
    def from_meta(cls, meta: pd.DataFrame) -> "Truth":
        """Train rows of a preprocess meta frame (boxes parsed, study_label, fold >= 0)."""
        m = meta[(meta["split"] == "train")]
        if "fold" in m:
            m = m[m["fold"].astype(int) >= 0]
        cols = ["image_id", "study_id", "boxes"] + (["fold"] if "fold" in m else [])
        images = m[cols].astype({"image_id": str, "study_id": str}).reset_index(drop=True)
        labels = dict(zip(m["study_id"].astype(str), m["study_label"].astype(int)))
        return cls(images, labels)

    def restrict(self, folds, notes: list[str] | None = None) -> "Truth":
        """Only the images of ``folds`` (the folds some member holds out): a fold no member
        predicted would score the priors and say nothing about the members."""
        if "fold" not in self.images or not folds:
            return self
        keep = self.images["fold"].astype(int).isin(set(int(f) for f in folds))
        if keep.all():
            return self
        if notes is not None:
            notes.append(f"OOF scored on folds {sorted(set(int(f) for f in folds))} only ({int(keep.sum())} of "
                         f"{len(keep)} images): no member holds out the other folds")
        return Truth(self.images[keep].reset_index(drop=True), self.labels)

    @property
    def has_box(self) -> np.ndarray:
        return np.array([len(b) > 0 for b in self.images["boxes"]], dtype=bool)


# ------------------------------------------------------------------------------------ searches
def read_truth(pre_dir: str | Path) -> tuple[Truth, pd.DataFrame]:
    """OOF truth from a preprocess output (train rows with a fold) -> (Truth, meta)."""
    from ..errors import UserError
    from ..layout import META_CSV, read_meta

    meta = read_meta(pre_dir)
    need = {"study_label", "fold", "boxes", "split"} - set(meta.columns)
    if need:
        raise UserError(f"{pre_dir}/{META_CSV} lacks {sorted(need)}: pass the TRAIN preprocess output (--preprocess)")
    truth = Truth.from_meta(meta)
    if not len(truth.images):
        raise UserError(f"{pre_dir}/{META_CSV} holds no train image with a fold: pass the train preprocess output")
    return truth, meta


def fit_simplex(score: Callable[[np.ndarray], float], m: int, *, margin: float,
                steps: Sequence[float] = (0.2, 0.1, 0.05, 0.02), n_random: int = 0, seed: int = 0,
                project: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Weights of m members (>= 0, sum 1) maximising ``score``; equal weights unless better by ``margin``.

    Candidates: equal weights, every single member and ``n_random`` seeded Dirichlet samples (the
    first best wins, so equal weights win ties), then ``simplex.refine`` with ``steps`` (and
    ``project`` after each move). Deterministic for a seed. No score at all (NaN for equal
    weights: nothing to rank against) keeps equal weights."""
    equal = np.full(m, 1.0 / m)
    s_equal = float(score(equal))
    if m == 1 or math.isnan(s_equal):
        return {"weights": equal.tolist(), "method": "single" if m == 1 else "equal", "score": s_equal,
                "score_equal": s_equal, "fitted_weights": equal.tolist(), "score_fitted": s_equal}
    best, s_best = equal.copy(), s_equal
    rng = np.random.default_rng(seed)
    for w in np.vstack([np.eye(m), rng.dirichlet(np.ones(m), size=int(n_random))]):
        s = float(score(w))
        if s > s_best + 1e-12:
            best, s_best = w, s
    from ..simplex import refine

    best, s_best = refine(score, best, s_best, steps, project=project)
    use = s_best >= s_equal + margin
    return {"weights": (best if use else equal).tolist(), "method": "fitted" if use else "equal",
            "score": s_best if use else s_equal, "score_equal": s_equal, "fitted_weights": best.tolist(),
            "score_fitted": s_best}


def fit_share(score: Callable[[float], float], grid: int = 101) -> tuple[float, float]:
    """The share w in [0, 1] (an even grid of ``grid`` values) with the best ``score(w)``; ties go
    to the w nearest 0.5, so a flat curve gives the even mix -> (w, score)."""
    ws = np.linspace(0.0, 1.0, int(grid))
    scores = np.array([score(float(w)) for w in ws])
    best = np.flatnonzero(scores >= np.nanmax(scores) - 1e-12)
    k = best[np.argmin(np.abs(ws[best] - 0.5))]
    return float(ws[k]), float(scores[k])


def fit_params(score: Callable[[dict], float], start: Mapping, *, margin: float, sweeps: int = 4) -> dict:
    """Coordinate search over :data:`GRIDS` from ``start``; ``start`` kept unless better by ``margin``."""
    start = dict(start)
    s_start = float(score(start))
    best, s_best = dict(start), s_start
    for _ in range(sweeps):
        changed = False
        for key in start:
            for v in GRIDS.get(key, ()):
                v = v if isinstance(v, str) else float(v)
                if v == best[key]:
                    continue
                cand = {**best, key: v}
                s = float(score(cand))
                if s > s_best + 1e-12:
                    best, s_best, changed = cand, s, True
        if not changed:
            break
    use = s_best >= s_start + margin
    return {"params": best if use else start, "method": "fitted" if use else "default", "score": s_best if use else s_start,
            "score_default": s_start, "fitted_params": best, "score_fitted": s_best}


# ------------------------------------------------------------------------------------ the fit
class OOFScorer:
    """Scores of the merge's parts on the OOF truth, matching done once per input."""

    def __init__(self, truth: Truth):
        self.truth = truth
        self.image_ids = truth.images["image_id"].tolist()
        self.study_ids = sorted(set(truth.images["study_id"]))
        self.study_map = StudyMAP([truth.labels[s] for s in self.study_ids])
        self.none = FullBoxAP(~truth.has_box)

    def study(self, study: pd.DataFrame) -> dict:
        t = study.set_index("study_id").reindex(self.study_ids)[STUDY_COLS].to_numpy(dtype=float)
        return self.study_map(t)

    def image(self, rows: pd.DataFrame) -> dict:
        r = rows.set_index("image_id").reindex(self.image_ids)
        op = OpacityAP(list(r["boxes"]), list(self.truth.images["boxes"]))()
        return {"opacity_ap": op, "none_ap": self.none(r["none"].to_numpy(dtype=float))}

    def all(self, study: pd.DataFrame, image: pd.DataFrame) -> dict:
        st = self.study(study)
        im = self.image(image)
        out = {"study_map": st["map"], **{f"ap_{c}": st[c] for c in STUDY_COLS}, **im}
        out["final"] = final(out["study_map"], im["opacity_ap"], im["none_ap"])
        return out


def settings_from_config(cfg: EnsembleConfig) -> Settings:
    rule = cfg.rule if cfg.rule != "auto" else "max"
    return Settings(study_weights=dict(cfg.study_weights), study_tta=cfg.study_tta, study_how=cfg.study_how,
                    image_evidence=float(cfg.image_evidence or 0.0), binary_weights=dict(cfg.binary_weights),
                    binary_tta=cfg.binary_tta, det_weights=dict(cfg.det_weights),
                    det_score_scale=dict(cfg.det_score_scale), det_tta=cfg.det_tta, wbf_folds=dict(cfg.wbf_folds),
                    wbf_models=dict(cfg.wbf_models),
                    rule=Rule.make(rule, cfg.rule_params if cfg.rule != "auto" else None).as_dict())


def fit(t: Tables, truth: Truth, cfg: EnsembleConfig, *, notes: list[str] | None = None) -> dict:
    """Fit the merge of ``cfg`` on the OOF tables ``t`` -> JSON-ready dict: ``settings`` (what
    :func:`merge.run_merge` takes), what was fitted and how, and the OOF scores of the defaults and
    of the fitted merge."""
    notes = notes if notes is not None else []
    s = settings_from_config(cfg)
    scorer = OOFScorer(truth)
    t = Tables(truth.images[["image_id", "study_id"]], t.study, t.binary, t.detect, t.study_priors, t.none_prior)
    log: dict = {}

    # study member weights (study mAP)
    members = {n: to_study(member_image_probs(f, s.study_tta), s.study_how) for n, f in t.study.items() if len(f)}
    names = sorted(members)
    if names and cfg.fit and cfg.fit_study_weights and not cfg.study_weights:
        # members aligned on the scored studies once (NaN where a member lacks a study)
        mats = np.stack([members[n].set_index("study_id").reindex(scorer.study_ids)[STUDY_COLS].to_numpy(float)
                         for n in names])
        prior = np.asarray(t.study_priors, dtype=float)

        def study_score(w):  # == weighted_mean + fill_studies, in numpy
            w = np.asarray(w, dtype=float)[:, None, None]
            ok = ~np.isnan(mats)
            den = (ok * w).sum(0)
            num = np.where(ok, mats, 0.0).__mul__(w).sum(0)
            p = np.where(den > 0, num / np.where(den > 0, den, 1.0), prior)
            return scorer.study_map(p)["map"]
        r = fit_simplex(study_score, len(names), margin=cfg.fit_margin)
        s.study_weights = dict(zip(names, r["weights"]))
        log["study_weights"] = {**r, "members": names}

    # binary member weights (none AP)
    bnames = sorted(n for n, f in t.binary.items() if len(f))
    if bnames and cfg.fit and cfg.fit_binary_weights and not cfg.binary_weights:
        per = {n: binary_none({n: t.binary[n]}, None, s.binary_tta).set_index("image_id")["p_none"]
               .reindex(scorer.image_ids) for n in bnames}
        mat = np.column_stack([per[n].to_numpy(dtype=float) for n in bnames])

        def bin_score(w):
            ok = ~np.isnan(mat)
            num = np.nansum(mat * w, axis=1)
            den = (ok * w).sum(axis=1)
            p = np.where(den > 0, num / np.where(den > 0, den, 1), 0.5)
            return scorer.none(p)
        r = fit_simplex(bin_score, len(bnames), margin=cfg.fit_margin)
        s.binary_weights = dict(zip(bnames, r["weights"]))
        log["binary_weights"] = {**r, "members": bnames}

    # image rule (opacity AP + none AP), on inputs fused once
    det, binary = image_inputs(t, s, oof=True)
    study0 = fill_studies(study_rows({n: member_image_probs(f, s.study_tta) for n, f in t.study.items() if len(f)},
                                     s.study_weights, s.study_how), scorer.study_ids, t.study_priors)
    ev = evidence(scorer.image_ids, det, binary, negatives(t.images, study0))
    opac = OpacityAP(ev.boxes, list(truth.images["boxes"]))

    def rule_score(preset: str) -> Callable[[dict], float]:
        def f(params: dict) -> float:
            none, a, mult = apply_rule(Rule(preset, params), ev)
            if a <= 0:
                return -math.inf
            return opac(a, mult) + scorer.none(none)
        return f

    presets = list(PRESETS) if cfg.rule == "auto" else [cfg.rule]
    rules = {}
    for p in presets:
        start = {**PRESETS[p], **(cfg.rule_params if cfg.rule == p else {})}
        rules[p] = fit_params(rule_score(p), start, margin=cfg.fit_margin) if cfg.fit else \
            {"params": start, "method": "fixed", "score": rule_score(p)(start)}
    # image evidence in the study negative (study mAP), per preset: its `none` moves the study part
    # too, so presets are compared on the whole final score
    fixed_a = float(cfg.image_evidence or 0.0)
    for p in presets:
        none, a, mult = apply_rule(Rule(p, rules[p]["params"]), ev)
        img_none = pd.DataFrame({"study_id": truth.images["study_id"].to_numpy(), "none": none})
        if cfg.image_evidence is None and cfg.fit and t.study:
            scores = [scorer.study(adjust_negative(study0, img_none, float(x)))["map"] for x in EVIDENCE_GRID]
            k = int(np.argmax(scores))
            use = scores[k] >= scores[0] + cfg.fit_margin
            rules[p]["image_evidence"] = {"value": float(EVIDENCE_GRID[k]) if use else 0.0,
                                          "method": "fitted" if use else "default",
                                          "grid": EVIDENCE_GRID.tolist(), "study_map": scores}
            study_map = scores[k] if use else scores[0]
        else:
            rules[p]["image_evidence"] = {"value": fixed_a, "method": "config"}
            study_map = scorer.study(adjust_negative(study0, img_none, fixed_a))["map"]
        rules[p]["final"] = final(study_map, opac(a, mult), scorer.none(none))
    chosen = max(presets, key=lambda p: (-math.inf if rules[p]["final"] is None or math.isnan(rules[p]["final"])
                                         else rules[p]["final"], -presets.index(p)))
    s.rule = {"preset": chosen, "params": rules[chosen]["params"]}
    s.image_evidence = rules[chosen]["image_evidence"]["value"]
    log["rules"] = rules
    log["rule"] = s.rule
    log["image_evidence"] = rules[chosen]["image_evidence"]

    # the OOF score of the defaults and of the fitted merge: the same run_merge as on test
    default = settings_from_config(cfg)
    out = {"config": cfg.as_dict(), "settings": asdict(s), "fit": log, "notes": notes}
    for tag, st in (("default", default), ("fitted", s)):
        sd, im = run_merge(t, st, oof=True, notes=[] if tag == "default" else notes,
                           det=det if _same_fusion(st, s) else None, binary=binary if st.binary_weights == s.binary_weights else None)
        out[f"oof_{tag}"] = scorer.all(sd, im)
    return _json_ready(out)


def _same_fusion(a: Settings, b: Settings) -> bool:
    keys = ("det_weights", "det_score_scale", "det_tta", "wbf_folds", "wbf_models")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def _json_ready(obj):
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save(result: dict, out_dir: str | Path, oof_study: pd.DataFrame | None = None,
         oof_image: pd.DataFrame | None = None) -> Path:
    """``out_dir/ensemble_fit.json`` (+ the OOF tables the fit scored)."""
    from .rules import image_csv_frame

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if oof_study is not None:
        write_csv(oof_study, out / "oof_ensemble_study.csv")
    if oof_image is not None:
        write_csv(image_csv_frame(oof_image), out / "oof_ensemble_image.csv")
    return write_json(out / FIT_JSON, result, indent=1)  # the inference kernel reads it: atomically


def load_settings(path: str | Path) -> Settings:
    """Settings from a saved fit (``ensemble_fit.json``)."""
    data = json.loads(Path(path).read_text())
    return Settings.from_dict(data["settings"])
