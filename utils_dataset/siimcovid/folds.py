"""K folds stratified on the study class and grouped by patient (or study), and the one split of a
preprocess table into a fold's training and validation rows (:func:`split_fold`).

The assignment is computed here (:func:`assign_folds`), not by scikit-learn: its
StratifiedGroupKFold splits differently from one release to the next (1.6.1 on Kaggle's image
and 1.9.1 locally give other folds, 1.6.1's badly balanced), and folds.csv must be the same
wherever it is computed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import UserError
from .layout import META_CSV

FOLDS_CSV = "folds.csv"


class FoldSplitError(UserError, ValueError):
    """A preprocess table that cannot give fold k's split (no fold column, images without a fold,
    no such fold). A ValueError too, as the stages' input checks raise."""


def split_fold(meta: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows) of ``fold`` from a preprocess table (``layout.read_meta``):
    the train split's rows of the other folds and of this fold, index reset, order kept.

    Every train image must have a fold: preprocess writes -1 for a set of a single patient group
    (and where it had no fold table), and such a set cannot be cross-validated, so it is an error
    here rather than rows silently trained on in every fold."""
    train = meta[meta["split"] == "train"]
    folds = train["fold"].astype(int) if "fold" in train else pd.Series(-1, index=train.index)
    if (folds < 0).any():
        bad = train.loc[folds < 0, "image_id"].head(3).tolist()
        raise FoldSplitError(f"{META_CSV}: {int((folds < 0).sum())} train images without a fold, e.g. {bad} "
                             f"(preprocess with folds.csv; a set of a single patient group has no folds)")
    fold = int(fold)
    if fold not in set(folds):
        raise FoldSplitError(f"fold {fold} not in {META_CSV} folds {sorted(set(folds))}")
    return train[folds != fold].reset_index(drop=True), train[folds == fold].reset_index(drop=True)


def make_folds(
    studies: pd.DataFrame,
    n_folds: int = 5,
    seed: int = 42,
    patient_col: str | None = "patient_id",
    allow_fewer: bool = False,
) -> pd.DataFrame:
    """``studies``: one row per study with ``study_id`` and ``label``; optional patient ids.

    Returns study_id, label, group, fold. Every image of a study (and, where PatientID is
    known, every study of a patient) lands in one fold, so out-of-fold scores are honest.
    Fewer groups than folds raise ValueError unless ``allow_fewer`` (a subset preprocessed to
    try the pipeline): then one fold per group, or, with a single group, no fold (-1), logged.
    """
    if studies["study_id"].duplicated().any():
        raise ValueError("make_folds: duplicated study_id")
    df = studies[["study_id", "label"]].copy()
    if patient_col and patient_col in studies.columns:
        groups = studies[patient_col].fillna(studies["study_id"]).astype(str)
        groups = groups.where(groups.str.len() > 0, studies["study_id"])
    else:
        groups = studies["study_id"].astype(str)
    df["group"] = groups.to_numpy()
    n_groups = df["group"].nunique()
    if n_groups < n_folds:
        if not allow_fewer:
            raise ValueError(f"make_folds: {n_groups} groups cannot fill {n_folds} folds (pass fewer folds)")
        from .log import get_logger

        if n_groups < 2:
            get_logger().warning("folds: %d patient group(s) cannot make 2 folds; no fold assigned (fold -1): "
                                 "this set can be preprocessed and predicted, not cross-validated", n_groups)
            df["fold"] = -1
            return df.sort_values("study_id", ignore_index=True)
        get_logger().warning("folds: only %d patient groups; %d folds instead of %d", n_groups, n_groups, n_folds)
        n_folds = n_groups
    df["fold"] = assign_folds(df["label"].to_numpy(), df["group"].to_numpy(), n_folds, seed)
    return df.sort_values("study_id", ignore_index=True)


def assign_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int = 42) -> np.ndarray:
    """Fold of each row (0..n_folds-1): every row of a group in one fold, each class spread evenly.

    Greedy and deterministic: groups go largest first (equal sizes in an order drawn from
    ``seed``: numpy's legacy RandomState, whose stream numpy keeps fixed across releases), each to
    the fold where it least raises the per-class imbalance, i.e. the fold holding the fewest
    studies of the group's classes (the squared distance of every fold's class counts to an even
    share grows least there); ties go to the fold with fewer studies, then the lower index. An
    empty fold always ties for best, so with at least ``n_folds`` groups no fold stays empty."""
    labels = np.asarray(labels)
    names, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    classes, label_idx = np.unique(labels, return_inverse=True)
    per_group = np.zeros((len(names), len(classes)), dtype=np.int64)  # studies of each class per group
    np.add.at(per_group, (inverse, label_idx), 1)
    shuffled = np.random.RandomState(seed).permutation(len(names))
    # largest first; among equal sizes, the seeded order (a stable sort keeps it)
    order = shuffled[np.argsort(-per_group[shuffled].sum(axis=1), kind="stable")]
    counts = np.zeros((n_folds, len(classes)), dtype=np.int64)
    group_fold = np.empty(len(names), dtype=int)
    for g in order:
        cost = counts @ per_group[g]  # studies of this group's classes already in each fold
        k = min(range(n_folds), key=lambda f: (cost[f], counts[f].sum(), f))
        counts[k] += per_group[g]
        group_fold[g] = k
    return group_fold[inverse]


def save_folds(folds: pd.DataFrame, path: str | os.PathLike) -> Path:
    from .atomic import write_csv

    return write_csv(folds[["study_id", "label", "group", "fold"]], path)  # a reader never sees half a table


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    df = pd.read_csv(path, dtype={"study_id": str, "group": str})
    missing = {"study_id", "fold"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    return df


def read_patient_ids(paths: "pd.Series", problems: list[str] | None = None) -> list[str]:
    """PatientID of each DICOM, read from the header only.

    An unreadable file gives "" (its study is then grouped alone) and a line naming it in
    ``problems`` (when given) and in the log; the rest goes on."""
    import pydicom

    from .log import get_logger

    out = []
    for p in paths:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["PatientID"])
            out.append(str(getattr(ds, "PatientID", "") or ""))
        except Exception as exc:  # any unreadable header is recorded, never a crash
            msg = f"{p}: cannot read PatientID ({type(exc).__name__}: {exc}); its study is grouped alone"
            get_logger().warning("folds: %s", msg)
            if problems is not None:
                problems.append(msg)
            out.append("")
    return out


def folds_for_data(data_dir: str | os.PathLike, n_folds: int = 5, seed: int = 42, patients: bool = True,
                   allow_fewer: bool = False) -> pd.DataFrame:
    """Fold table for a competition-shaped folder (train CSVs + train/ DICOM tree)."""
    from .data import IMAGE_CSV, STUDY_CSV, read_image_csv, read_study_csv, scan_dicoms

    data_dir = Path(data_dir)
    studies = read_study_csv(data_dir / STUDY_CSV)
    if patients:
        images = read_image_csv(data_dir / IMAGE_CSV)[["image_id", "study_id"]]
        dicoms = scan_dicoms(data_dir / "train")[["image_id", "path"]]
        im = images.merge(dicoms, on="image_id", how="inner").drop_duplicates("study_id")
        im["patient_id"] = read_patient_ids(im["path"])
        studies = studies.merge(im[["study_id", "patient_id"]], on="study_id", how="left")
    return make_folds(studies, n_folds=n_folds, seed=seed, patient_col="patient_id" if patients else None,
                      allow_fewer=allow_fewer)


def cli(argv: list[str]) -> int:
    """Write folds.csv: K folds stratified on the study class, grouped by patient."""
    import argparse

    from .clihelp import HelpFormatter
    from .data import STUDY_CSV, find_data_dir

    ap = argparse.ArgumentParser(
        prog="python -m siimcovid folds", description=cli.__doc__,
        formatter_class=HelpFormatter,
        epilog=f"Writes one CSV (study_id,label,group,fold), by default DATA/{FOLDS_CSV}, and prints the studies "
               "per fold and class. PatientID comes from the train DICOM headers (unless --no-patients).")
    ap.add_argument("--data", required=True, help=f"competition folder (train CSVs + train/), or the one folder "
                                                  f"below it holding {STUDY_CSV}")
    ap.add_argument("--out", default=None, help=f"output CSV (default: DATA/{FOLDS_CSV})")
    ap.add_argument("--k", type=int, default=5, help="number of folds (>= 2)")
    ap.add_argument("--seed", type=int, default=42, help="seed of the group shuffle: another seed, other folds")
    ap.add_argument("--no-patients", action="store_true", help="group by study only (skip DICOM headers)")
    a = ap.parse_args(argv)
    if a.k < 2:
        raise UserError(f"--k {a.k}: need at least 2 folds")
    data_dir = find_data_dir(a.data, marker=STUDY_CSV)
    out = Path(a.out) if a.out else data_dir / FOLDS_CSV
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; pass the CSV file to write, e.g. {out / FOLDS_CSV}")
    try:
        folds = folds_for_data(data_dir, a.k, a.seed, patients=not a.no_patients)
    except (FileNotFoundError, ValueError) as exc:  # a data folder of the wrong shape, too few groups
        raise UserError(str(exc)) from None
    out = save_folds(folds, out)
    counts = folds.groupby(["fold", "label"]).size().unstack(fill_value=0)
    print(f"wrote {out}: {len(folds)} studies, {folds['group'].nunique()} groups\n{counts}")
    return 0
