"""The push state file: what was pushed, which version, how it ended. A half-finished
``kaggle push`` resumes from it; ``kaggle status`` and ``kaggle pull`` read it.

Format (JSON, written atomically after every change; never holds credentials)::

    {"format": 1, "user": "alice",
     "dataset": {"id": "alice/siimcovid-utils", "hash": "<sha256 of the staged folder>", "uploaded_at": 0.0},
     "kernels": {"siimcovid-preprocess": {
         "id": "alice/siimcovid-preprocess", "version": 3,
         "status": "pushed | running | complete | error | timeout",
         "hash": "<sha256 of the rendered folder>", "upstream": {"siimcovid-wheels": 2},
         "pushed_at": 0.0, "finished_at": 0.0, "message": "failure message, if any"}}}

``upstream`` records the version of every kernel this one read when it was pushed: a kernel is up
to date when it completed, its rendered folder is unchanged and its inputs are the same versions.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import UserError

FORMAT = 1
DONE = "complete"
IN_FLIGHT = ("pushed", "running")


def folder_hash(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (sorted): a rendered kernel or the
    staged utils dataset."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


class State:
    def __init__(self, path: Path, user: str):
        self.path = Path(path)
        self.data: dict[str, Any] = {"format": FORMAT, "user": user, "dataset": {}, "kernels": {}}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except ValueError as exc:
                raise UserError(f"{self.path}: not a state file ({exc}); move it away to start afresh") from exc
            if data.get("format") != FORMAT:
                raise UserError(f"{self.path}: state format {data.get('format')!r}, expected {FORMAT}")
            if data.get("user") != user:
                raise UserError(f"{self.path} records the kernels of {data.get('user')!r}, not {user!r}: "
                                "use another --out")
            self.data = data

    @property
    def kernels(self) -> dict[str, dict]:
        return self.data["kernels"]

    def kernel(self, slug: str) -> dict:
        return self.kernels.get(slug, {})

    def version(self, slug: str) -> int | None:
        return self.kernel(slug).get("version")

    def is_complete(self, slug: str) -> bool:
        return self.kernel(slug).get("status") == DONE

    def update(self, slug: str, **fields: Any) -> None:
        self.kernels.setdefault(slug, {}).update(fields)
        self.save()

    def set_dataset(self, **fields: Any) -> None:
        self.data["dataset"] = {**self.data.get("dataset", {}), **fields}
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)
