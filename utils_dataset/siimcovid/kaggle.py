"""Kaggle glue: kernel metadata rendered from ``kernel-metadata/`` templates, offline wheel
installs inside kernels, and thin wrappers over the ``kaggle`` command.

``import kaggle`` (2.2.5) authenticates at import time and prints login instructions when no
credentials exist, so this module never imports it: it drives the ``kaggle`` command.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

# Keys the kaggle client reads (2.2.5). enable_internet defaults to TRUE when absent, so a
# rendered file always carries it explicitly.
METADATA_KEYS = (
    "id", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu",
    "enable_tpu", "enable_internet", "dataset_sources", "competition_sources",
    "kernel_sources", "model_sources", "keywords", "docker_image_pinning_type", "machine_shape",
)
REQUIRED_KEYS = ("id", "title", "code_file", "language", "kernel_type", "enable_internet")
WHEELS_MARKER = "siimcovid-wheels.txt"


def repo_root() -> Path:
    """The checkout holding notebooks/ and kernel-metadata/ (this file is utils_dataset/siimcovid/kaggle.py)."""
    return Path(__file__).resolve().parents[2]


@dataclass
class Kernel:
    """One rendered kernel: its metadata and the notebook it pushes (with parameters injected)."""

    slug: str
    metadata: dict[str, Any]
    notebook: Path
    params: dict[str, Any] = field(default_factory=dict)
    template: str = ""


def _fill(value: Any, subs: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**subs)
    if isinstance(value, list):
        return [_fill(v, subs) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, subs) for k, v in value.items()}
    return value


def _coerce(value: str) -> Any:
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def load_templates(meta_dir: str | os.PathLike | None = None) -> dict[str, dict]:
    meta_dir = Path(meta_dir) if meta_dir else repo_root() / "kernel-metadata"
    out = {}
    for p in sorted(meta_dir.glob("*.json")):
        try:
            out[p.stem] = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not valid JSON: {exc}") from exc
    if not out:
        raise FileNotFoundError(f"{meta_dir}: no kernel templates (*.json)")
    return out


def expand(templates: dict[str, dict], user: str, root: Path | None = None) -> list[Kernel]:
    """Templates -> kernels, one per combination of each template's ``repeat`` values."""
    root = root or repo_root()
    kernels = []
    for name, tpl in templates.items():
        render = tpl.get("_render", {})
        repeat = render.get("repeat", {})
        keys = list(repeat)
        for values in product(*(repeat[k] for k in keys)) if keys else [()]:
            subs = {"user": user, **dict(zip(keys, values))}
            meta = _fill({k: v for k, v in tpl.items() if k != "_render"}, subs)
            unknown = set(meta) - set(METADATA_KEYS)
            if unknown:
                raise ValueError(f"kernel-metadata/{name}.json: unknown keys {sorted(unknown)}")
            missing = [k for k in REQUIRED_KEYS if k not in meta]
            if missing:
                raise ValueError(f"kernel-metadata/{name}.json: missing keys {missing}")
            params = {k: _coerce(str(v)) for k, v in _fill(render.get("params", {}), subs).items()}
            slug = meta["id"].split("/", 1)[1]
            kernels.append(Kernel(slug, meta, root / render["notebook"], params, name))
    return kernels


def inject_parameters(nb_path: Path, params: dict[str, Any]) -> dict:
    """The notebook as JSON with ``params`` appended to its ``parameters`` cell: Kaggle runs a
    kernel without arguments, so per-fold values are baked into the pushed copy."""
    nb = json.loads(Path(nb_path).read_text())
    if not params:
        return nb
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            extra = "".join(f"{k} = {v!r}\n" for k, v in params.items())
            cell["source"] = src.rstrip("\n") + "\n# rendered by `python -m siimcovid kernels render`\n" + extra
            return nb
    raise ValueError(f"{nb_path}: no cell tagged 'parameters'")


def render(user: str, out_dir: str | os.PathLike, meta_dir: str | os.PathLike | None = None) -> list[Kernel]:
    """Write ``out_dir/<slug>/kernel-metadata.json`` + the notebook, ready for ``kaggle kernels push -p``."""
    out_dir = Path(out_dir)
    kernels = expand(load_templates(meta_dir), user)
    for k in kernels:
        if not k.notebook.exists():
            raise FileNotFoundError(f"{k.template}: notebook {k.notebook} does not exist")
        d = out_dir / k.slug
        d.mkdir(parents=True, exist_ok=True)
        (d / "kernel-metadata.json").write_text(json.dumps(k.metadata, indent=2) + "\n")
        nb = inject_parameters(k.notebook, k.params)
        (d / k.metadata["code_file"]).write_text(json.dumps(nb, indent=1) + "\n")
    return kernels


def dataset_dir(out_dir: str | os.PathLike, user: str) -> Path:
    """utils_dataset/ with the user's id filled in, ready for ``kaggle datasets create/version -r zip``."""
    src = repo_root() / "utils_dataset"
    dst = Path(out_dir) / "siimcovid-utils"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    meta = json.loads((src / "dataset-metadata.json").read_text())
    meta["id"] = meta["id"].replace("KAGGLE_USER", user)
    (dst / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return dst


def install_offline_wheels(marker: str = WHEELS_MARKER) -> bool:
    """Inside a Kaggle kernel with internet off: pip-install the wheels kernel's output.

    No-op (returns False) outside Kaggle or when the wheels are not mounted; the wheels kernel
    writes ``marker`` listing the requirements it downloaded.
    """
    from .paths import KAGGLE_INPUT, find_input, on_kaggle

    if not on_kaggle():
        return False
    try:
        folder = find_input(marker, hint=KAGGLE_INPUT)
    except FileNotFoundError:
        print(f"siimcovid: no {marker} under {KAGGLE_INPUT}; using the image's packages", file=sys.stderr)
        return False
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(folder),
           "-r", str(folder / marker), "--quiet"]
    subprocess.run(cmd, check=True)
    return True


# Not in the Kaggle Python image (or pinned differently): downloaded by the wheels kernel so the
# internet-off kernels install the same versions the local set-up uses.
KAGGLE_WHEELS = (
    "segmentation-models==1.0.1", "efficientnet==1.0.0", "image-classifiers==1.0.0",
    "tensorflow-hub==0.16.1", "pydicom==3.0.2", "pylibjpeg==2.1.0", "pylibjpeg-libjpeg==2.5.0",
    "pylibjpeg-openjpeg==2.6.0", "pylibjpeg-rle==2.2.0", "pyjpegls==1.5.1", "dicomsdl==0.109.4",
    "ensemble-boxes==1.0.9", "mmengine==0.10.7", "mmdet==3.3.0", "addict==2.4.0", "yapf==0.43.0",
    "terminaltables==3.1.10",
)


def requirement_pins(path: str | os.PathLike | None = None) -> dict[str, str]:
    """name -> pinned requirement line, from requirements.txt (the single source of versions)."""
    path = Path(path) if path else repo_root() / "requirements.txt"
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and "==" in line:
            pins[line.split("==")[0].strip().lower()] = line
    return pins


def build_wheels(out_dir: str | os.PathLike, packages: tuple[str, ...] = KAGGLE_WHEELS,
                 build_mmcv: bool = True, dry_run: bool = False) -> list[list[str]]:
    """Download (or, for mmcv, build against the running torch) every wheel the offline kernels
    need into ``out_dir`` and write the marker that :func:`install_offline_wheels` looks for.
    Returns the pip commands run (all of them, also when ``dry_run``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    cmds = [[*pip, "download", "--no-deps", "-d", str(out), *packages]]
    if build_mmcv:
        # mmcv's compiled ops must match the kernel's torch/CUDA: built, not downloaded.
        cmds.append([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), "mmcv==2.1.0"])
    for cmd in cmds:
        if not dry_run:
            env = {**os.environ, "MMCV_WITH_OPS": "1"}
            subprocess.run(cmd, check=True, env=env)
    reqs = list(packages) + (["mmcv==2.1.0"] if build_mmcv else [])
    (out / WHEELS_MARKER).write_text("\n".join(reqs) + "\n")
    return cmds


def kaggle_cmd(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("kaggle") or str(Path(sys.executable).with_name("kaggle"))
    return subprocess.run([exe, *args], check=check, text=True, capture_output=True)


def cli(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m siimcovid kernels",
                                 description="Render kernel metadata from kernel-metadata/*.json and push.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="write build/kernels/<slug>/ for every kernel")
    r.add_argument("--user", default=os.environ.get("KAGGLE_USERNAME", "KAGGLE_USER"))
    r.add_argument("--out", default="build/kernels")
    p = sub.add_parser("push", help="render, then `kaggle kernels push` (needs credentials)")
    p.add_argument("--user", default=os.environ.get("KAGGLE_USERNAME"))
    p.add_argument("--out", default="build/kernels")
    p.add_argument("--only", nargs="*", default=None, help="slugs (or prefixes) to push")
    p.add_argument("--accelerator", default=None, help="e.g. NvidiaTeslaT4, TpuV5E8")
    s = sub.add_parser("status", help="`kaggle kernels status` for every kernel")
    s.add_argument("--user", default=os.environ.get("KAGGLE_USERNAME"))
    d = sub.add_parser("dataset", help="stage utils_dataset/ for `kaggle datasets create/version -r zip`")
    d.add_argument("--user", default=os.environ.get("KAGGLE_USERNAME", "KAGGLE_USER"))
    d.add_argument("--out", default="build")
    a = ap.parse_args(argv)

    if a.cmd in ("push", "status") and not a.user:
        ap.error("--user (or KAGGLE_USERNAME) is required")
    if a.cmd == "dataset":
        dst = dataset_dir(a.out, a.user)
        print(f"{dst}\n  first time: kaggle datasets create -p {dst} -r zip\n"
              f"  later:      kaggle datasets version -p {dst} -m 'update' -r zip")
        return 0
    if a.cmd == "status":
        failed = 0
        for k in expand(load_templates(), a.user):
            res = kaggle_cmd("kernels", "status", k.metadata["id"], check=False)
            print((res.stdout or res.stderr).strip())
            failed += res.returncode != 0
        return 1 if failed else 0
    kernels = render(a.user, a.out)
    for k in kernels:
        print(f"{Path(a.out) / k.slug}  ({k.metadata['id']}, internet={k.metadata['enable_internet']})")
    if a.cmd == "push":
        for k in kernels:
            if a.only and not any(k.slug == o or k.slug.startswith(o) or k.template == o for o in a.only):
                continue
            args = ["kernels", "push", "-p", str(Path(a.out) / k.slug)]
            if a.accelerator:
                args += ["--accelerator", a.accelerator]
            res = kaggle_cmd(*args, check=False)
            print((res.stdout + res.stderr).strip())
            if res.returncode:
                return res.returncode
    return 0
