"""Find inputs the same way under /kaggle/input and on a local folder.

Kaggle mounts kernel outputs, datasets, competitions and models under /kaggle/input, and
newer layouts nest them (notebooks/<user>/<slug>, datasets/<owner>/<slug>, ...). Nothing
here assumes a fixed depth: inputs are found by a marker file they contain.
"""
from __future__ import annotations

import os
from pathlib import Path

KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")


def on_kaggle() -> bool:
    return KAGGLE_INPUT.is_dir() and "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def search_roots(hint: str | os.PathLike | None = None) -> list[Path]:
    roots: list[Path] = []
    if hint:
        roots.append(Path(hint))
    env = os.environ.get("SIIM_INPUT")
    if env:
        roots.extend(Path(p) for p in env.split(os.pathsep) if p)
    if KAGGLE_INPUT.is_dir():
        roots.append(KAGGLE_INPUT)
    return roots


def find_input(marker: str, hint: str | os.PathLike | None = None, max_depth: int = 6) -> Path:
    """The first folder under the search roots that holds ``marker`` (a file or folder name,
    or a relative path such as ``models/best.weights.h5``). ``hint`` is tried first and may be
    the folder itself or any ancestor of it."""
    tried = []
    for root in search_roots(hint):
        tried.append(str(root))
        if not root.exists():
            continue
        if (root / marker).exists():
            return root
        for dirpath, _dirs, _files in walk_inputs(root, max_depth):
            if (Path(dirpath) / marker).exists():
                return Path(dirpath)
    raise FileNotFoundError(
        f"no folder holding {marker!r} under {tried or ['(no roots: pass a path or set SIIM_INPUT)']}"
    )


def working_dir(default: str | os.PathLike = "work") -> Path:
    """Where a stage writes: /kaggle/working on Kaggle, else ``default`` (created)."""
    out = KAGGLE_WORKING if on_kaggle() else Path(default)
    out.mkdir(parents=True, exist_ok=True)
    return out


# A competition folder's DICOM tree (train/<study>/<series>/*.dcm: thousands of folders) sits
# within six levels of /kaggle/input; no input the package looks for is inside it.
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
