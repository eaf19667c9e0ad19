"""Kaggle glue: kernel metadata rendered from ``kernel-metadata/`` templates, the staged utils
dataset and the user name; the ``kaggle`` command group over them is :mod:`siimcovid.kaggle.cli`.

The ``kaggle`` command is driven through :mod:`siimcovid.kaggle.command` (never ``import
kaggle``: 2.2.5 authenticates at import time and prints login instructions); what kernels
install, and the wheels kernel, live in :mod:`siimcovid.kaggle.wheels`.

A template is a kernel-metadata.json plus a ``_render`` block the client never sees:
``notebook`` (the .ipynb pushed), ``repeat`` ({name: [values]}: one kernel per combination),
``params`` (written into the notebook's parameters cell), ``accelerators`` (the accelerator ids
``--accelerator`` may set for this kernel; absent: the kernel's accelerator is fixed).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from ..errors import UserError
from .wheels import KERNEL_REQUIREMENTS, WHEELS_MARKER, build_wheels, prepare_kernel  # noqa: F401

# Keys the kaggle client reads (2.2.5). enable_internet defaults to TRUE when absent, so a
# rendered file always carries it explicitly.
METADATA_KEYS = (
    "id", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu",
    "enable_tpu", "enable_internet", "dataset_sources", "competition_sources",
    "kernel_sources", "model_sources", "keywords", "docker_image", "docker_image_pinning_type",
    "machine_shape",
)
REQUIRED_KEYS = ("id", "title", "code_file", "language", "kernel_type", "enable_internet", "enable_gpu",
                 "enable_tpu")
PINNING_TYPES = ("original", "latest")  # the client refuses anything else
PLACEHOLDER_USER = "KAGGLE_USER"
WHEELS_SLUG = "siimcovid-wheels"
# The notebooks' bootstrap (docs/notebooks.md) calls this name.
install_offline_wheels = prepare_kernel


def accelerator_kind(acc: str) -> str:
    """gpu | tpu for a Kaggle accelerator id (NvidiaTeslaT4, NvidiaL4, TpuV5E8, ...)."""
    low = acc.lower()
    if low.startswith("tpu"):
        return "tpu"
    if low.startswith("nvidia") or low.startswith("gpu"):
        return "gpu"
    raise UserError(f"accelerator {acc!r}: use a Kaggle accelerator id such as NvidiaTeslaT4, NvidiaL4 or TpuV5E8")


def repo_root() -> Path:
    """The checkout holding notebooks/ and kernel-metadata/ (this file is utils_dataset/siimcovid/kaggle.py)."""
    return Path(__file__).resolve().parents[3]


@dataclass
class Kernel:
    """One rendered kernel: its metadata and the notebook it pushes (with parameters injected)."""

    slug: str
    metadata: dict[str, Any]
    notebook: Path
    params: dict[str, Any] = field(default_factory=dict)
    template: str = ""
    accelerators: tuple[str, ...] = ()  # ids --accelerator may choose for this kernel

    @property
    def accelerator(self) -> str:
        """What the kernel runs on, as the README's table says it: an id, "GPU", "TPU" or "CPU"."""
        m = self.metadata
        return m.get("machine_shape") or ("TPU" if m.get("enable_tpu") else "GPU" if m.get("enable_gpu") else "CPU")

    @property
    def uses_wheels(self) -> bool:
        """The wheels kernel and every kernel installing its output: they share one image."""
        return self.slug == WHEELS_SLUG or any(s.endswith(f"/{WHEELS_SLUG}") for s in self.metadata.get("kernel_sources", []))


def fill_placeholders(value: Any, subs: dict[str, Any]) -> Any:
    """``{name}`` placeholders in every string of a nested list / dict structure, filled from ``subs``."""
    if isinstance(value, str):
        return value.format(**subs)
    if isinstance(value, list):
        return [fill_placeholders(v, subs) for v in value]
    if isinstance(value, dict):
        return {k: fill_placeholders(v, subs) for k, v in value.items()}
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


def check_metadata(name: str, meta: dict[str, Any]) -> None:
    """What the kaggle client would refuse (or silently default) in the keys rendered here."""
    unknown = set(meta) - set(METADATA_KEYS)
    if unknown:
        raise ValueError(f"kernel-metadata/{name}.json: unknown keys {sorted(unknown)}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"kernel-metadata/{name}.json: missing keys {missing}")
    for key in ("enable_internet", "enable_gpu", "enable_tpu", "is_private"):
        if key in meta and not isinstance(meta[key], bool):
            raise ValueError(f"kernel-metadata/{name}.json: {key} must be true or false, got {meta[key]!r}")
    if meta["enable_gpu"] and meta["enable_tpu"]:
        raise ValueError(f"kernel-metadata/{name}.json: enable_gpu and enable_tpu are both true")
    pin = meta.get("docker_image_pinning_type")
    if pin is not None and pin not in PINNING_TYPES:
        raise ValueError(f"kernel-metadata/{name}.json: docker_image_pinning_type must be one of {PINNING_TYPES}")
    shape = meta.get("machine_shape")
    if shape and accelerator_kind(shape) != ("tpu" if meta["enable_tpu"] else "gpu" if meta["enable_gpu"] else None):
        raise ValueError(f"kernel-metadata/{name}.json: machine_shape {shape} disagrees with enable_gpu/enable_tpu")


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
            meta = fill_placeholders({k: v for k, v in tpl.items() if k != "_render"}, subs)
            check_metadata(name, meta)
            params = {k: _coerce(str(v)) for k, v in fill_placeholders(render.get("params", {}), subs).items()}
            slug = meta["id"].split("/", 1)[1]
            kernels.append(Kernel(slug, meta, root / render["notebook"], params, name,
                                  tuple(render.get("accelerators", ()))))
    return kernels


def choose(kernels: list[Kernel], accelerator: str | None = None, docker_image: str | None = None) -> list[Kernel]:
    """Apply the user's choices, each ONLY to the kernels it is meant for: ``accelerator`` to the
    kernels whose template lists it (the TensorFlow training folds), ``docker_image`` to the
    wheels kernel and every kernel installing its output (compiled wheels need the same image).

    TPU needs ``docker_image``: Kaggle's own TPU image ships tensorflow-cpu, which cannot use
    the TPU (the strategy guard would stop the kernel after its queue time)."""
    if accelerator:
        kind = accelerator_kind(accelerator)
        takers = [k for k in kernels if accelerator in k.accelerators]
        if not takers:
            offered = sorted({a for k in kernels for a in k.accelerators})
            raise UserError(f"no kernel takes --accelerator {accelerator}; the choices are {', '.join(offered) or 'none'}")
        if kind == "tpu" and not docker_image:
            raise UserError(f"--accelerator {accelerator} needs --docker-image IMAGE with a TPU-capable TensorFlow: "
                            "Kaggle's TPU image ships tensorflow-cpu, which cannot use the TPU")
        for k in takers:
            k.metadata.update(enable_gpu=kind == "gpu", enable_tpu=kind == "tpu", machine_shape=accelerator)
    if docker_image:
        for k in kernels:
            if k.uses_wheels:
                k.metadata["docker_image"] = docker_image
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
            cell["source"] = src.rstrip("\n") + "\n# rendered by `python -m siimcovid kaggle render`\n" + extra
            return nb
    raise ValueError(f"{nb_path}: no cell tagged 'parameters'")


def dataset_dir(out_dir: str | os.PathLike, user: str) -> Path:
    """utils_dataset/ with the user's id filled in, ready for ``kaggle datasets create/version -r zip``."""
    src = repo_root() / "utils_dataset"
    dst = Path(out_dir) / "siimcovid-utils"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    meta = json.loads((src / "dataset-metadata.json").read_text())
    meta["id"] = meta["id"].replace(PLACEHOLDER_USER, user)
    (dst / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return dst


def requirement_pins(path: str | os.PathLike | None = None) -> dict[str, str]:
    """name -> pinned requirement line, from requirements.txt (the single source of versions)."""
    path = Path(path) if path else repo_root() / "requirements.txt"
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and "==" in line:
            pins[line.split("==")[0].strip().lower()] = line
    return pins


def resolve_user(user: str | None, placeholder: bool = False, env: dict[str, str] | None = None) -> tuple[str, str]:
    """-> (user, where it came from): --user, KAGGLE_USERNAME, the user name in kaggle.json, or,
    only when asked (--placeholder-user), the placeholder to fill in later. Else a UserError:
    ids like KAGGLE_USER/... must never be written without a word."""
    from .command import CredentialsError, find_credentials

    env = os.environ if env is None else env
    if user:
        return user, "--user"
    if env.get("KAGGLE_USERNAME"):
        return env["KAGGLE_USERNAME"], "KAGGLE_USERNAME"
    try:
        creds = find_credentials(env)
    except CredentialsError:
        creds = None
    if creds and creds.user:
        return creds.user, creds.source
    if placeholder:
        return PLACEHOLDER_USER, "--placeholder-user (replace it before pushing)"
    raise UserError("no Kaggle user name: pass --user USER (kernel ids are USER/<slug>), or --placeholder-user to "
                    f"write {PLACEHOLDER_USER}/<slug> ids on purpose")
