"""Find inputs the same way under /kaggle/input and on a local folder.

Kaggle mounts kernel outputs, datasets, competitions and models under /kaggle/input, and
newer layouts nest them (notebooks/<user>/<slug>, datasets/<owner>/<slug>, ...). Nothing
here assumes a fixed depth: inputs are found by a marker file they contain.

The rules (``find_input``):

* A path you pass (``hint``, e.g. ``--data DIR``) is the only place looked at: the folder itself
  when it holds the marker, else the folders below it that do. No such folder, no marker below
  it, or several folders holding it are errors; there is no fallback to SIIM_INPUT, because a
  typo would otherwise silently read another data set.
* Without a path: SIIM_INPUT (os.pathsep-separated roots), then /kaggle/input. The first root
  with a match wins; several matches inside that root are an error listing them.
* The search does not descend into a folder that holds the marker (a competition folder's DICOM
  tree is never walked looking for a second copy of its own marker).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")


class InputNotFoundError(UserError, FileNotFoundError):
    """No folder holds the marker. Both a UserError (one line, exit 2) and a FileNotFoundError,
    so callers that treat a missing optional input as "not there" keep working."""


class AmbiguousInputError(UserError):
    """Several folders hold the marker: picking one silently could mix data sets."""


def on_kaggle() -> bool:
    return KAGGLE_INPUT.is_dir() and "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def search_roots(hint: str | os.PathLike | None = None) -> list[Path]:
    """The roots :func:`find_input` looks under: ``hint`` alone when given, else SIIM_INPUT's
    entries and then /kaggle/input (when it exists)."""
    if hint:
        return [Path(hint)]
    roots: list[Path] = []
    env = os.environ.get("SIIM_INPUT")
    if env:
        roots.extend(Path(p) for p in env.split(os.pathsep) if p)
    if KAGGLE_INPUT.is_dir():
        roots.append(KAGGLE_INPUT)
    return roots


def _holders(root: Path, marker: str, max_depth: int) -> list[Path]:
    """Every folder at most ``max_depth`` levels below ``root`` (root included) holding ``marker``,
    sorted; nothing below a holder is searched."""
    if (root / marker).exists():
        return [root]
    found: list[Path] = []
    for dirpath, dirs, _files in walk_inputs(root, max_depth):
        here = Path(dirpath)
        if here != root and (here / marker).exists():
            found.append(here)
            dirs[:] = []
            continue
    return sorted(found)


def find_input(marker: str, hint: str | os.PathLike | None = None, max_depth: int = 6) -> Path:
    """The one folder holding ``marker`` (a file or folder name, or a relative path such as
    ``models/best.weights.h5``): under ``hint`` only when given (the folder itself or an
    ancestor of it), else under SIIM_INPUT and then /kaggle/input (the first root with a match).

    Raises :class:`InputNotFoundError` (a FileNotFoundError) when nothing matches and
    :class:`AmbiguousInputError` when several folders do, both naming the fix."""
    if hint:
        root = Path(hint)
        if not root.exists():
            raise InputNotFoundError(f"{root}: no such folder (it should hold {marker!r}, or a folder below it should)")
        if not root.is_dir():
            raise InputNotFoundError(f"{root}: not a folder (pass the folder that holds {marker!r})")
        return _one(_holders(root, marker, max_depth), marker, root)
    roots = search_roots(None)
    for root in roots:
        if root.is_dir():
            found = _holders(root, marker, max_depth)
            if found:
                return _one(found, marker, root)
    where = [str(r) for r in roots] or "no roots (pass a path or set SIIM_INPUT)"
    raise InputNotFoundError(f"no folder holding {marker!r} under {where}: pass the folder that holds it")


def find_all(marker: str, hint: str | os.PathLike | None = None, max_depth: int = 6) -> list[Path]:
    """Every folder holding ``marker`` under ``hint`` or else the search roots (SIIM_INPUT, then
    /kaggle/input), for inputs mounted more than once (one pre-training output per variant, one
    external set per source); [] when none."""
    out: list[Path] = []
    for root in search_roots(hint):
        if root.is_dir():
            out += [p for p in _holders(root, marker, max_depth) if p not in out]
    return out


def _one(found: list[Path], marker: str, root: Path) -> Path:
    if not found:
        raise InputNotFoundError(f"{root}: no folder holding {marker!r} at or below it: pass the folder that holds it")
    if len(found) > 1:
        names = ", ".join(str(p) for p in found)
        raise AmbiguousInputError(f"{root}: {len(found)} folders hold {marker!r} ({names}): pass the one you mean")
    return found[0]


def working_dir(default: str | os.PathLike = "work") -> Path:
    """Where a stage writes: /kaggle/working on Kaggle, else ``default`` (created)."""
    out = KAGGLE_WORKING if on_kaggle() else Path(default)
    out.mkdir(parents=True, exist_ok=True)
    return out


# A competition folder's DICOM tree (train/<study>/<series>/*.dcm: thousands of folders) sits
# within six levels of /kaggle/input; no input the package looks for is inside it.
COMPETITION = "siim-covid19-detection"  # the competition's slug (/kaggle/input/competitions/<slug>)
COMPETITION_FILES = ("train_study_level.csv", "train_image_level.csv", "sample_submission.csv")
DICOM_SPLITS = ("train", "test")


def walk_inputs(root: str | os.PathLike, max_depth: int = 6):
    """``os.walk(root)`` in sorted order, down to ``max_depth`` levels below ``root`` (a model's
    version folder is 6 levels below /kaggle/input: models/<owner>/<model>/<framework>/
    <variation>/<version>), never entering a DICOM tree: the train/ and test/ folders beside a
    competition CSV, and the sub-folders of a folder holding .dcm files, are pruned. Yields
    os.walk's (dirpath, dirs, files); a caller may prune ``dirs`` further."""
    base_depth = len(Path(root).parts)
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        if len(Path(dirpath).parts) - base_depth >= max_depth or any(f.endswith(".dcm") for f in files):
            dirs[:] = []
        elif any(f in COMPETITION_FILES for f in files):
            dirs[:] = [d for d in dirs if d not in DICOM_SPLITS]
        dirs.sort()
        yield dirpath, dirs, files
