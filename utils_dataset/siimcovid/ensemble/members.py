"""The members of an ensemble: every trained fold found under the inputs, read and grouped.

A member is one trained model (a config variant: the fold folders' parent, ``W/<exp>/fold<k>/``)
of one stage. The stage is read from the fold's own prediction table, the one contract every
stage already keeps (:func:`siimcovid.tables.kind_of`: ``p_negative`` ... -> study classifier,
``p_none`` -> binary `none` classifier, ``boxes`` + ``boxes_notta`` -> detector). A fold whose table is missing
or broken is skipped and recorded; the other folds and members go on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import reraise_interrupts
from ..runs import OOF_CSV, TEST_CSV, fold_index
from ..tables import KINDS, header, kind_of, read


@dataclass
class Member:
    kind: str
    name: str
    folds: dict[int, Path] = field(default_factory=dict)
    oof: dict[int, pd.DataFrame] = field(default_factory=dict)
    test: dict[int, pd.DataFrame] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


def find_fold_dirs(roots: Sequence[str | os.PathLike] | None, problems: list[str]) -> list[Path]:
    """Every fold folder under ``roots`` (``runs.find_runs``, the project's one finder)."""
    from ..runs import find_runs

    return find_runs(roots, problems=problems)


# run.json ``stage`` (siimcovid.log.run_header) of each kind's training command
STAGE_KIND = {"study-train": "study", "binary-train": "binary", "det-train": "detect"}


def fold_kind(fold_dir: Path) -> str | None:
    """The kind of a fold folder: from its oof.csv / test.csv header, else its run.json stage;
    None when neither tells (a fold copied with its weights only)."""
    import json

    d = Path(fold_dir)
    for name in (OOF_CSV, TEST_CSV):
        if (d / name).is_file():
            try:
                kind = kind_of(header(d / name))
            except (OSError, ValueError):
                kind = None
            if kind:
                return kind
    try:
        return STAGE_KIND.get(json.loads((d / "run.json").read_text()).get("stage"))
    except (OSError, ValueError, AttributeError):
        return None


def collect(roots: Sequence[str | os.PathLike] | None, problems: list[str], *,
            splits: Sequence[str] = ("oof", "test"), fold_dirs: Sequence[Path] | None = None,
            ) -> dict[str, dict[str, Member]]:
    """kind -> member name -> :class:`Member` with the readable fold tables of ``splits``, of every
    fold under ``roots`` (or of ``fold_dirs``, folds a caller already found)."""
    out: dict[str, dict[str, Member]] = {k: {} for k in KINDS}
    for d in (find_fold_dirs(roots, problems) if fold_dirs is None else fold_dirs):
        files = {"oof": d / OOF_CSV, "test": d / TEST_CSV}
        present = [files[s] for s in splits if files[s].is_file()]
        if not present:
            problems.append(f"{d}: no {' or '.join(files[s].name for s in splits)} (fold unfinished? skipped)")
            continue
        try:
            kind = kind_of(header(present[0]))
        except BaseException as exc:  # noqa: BLE001 - one broken fold never stops the others
            reraise_interrupts(exc)
            problems.append(f"{present[0]}: unreadable ({type(exc).__name__}: {exc}); fold skipped")
            continue
        if kind is None:
            problems.append(f"{present[0]}: not a study, binary or detector table (fold skipped)")
            continue
        k = fold_index(d)
        m = out[kind].setdefault(d.parent.name, Member(kind, d.parent.name))
        m.folds[k] = d
        for s in splits:
            if not files[s].is_file():
                problems.append(f"{m.key} fold {k}: no {files[s].name}")
                continue
            try:
                getattr(m, s)[k] = read(kind, files[s], oof=s == "oof")
            except BaseException as exc:  # noqa: BLE001
                reraise_interrupts(exc)
                problems.append(f"{m.key} fold {k}: {files[s].name} skipped ({type(exc).__name__}: {exc})")
    return out


def select(found: dict[str, Member], wanted: Sequence[str] | None, kind: str, problems: list[str]) -> dict[str, Member]:
    """The members a config names (None: all found); a named member that is absent is reported."""
    if wanted is None:
        return dict(found)
    missing = [n for n in wanted if n not in found]
    for n in missing:
        problems.append(f"{kind} member {n!r}: not found among {sorted(found) or 'none'} (left out; "
                        "its rows come from the other members or the priors)")
    return {n: found[n] for n in wanted if n in found}


def summary(members: dict[str, dict[str, Member]]) -> dict:
    return {kind: {n: {"folds": sorted(m.folds), "oof_folds": sorted(m.oof), "test_folds": sorted(m.test)}
                   for n, m in ms.items()} for kind, ms in members.items()}
