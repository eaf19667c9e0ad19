"""One merge for OOF and test: members' tables + fitted settings -> study rows and image rows.

The inference kernel runs :func:`run_merge` on the members' test tables; ``cv-report`` and the
fitting run the very same function on their out-of-fold tables (``oof=True``), so the local score
is the score of the merge that writes the submission.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..data import STUDY_CLASSES
from .rules import (STUDY_COLS, Rule, adjust_negative, binary_none, evidence, fuse_detectors, image_rows,
                    member_image_probs, study_rows)


@dataclass
class Settings:
    """Everything the merge needs besides the tables (a config resolved by fitting)."""
    study_weights: dict = field(default_factory=dict)
    study_tta: bool = True
    study_how: str = "mean"
    image_evidence: float = 0.0
    binary_weights: dict = field(default_factory=dict)
    binary_tta: bool = True
    det_weights: dict = field(default_factory=dict)
    det_score_scale: dict = field(default_factory=dict)
    det_tta: bool = True
    wbf_folds: dict = field(default_factory=dict)
    wbf_models: dict = field(default_factory=dict)
    rule: dict = field(default_factory=lambda: {"preset": "max", "params": {}})

    @classmethod
    def from_dict(cls, d: Mapping) -> "Settings":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Tables:
    """Members' fold tables of one split (name -> list of fold tables), and the images to predict
    (``images``: image_id, study_id). ``study_priors``: the four class priors for studies no study
    member predicts."""
    images: pd.DataFrame
    study: Mapping[str, Sequence[pd.DataFrame]] = field(default_factory=dict)
    binary: Mapping[str, Sequence[pd.DataFrame]] = field(default_factory=dict)
    detect: Mapping[str, Sequence[pd.DataFrame]] = field(default_factory=dict)
    study_priors: Sequence[float] = (0.25, 0.25, 0.25, 0.25)
    none_prior: float = 0.5
    study_ids: Sequence[str] | None = None  # studies to write (default: the images' studies)


def fill_studies(study: pd.DataFrame, study_ids: Sequence[str], priors: Sequence[float],
                 notes: list[str] | None = None) -> pd.DataFrame:
    """Every study of ``study_ids`` once; a study without a (finite) row gets the priors, reported."""
    have = study.dropna(subset=STUDY_COLS)
    have = have[have["study_id"].isin(set(study_ids))]
    known = set(have["study_id"])
    missing = [s for s in dict.fromkeys(study_ids) if s not in known]
    if missing:
        if notes is not None:
            notes.append(f"{len(missing)} of {len(set(study_ids))} studies have no study-member prediction: "
                         f"class priors used (e.g. {missing[:3]})")
        fill = pd.DataFrame([[s, *priors] for s in missing], columns=["study_id", *STUDY_COLS])
        have = pd.concat([have, fill], ignore_index=True) if len(have) else fill
    return have.reset_index(drop=True)


def study_part(t: Tables, s: Settings, notes: list[str]) -> tuple[pd.DataFrame, set]:
    """(study rows, the studies a member predicted)."""
    members = {n: member_image_probs(f, s.study_tta) for n, f in t.study.items() if len(f)}
    study = study_rows(members, s.study_weights, s.study_how)
    predicted = set(study.dropna(subset=STUDY_COLS)["study_id"].astype(str))
    ids = list(t.study_ids) if t.study_ids is not None else t.images["study_id"].astype(str).tolist()
    filled = fill_studies(study, ids, t.study_priors, notes)
    return filled, predicted


def image_inputs(t: Tables, s: Settings, *, oof: bool) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(fused detector boxes, binary P(none)), either None when no member of that kind."""
    det = fuse_detectors(t.detect, tta=s.det_tta, oof=oof, wbf_folds=s.wbf_folds, wbf_models=s.wbf_models,
                         score_scale=s.det_score_scale, model_weights=s.det_weights) if t.detect else None
    binary = binary_none(t.binary, s.binary_weights, s.binary_tta) if t.binary else None
    return det, binary


def negatives(images: pd.DataFrame, study: pd.DataFrame) -> dict[str, float]:
    neg = dict(zip(study["study_id"].astype(str), study["negative"].astype(float)))
    return {str(i): neg.get(str(s), np.nan) for i, s in zip(images["image_id"], images["study_id"])}


def run_merge(t: Tables, s: Settings, *, oof: bool = False, notes: list[str] | None = None,
              det: pd.DataFrame | None = None, binary: pd.DataFrame | None = None,
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """-> (study rows: study_id + four classes; image rows: image_id, boxes ((N, 5) arrays, original
    px), none, prior (True: no member saw the image)). ``det`` / ``binary``: already fused inputs
    (the fit computes them once)."""
    notes = notes if notes is not None else []
    if not t.study:
        notes.append("no study member: every study row is the class priors")
    if not t.detect:
        notes.append("no detector member: images get no boxes")
    if not t.binary:
        notes.append("no binary member: rules that use binary P(none) substitute it")
    study, predicted = study_part(t, s, notes)
    if det is None and binary is None:
        det, binary = image_inputs(t, s, oof=oof)
    neg = negatives(t.images, study)
    unknown = [i for i, v in neg.items() if v != v]
    if unknown:  # an image whose study is unknown or not written: the prior negative
        notes.append(f"{len(unknown)} image(s) of an unknown study: prior negative used (e.g. {unknown[:3]})")
        neg.update({i: float(t.study_priors[0]) for i in unknown})
    ev = evidence(t.images["image_id"].astype(str).tolist(), det, binary, neg)
    img = image_rows(Rule.make(s.rule["preset"], s.rule.get("params")), ev, notes)
    # An image no member saw (an undecodable test DICOM, every member missing): the `none` prior,
    # not a rule applied to priors.
    blind = ~ev.has_det & np.isnan(ev.binary) & ~t.images["study_id"].astype(str).isin(predicted).to_numpy()
    img["prior"] = blind
    if blind.any():
        img.loc[blind, "none"] = t.none_prior
        notes.append(f"{int(blind.sum())} image(s) without any member prediction: no boxes, none = the prior "
                     f"{t.none_prior:.3f} (e.g. {list(img.loc[blind, 'image_id'][:3])})")
    img_none = img.assign(study_id=t.images["study_id"].astype(str).to_numpy())[["study_id", "none"]]
    # a study no member predicted keeps its priors
    img_none = img_none[img_none["study_id"].isin(predicted)]
    study = adjust_negative(study, img_none, float(s.image_evidence or 0.0))
    return study[["study_id", *STUDY_COLS]], img


def priors_from_truth(labels: Sequence[int], has_box: Sequence[bool]) -> tuple[list[float], float]:
    """Class priors and the `none` share from training labels."""
    labels = np.asarray(labels, dtype=int)
    counts = np.bincount(labels[labels >= 0], minlength=len(STUDY_CLASSES)).astype(float)
    pri = (counts / counts.sum()).tolist() if counts.sum() else [0.25] * 4
    hb = np.asarray(has_box, dtype=bool)
    return pri, float(1.0 - hb.mean()) if len(hb) else 0.5
