"""A pre-training stage's output: its folder, its manifest, and the one reader (``init_from``).

    P/pretrain/<kind>/<variant>/<weights file>             kind: det | cls
    P/pretrain/<kind>/<variant>/siimcovid-pretrain.json    the manifest, written last (complete)

A training config names where its weights start with ``init_from``: the name of a pre-training
stage (``pretrain-det``, ``pretrain-cls``), whose output must then be mounted (the graph wires the
kernel source and sets the parameter together), or a path to a weights file. The manifest says
what was trained (variant, backbone, sources, score) so a fold refuses weights of another model
instead of loading a partial match silently.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import UserError

MANIFEST = "siimcovid-pretrain.json"
ROOT = "pretrain"
STAGES = {"pretrain-det": "det", "pretrain-cls": "cls"}  # stage name (init_from) -> kind


class InitError(UserError):
    """``init_from`` names weights that are not there or are of another model."""


def out_dir(workdir: str | os.PathLike, kind: str, variant: str) -> Path:
    return Path(workdir) / ROOT / kind / variant


def write_manifest(folder: str | os.PathLike, *, kind: str, variant: str, weights: str, sources: list[str],
                   from_scratch: bool, **extra: Any) -> Path:
    """``weights``: the file's name inside ``folder``. ``from_scratch``: the stage itself started from
    random initialisation (a fold it starts then trains every layer, as from scratch)."""
    folder = Path(folder)
    if not (folder / weights).is_file():
        raise FileNotFoundError(f"{folder / weights}: the weights the manifest would name are not there")
    body = {"kind": kind, "variant": variant, "weights": weights, "sources": list(sources),
            "from_scratch": bool(from_scratch), **extra}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(body, indent=1, default=str) + "\n")
    os.replace(tmp, folder / MANIFEST)
    return folder / MANIFEST


def read_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / MANIFEST
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InitError(f"{path}: not a pre-training manifest ({exc})") from None
    for key in ("kind", "variant", "weights"):
        if key not in body:
            raise InitError(f"{path}: no {key!r}")
    return body


class Init(dict):
    """The weights a run starts from: ``path`` (the file) plus the manifest's keys (empty for a bare path)."""

    @property
    def path(self) -> Path:
        return Path(self["path"])

    @property
    def from_scratch(self) -> bool:
        return bool(self.get("from_scratch", False))


def find_init(init_from: str | os.PathLike | None, stage: str, match: Mapping[str, Any] | None = None,
              what: str = "this run") -> Init | None:
    """The weights ``init_from`` names, None when it names none.

    ``stage``: the pre-training stage whose output this kind of run may start from (``pretrain-det``);
    ``match``: manifest keys that must agree (``{"variant": ...}`` for a detector fold, ``{"backbone":
    ...}`` for a classifier), so weights of another model are refused by name, not half-loaded."""
    if init_from in (None, "", False):
        return None
    text = str(init_from)
    if text in STAGES:
        if text != stage:
            raise InitError(f"{what}: init_from={text!r}, but this kind of run starts from {stage!r} outputs")
        from ..paths import find_all

        kind = STAGES[text]
        found = [(f, read_manifest(f)) for f in find_all(MANIFEST)]
        found = [(f, m) for f, m in found if m["kind"] == kind]
        if not found:
            raise InitError(f"{what}: init_from={text!r} but no {text} output is mounted (no {MANIFEST} of kind "
                            f"{kind!r} under the inputs): run that kernel and attach it "
                            f"(`kaggle plan --include {text}` wires it)")
        want = dict(match or {})
        hits = [(f, m) for f, m in found if all(m.get(k) == v for k, v in want.items())]
        if not hits:
            have = ", ".join(f"{f} ({', '.join(f'{k}={m.get(k)}' for k in want)})" for f, m in found)
            raise InitError(f"{what}: init_from={text!r} wants {want}, but the mounted outputs are of another "
                            f"model: {have}; pre-train the same model or set init_from to a weights file")
        if len(hits) > 1:
            raise InitError(f"{what}: {len(hits)} {text} outputs match {want}: "
                            f"{', '.join(str(f) for f, _ in hits)}; attach one")
        folder, manifest = hits[0]
        path = folder / manifest["weights"]
        if not path.is_file():
            raise InitError(f"{path}: named by {folder / MANIFEST} but missing")
        return Init(manifest, path=str(path), folder=str(folder))
    path = Path(text)
    if path.is_dir() and (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        return Init(manifest, path=str(path / manifest["weights"]), folder=str(path))
    if not path.is_file():
        raise InitError(f"{what}: init_from={text!r} is neither a stage ({', '.join(STAGES)}) nor a weights file")
    return Init(path=str(path))
