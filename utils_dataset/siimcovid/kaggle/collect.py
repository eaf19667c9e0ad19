"""The collect kernel: every mounted kernel output copied into one tree.

When a kernel would read more kernels than is practical (graph.MAX_FAN_IN), the graph puts one
``siimcovid-collect-<stage>`` kernel between a stage's kernels and their reader. Fold outputs are
disjoint trees (``<exp>/fold<k>/...``), so they merge without clashes; a file that two inputs hold
with different contents is kept from the first and the other copy lands in ``_conflicts/<slug>/``.
"""
from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path

from ..paths import KAGGLE_INPUT, search_roots, working_dir

SUMMARY = "collect.json"


def kernel_outputs(root: Path) -> list[Path]:
    """Kernel output folders under one input root: ``notebooks/<owner>/<slug>`` (nested layout) or
    top-level folders that are neither the utils dataset nor a competition (flat layout)."""
    nested = root / "notebooks"
    if nested.is_dir():
        return sorted(p for owner in nested.iterdir() if owner.is_dir() for p in owner.iterdir() if p.is_dir())
    skip = {"competitions", "datasets", "models"}
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name not in skip
                  and not (p / "siimcovid" / "__init__.py").exists() and not (p / "sample_submission.csv").exists())


def collect(out_dir: str | os.PathLike | None = None, inputs: list[Path] | None = None) -> dict:
    """Copy every kernel output found into ``out_dir`` (default: the working folder) and write
    ``collect.json`` (inputs, file count, conflicts)."""
    out = Path(out_dir) if out_dir else working_dir("work")
    out.mkdir(parents=True, exist_ok=True)
    if inputs is None:
        inputs = [p for root in search_roots() if root.is_dir() for p in kernel_outputs(root)]
    if not inputs:
        raise FileNotFoundError(f"no kernel outputs mounted under {[str(r) for r in search_roots()] or KAGGLE_INPUT}")
    files, conflicts = 0, []
    for src in inputs:
        for dirpath, dirs, names in os.walk(src, followlinks=True):
            dirs.sort()
            rel_dir = Path(dirpath).relative_to(src)
            for name in sorted(names):
                rel = rel_dir / name
                if rel_dir == Path(".") and (name.startswith("__") or name == SUMMARY):
                    continue  # Kaggle's own __notebook__/__results__ files of each input
                dst = out / rel
                if dst.exists() and not filecmp.cmp(dst, Path(dirpath) / name, shallow=False):
                    conflicts.append(str(rel))
                    dst = out / "_conflicts" / src.name / rel
                elif dst.exists():
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(dirpath) / name, dst)
                files += 1
    summary = {"inputs": [str(p) for p in inputs], "files": files, "conflicts": conflicts}
    (out / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    return summary
