"""The ensemble's steps of the inference kernel (``siimcovid.inference`` calls them in order):

1. :func:`find_members`: every study, binary and detector fold under the inputs, chosen by the
   ensemble config variant; a named member that is absent is reported.
2. :func:`fitted_settings`: the merge fitted on the members' own out-of-fold tables (their
   ``oof.csv``) against the train preprocess output's truth, saved as ``ensemble_fit.json``; or a
   saved fit (``cv-report``'s) when one is given.
3. :func:`probe_budget`: one fold of each member timed on a few test images; the projection for
   the hidden test set is printed against the 9-hour limit BEFORE the full prediction.
4. :func:`predict_members`: each member's folds predict the test images (the stages' own
   predictors, :mod:`.predictors`); a member that fails is reported and left out.
5. :func:`merge_test`: :func:`merge.run_merge` on the test tables: one study row per sample
   study, one image row per sample image; rows no member covers (an undecodable DICOM) get the
   priors, counted and reported.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import reraise_interrupts
from ..layout import META_CSV, read_errors
from ..log import get_logger
from ..runs import fold_index, src_size
from .budget import HIDDEN_TEST_IMAGES, Projection, Timing, project, warn_if_over, write_budget
from .config import EnsembleConfig
from .fit import FIT_JSON, Truth, fit, load_settings, read_truth, save, settings_from_config
from .members import Member, collect, select
from .merge import Settings, Tables, priors_from_truth, run_merge
from .predictors import MemberUnavailable, predict, time_member
from .rules import image_csv_frame

KIND_KEYS = {"study": "study_members", "binary": "binary_members", "detect": "det_members"}


def find_members(roots: Sequence[str] | None, cfg: EnsembleConfig, problems: list[str], *,
                 fold_dirs: Sequence[Path] | None = None) -> dict[str, dict[str, Member]]:
    """The members of ``cfg`` under ``roots`` (or among ``fold_dirs``, already found)."""
    found = collect(roots, problems, splits=("oof",), fold_dirs=fold_dirs)
    return {k: select(found[k], getattr(cfg, KIND_KEYS[k]), k, problems) for k in KIND_KEYS}


def sizes_needed(members: dict[str, dict[str, Member]]) -> set[int]:
    out = set()
    for ms in members.values():
        for m in ms.values():
            for d in m.folds.values():
                s = src_size(d)
                if s:
                    out.add(s)
    return out


def read_train_truth(train_pre: Path) -> Truth:
    return read_truth(train_pre)[0]


def fitted_settings(members: dict[str, dict[str, Member]], train_pre: Path | None, cfg: EnsembleConfig, out: Path,
                    problems: list[str], fit_json: str | Path | None = None) -> tuple[Settings, dict]:
    """The merge settings: a saved fit when given, else fitted now on the members' OOF tables
    (``cfg.fit``), else the config's values. -> (settings, info)."""
    log = get_logger()
    if fit_json:
        s = load_settings(fit_json)
        log.info("ensemble: merge settings from %s (rule %s)", fit_json, s.rule)
        return s, {"source": str(fit_json)}
    if not cfg.fit or train_pre is None:
        if cfg.fit:
            problems.append("ensemble: no train preprocess output (the OOF truth): merge NOT fitted, config values used")
        return settings_from_config(cfg), {"source": "config"}
    truth = read_train_truth(train_pre)
    truth = truth.restrict({k for ms in members.values() for m in ms.values() for k in m.oof}, problems)
    t = Tables(truth.images[["image_id", "study_id"]],
               {n: list(m.oof.values()) for n, m in members["study"].items() if m.oof},
               {n: list(m.oof.values()) for n, m in members["binary"].items() if m.oof},
               {n: list(m.oof.values()) for n, m in members["detect"].items() if m.oof})
    labels = [truth.labels[s] for s in sorted(set(truth.images["study_id"]))]
    t.study_priors, t.none_prior = priors_from_truth(labels, truth.has_box)
    notes: list[str] = []
    result = fit(t, truth, cfg, notes=notes)
    save(result, out)
    log.info("ensemble: fitted on OOF: rule %s, OOF final %.4f (defaults %.4f) -> %s", result["settings"]["rule"],
             result["oof_fitted"]["final"] or float("nan"), result["oof_default"]["final"] or float("nan"),
             Path(out) / FIT_JSON)
    return Settings.from_dict(result["settings"]), {"source": "fitted", "oof_fitted": result["oof_fitted"],
                                                    "oof_default": result["oof_default"], "notes": notes}


def probe_budget(members: dict[str, dict[str, Member]], pre_test: Path, work: Path, options: dict, problems: list[str],
                 *, n_images: int = HIDDEN_TEST_IMAGES, overhead_per_image: float = 0.0,
                 n_small: int = 1, n_large: int = 9) -> tuple[Projection, list[Timing]]:
    log = get_logger()
    timings = []
    for kind, ms in members.items():
        for name, m in ms.items():
            if not m.folds:
                continue
            try:
                timings.append(time_member(kind, name, [m.folds[k] for k in sorted(m.folds)], pre_test, work,
                                           options.get(kind, {}), n_small=n_small, n_large=n_large))
            except BaseException as exc:  # noqa: BLE001 - a member that cannot be timed is predicted anyway
                reraise_interrupts(exc)
                problems.append(f"budget: {kind}:{name} could not be timed ({type(exc).__name__}: {exc})")
    p = project(timings, n_images=n_images, overhead_per_image=overhead_per_image)
    warn_if_over(p, log)
    write_budget(Path(work) / "budget.json", timings, p)
    return p, timings


def predict_members(members: dict[str, dict[str, Member]], pre_test: Path, options: dict,
                    problems: list[str]) -> tuple[dict[str, dict[str, list[pd.DataFrame]]], dict]:
    """kind -> member -> its folds' test tables; a member that cannot predict is reported and left out."""
    log = get_logger()
    out: dict[str, dict[str, list[pd.DataFrame]]] = {k: {} for k in KIND_KEYS}
    info: dict = {}
    for kind, ms in members.items():
        for name, m in ms.items():
            dirs = [m.folds[k] for k in sorted(m.folds)]
            try:
                tables, inf = predict(kind, dirs, pre_test, options.get(kind, {}))
            except MemberUnavailable as exc:
                problems.append(f"MEMBER LEFT OUT {kind}:{name}: {exc}")
                log.error("MEMBER LEFT OUT %s:%s: %s", kind, name, exc)
                continue
            except BaseException as exc:  # noqa: BLE001 - the other members still make a submission
                reraise_interrupts(exc)
                problems.append(f"MEMBER LEFT OUT {kind}:{name}: {type(exc).__name__}: {exc}")
                log.error("MEMBER LEFT OUT %s:%s: %s: %s", kind, name, type(exc).__name__, exc)
                continue
            info[f"{kind}:{name}"] = inf
            if not tables:
                problems.append(f"MEMBER LEFT OUT {kind}:{name}: no fold predicted ({inf.get('skipped')})")
                log.error("MEMBER LEFT OUT %s:%s: no fold predicted", kind, name)
                continue
            if len(tables) < len(dirs):
                problems.append(f"{kind}:{name}: {len(dirs) - len(tables)} of {len(dirs)} folds skipped")
            out[kind][name] = tables
    return out, info


def merge_test(tables: dict[str, dict[str, list[pd.DataFrame]]], settings: Settings, images: pd.DataFrame,
               study_ids: Sequence[str], priors: Sequence[float], none_prior: float,
               notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """-> (study predictions CSV frame, image predictions CSV frame, the image ids no member saw:
    their rows are the prior) covering every given id."""
    t = Tables(images[["image_id", "study_id"]].astype(str), tables["study"], tables["binary"], tables["detect"],
               list(priors), float(none_prior), list(study_ids))
    study, image = run_merge(t, settings, oof=False, notes=notes)
    return study, image_csv_frame(image), image.loc[image["prior"], "image_id"].tolist()


def test_images(pre_test: Path, sample_image_ids: Sequence[str]) -> pd.DataFrame:
    """image_id, study_id of every sample image: the test meta's rows, the study of a failed DICOM
    from its path (``test/<study>/<series>/<image>.dcm``), ``?`` when unknown."""
    pre_test = Path(pre_test)
    rows = {}
    meta_path = pre_test / META_CSV
    if meta_path.is_file():
        m = pd.read_csv(meta_path, dtype=str)
        rows.update(dict(zip(m["image_id"], m["study_id"])))
    e = read_errors(pre_test)
    if len(e):
        for dicom, iid in zip(e.get("dicom", []), e.get("image_id", [])):
            parts = Path(dicom).parts
            if iid and iid not in rows and len(parts) >= 3:
                rows[iid] = parts[-3]
    return pd.DataFrame({"image_id": list(sample_image_ids),
                         "study_id": [rows.get(i, "?") for i in sample_image_ids]})


def summary_json(path: Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=1, default=str))


def train_priors(data_dir: Path) -> tuple[list[float], float]:
    """Class priors and the `none` share of the competition's train CSVs (the fallback rows)."""
    from ..baseline import class_priors, none_fraction
    from ..data import IMAGE_CSV, STUDY_CSV, read_image_csv, read_study_csv

    return (class_priors(read_study_csv(Path(data_dir) / STUDY_CSV)).tolist(),
            float(none_fraction(read_image_csv(Path(data_dir) / IMAGE_CSV))))


def run(members: dict[str, dict[str, Member]], *, pre_test: Path, train_pre: Path | None, data_dir: Path, out: Path,
        cfg: EnsembleConfig, sample_studies: Sequence[str], sample_images: Sequence[str], problems: list[str],
        fit_json: str | Path | None = None, options: dict | None = None, budget_probe: bool = True,
        overhead_per_image: float = 0.0, image_fallback: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Steps 2-5 after the test preprocess -> (study predictions CSV frame, image predictions CSV
    frame, info). ``image_fallback``: image rows (image predictions CSV) used when no detector and
    no binary member predicted (the small learner's), instead of rules applied to study evidence alone."""
    log = get_logger()
    options = dict(options or {})
    out = Path(out)
    info: dict = {"members": {k: {n: sorted(m.folds) for n, m in ms.items()} for k, ms in members.items()}}
    settings, info["settings_source"] = fitted_settings(members, train_pre, cfg, out, problems, fit_json)
    info["settings"] = settings.__dict__
    if budget_probe and any(members.values()):
        proj, _ = probe_budget(members, pre_test, out / "work", options, problems,
                               overhead_per_image=overhead_per_image)
        info["budget"] = proj.as_dict()
    t0 = time.time()
    tables, info["predict"] = predict_members(members, pre_test, options, problems)
    info["predict_seconds"] = round(time.time() - t0, 2)
    priors, none_prior = train_priors(data_dir)
    notes: list[str] = []
    images = test_images(pre_test, sample_images)
    study, image, info["prior_images"] = merge_test(tables, settings, images, sample_studies, priors, none_prior,
                                                    notes)
    if not tables["detect"] and not tables["binary"] and image_fallback is not None:
        notes.append("no detector or binary member predicted: image rows from the fallback image predictor")
        image = image_fallback
        info["image_source"] = "fallback"
    else:
        info["image_source"] = "ensemble"
    info["notes"] = notes
    for n in notes:
        log.warning("ensemble: %s", n)
    return study, image, info


def members_from_folds(kind: str, fold_dirs: Sequence[Path]) -> dict[str, Member]:
    """Fold folders (found by the stage's own finder) grouped into members by their parent folder."""
    out: dict[str, Member] = {}
    for d in fold_dirs:
        d = Path(d)
        m = out.setdefault(d.parent.name, Member(kind, d.parent.name))
        m.folds[fold_index(d)] = d
    return out


def tables_by_member(images: pd.DataFrame) -> dict[str, list[pd.DataFrame]]:
    """A predictor's rows of several folds (``source`` = the fold folder) -> member -> fold tables."""
    out: dict[str, list[pd.DataFrame]] = {}
    if images is None or not len(images):
        return out
    for src, g in images.groupby("source", sort=True):
        out.setdefault(Path(src).parent.name, []).append(g.drop(columns="source").reset_index(drop=True))
    return out
