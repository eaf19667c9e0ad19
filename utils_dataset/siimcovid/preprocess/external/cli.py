"""``python -m siimcovid external {rsna,vinbigdata,nih,chexpert} --src DIR --out DIR [--size S ...]``."""
from __future__ import annotations

import argparse
import importlib
from functools import partial
from pathlib import Path

from . import base

SOURCES = ("rsna", "vinbigdata", "nih", "chexpert")


def adapter(source: str):
    """The adapter module of a source (NAME, MARKER, Config, read, optional fuse)."""
    if source not in SOURCES:
        raise ValueError(f"unknown external source {source!r}: one of {list(SOURCES)}")
    return importlib.import_module(f"{__package__}.{source}")


def convert(source: str, cfg) -> dict:
    """Read ``source`` as published and write it in the preprocess layout under ``cfg.out``."""
    mod = adapter(source)
    src = base.locate(mod.MARKER, cfg.src, cfg.handle)
    items, errors = mod.read(src, cfg)
    fuse = partial(mod.fuse, cfg=cfg) if hasattr(mod, "fuse") else None
    return base.run(source, cfg, items, errors, fuse=fuse, src_dir=src)


def convert_sources(sources, out: str | Path, *, src_dirs=None, sizes=(512,), exclude_like=None, limit: int = 0,
                    overrides=None) -> tuple[dict[str, dict], dict[str, str]]:
    """The preprocess-external kernel: every source of ``sources`` found (under ``src_dirs`` or the
    inputs) written to ``out/<source>``. -> (counts per converted source, why each other one was
    skipped: not attached). Nothing found at all is an error: a kernel that converted nothing must
    not look complete."""
    from ...errors import UserError
    from ...variants import load

    src_dirs, overrides = src_dirs or {}, overrides or {}
    counts: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for source in sources:
        settings = {**overrides.get(source, {}), "src": src_dirs.get(source) or "", "out": f"{out}/{source}",
                    "sizes": list(sizes), "limit": limit, **({"exclude_like": exclude_like} if exclude_like else {})}
        cfg = load("external", source, settings, adapter(source).Config)
        try:
            counts[source] = convert(source, cfg)["counts"]
        except FileNotFoundError as exc:  # the source is not attached to this kernel
            skipped[source] = str(exc)
    if not counts:
        raise UserError("no external source found: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return counts, skipped


def cli(argv: list[str]) -> int:
    """External chest X-ray set -> the preprocess layout (exit 0 when every listed image converted
    or was left out on purpose, 1 when some failed or are missing, 2 for a user error)."""
    from ...variants import add_schema_args, load, overrides_from_args

    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SOURCES:
        ap = argparse.ArgumentParser(prog="python -m siimcovid external", description=cli.__doc__)
        ap.add_argument("source", choices=SOURCES)
        ap.parse_args(argv[:1] or ["--help"])
    source, rest = argv[0], argv[1:]
    mod = adapter(source)
    ap = argparse.ArgumentParser(prog=f"python -m siimcovid external {source}", description=mod.__doc__)
    add_schema_args(ap, mod.Config, stage="external", aliases={"--size": "sizes"})
    a = ap.parse_args(rest)
    cfg = load("external", a.config or source, overrides_from_args(a), mod.Config, default_name=source)
    summary = convert(source, cfg)
    c = summary["counts"]
    print(f"external {source}: {c['converted']} converted, {c['failed']} failed, {c['lateral']} lateral and "
          f"{c['duplicate']} duplicates left out -> {cfg.out}"
          + (f" (see {Path(cfg.out) / base.ERRORS_CSV})" if c["failed"] else ""))
    return 1 if c["failed"] else 0
