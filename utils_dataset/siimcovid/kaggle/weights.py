"""The weights kernel: every pretrained file the members start from, fetched once on Kaggle.

Kernels run with internet off, so nothing may download at training time. This kernel (internet
ON, like the wheels kernel) fetches the Keras ImageNet notop weights of every classifier variant
that names one (``backbone_weights`` / ``sm_encoder_weights``) and the COCO checkpoint of every
detector variant (mmdet's model-zoo URL of the config it inherits, :mod:`siimcovid.detect.zoo`),
checks each against its published hash where one is published, and writes them in the layout of
:mod:`siimcovid.pretrained` (which also reads it). The training kernels list this kernel in
``kernel_sources``: a classifier finds its file by name under /kaggle/input as before, a detector
with ``siim.weights="auto"`` loads its COCO checkpoint.

The TF Hub backbones of the study stage are Kaggle Models (``model_sources``), mounted by Kaggle
itself: not fetched here.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..pretrained import KERAS_FILES, WeightsError, rel_path, write_manifest

# The classifier fields that name a Keras weights file, per stage.
KERAS_FIELDS = {"binary": ("backbone_weights",), "study": ("sm_encoder_weights",)}


@dataclass
class Item:
    """One file the weights kernel provides."""

    file: str  # the file name (Keras's own, or the model zoo's)
    kind: str  # keras | mmdet
    url: str
    hash: str | None = None  # sha256 (64 hex) or md5 (32 hex), as published; None: not published
    used_by: list[str] = field(default_factory=list)  # stage/variant names

    @property
    def rel(self) -> str:
        return rel_path(self.kind, self.file)


def _variant_keys(stage: str, name: str) -> dict:
    from ..variants import read_variant, variant_path

    return read_variant(variant_path(stage, name))


def catalogue(stages: Iterable[str] = ("binary", "study", "det"),
              skip: Callable[[str], bool] = lambda name: name.endswith("_cpu")) -> list[Item]:
    """Every file the shipped variants start from (CPU-sized variants are skipped: they train from
    random init by design). A Keras file name without a known URL is a :class:`WeightsError`."""
    from ..detect.zoo import det_base, zoo_url
    from ..variants import list_variants

    items: dict[str, Item] = {}

    def add(file: str, kind: str, url: str, digest: str | None, user: str) -> None:
        items.setdefault(file, Item(file, kind, url, digest)).used_by.append(user)

    for stage in stages:
        for name in list_variants(stage):
            if skip(name) or (stage == "binary" and name == "ensemble"):  # binary/ensemble.yaml: no member
                continue
            if stage == "det":
                base = det_base(name)
                if base:
                    url = zoo_url(base)
                    add(url.rsplit("/", 1)[-1], "mmdet", url, None, f"det/{name}")
                continue
            keys = _variant_keys(stage, name)
            for f in (Path(str(keys[k])).name for k in KERAS_FIELDS[stage] if keys.get(k)):
                if f not in KERAS_FILES:
                    raise WeightsError(f"{stage} variant {name}: weights file {f!r} has no known URL; add it to "
                                       f"siimcovid.pretrained.KERAS_FILES (known: {sorted(KERAS_FILES)})")
                add(f, "keras", *KERAS_FILES[f], f"{stage}/{name}")
    return sorted(items.values(), key=lambda i: (i.kind, i.file))


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: str | None) -> str:
    """The file's sha256; a :class:`WeightsError` when ``expected`` (sha256 or md5) differs."""
    sha = _digest(path, "sha256")
    if expected:
        got = sha if len(expected) == 64 else _digest(path, "md5")
        if got != expected.lower():
            raise WeightsError(f"{path}: hash {got} != published {expected} (a truncated or changed download)")
    return sha


def _download(url: str, dest: Path) -> None:
    import urllib.request

    from tqdm.auto import tqdm

    tmp = dest.with_name(f".{dest.name}.part")
    with urllib.request.urlopen(url, timeout=120) as resp, open(tmp, "wb") as fh:  # noqa: S310 - fixed https URLs
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, mininterval=5) as bar:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                fh.write(chunk)
                bar.update(len(chunk))
    os.replace(tmp, dest)


def fetch(out_dir: str | os.PathLike, items: Iterable[Item] | None = None,
          download: Callable[[str, Path], None] = _download, dry_run: bool = False) -> dict:
    """Download every item into ``out_dir`` (a file already there with the right hash is kept), verify
    it, and write the manifest last. ``dry_run``: the manifest lists the plan, no file is fetched (the
    local runs: they train from random initialisation)."""
    out = Path(out_dir)
    items = list(catalogue() if items is None else items)
    files, problems = {}, []
    for it in items:
        dest = out / it.rel
        row = {**asdict(it), "path": it.rel}
        if not dry_run:
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                if not (dest.is_file() and _ok(dest, it.hash)):
                    t0 = time.time()
                    download(it.url, dest)
                    row["seconds"] = round(time.time() - t0, 1)
                row["sha256"] = verify(dest, it.hash)
                row["bytes"] = dest.stat().st_size
            except Exception as exc:  # noqa: BLE001 - every file is tried; all failures are listed at the end
                problems.append(f"{it.file} ({it.url}): {type(exc).__name__}: {exc}")
                continue
        files[it.file] = row
    if problems:
        raise WeightsError("the weights kernel could not provide:\n  " + "\n  ".join(problems))
    manifest = {"format": 1, "dry_run": dry_run, "stand_in": False, "files": files}
    write_manifest(out, manifest)
    return manifest


def _ok(path: Path, expected: str | None) -> bool:
    try:
        verify(path, expected)
        return True
    except WeightsError:
        return False


def stand_ins(out_dir: str | os.PathLike, items: Iterable[Item] | None = None) -> dict:
    """What the push rehearsal mounts in place of this kernel's output (it has no network): every file
    under its real name, holding no weights (an empty Keras weights file, an empty mmdet checkpoint),
    and a manifest that says ``stand_in: true``. Loading one leaves the model at random init."""
    import h5py
    import numpy as np
    import torch

    out = Path(out_dir)
    files = {}
    for it in (catalogue() if items is None else items):
        dest = out / it.rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if it.kind == "keras":
            with h5py.File(dest, "w") as f:  # Keras's legacy h5 weights layout with no layers
                f.attrs["layer_names"] = np.array([], dtype="S1")
                f.attrs["backend"] = b"tensorflow"
                f.attrs["keras_version"] = b"2.20.0"
        else:
            torch.save({"state_dict": {}, "meta": {"stand_in": True, "url": it.url}}, dest)
        files[it.file] = {**asdict(it), "path": it.rel, "sha256": _digest(dest, "sha256"),
                          "bytes": dest.stat().st_size}
    manifest = {"format": 1, "dry_run": False, "stand_in": True, "files": files}
    write_manifest(out, manifest)
    return manifest
