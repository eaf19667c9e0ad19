"""The Kaggle image the kernels run on: the one reader of ``configs/kaggle/image.yaml``.

The file ships with the package because the wheels kernel reads it on Kaggle. Three readers ask
this module and never open the file themselves: :data:`siimcovid.kaggle.wheels.SUPPORTED`, the
wheels kernel's closure check (the image's packages are never replaced; a running image that
moved away from the pins is reported), and ``scripts/setup-kaggle.sh``, which builds a local venv
with the image's versions (``make test-kaggle``) and marks it (:func:`mark_venv`) so the pin tests
know which pins the venv they run in must match.
"""
from __future__ import annotations

import importlib.metadata as md
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping

from ..errors import UserError

PINS_FILE = Path(__file__).resolve().parent.parent / "configs" / "kaggle" / "image.yaml"
# written into a venv built to match the image; its presence switches the pin tests to these pins
VENV_MARKER = "siimcovid-kaggle-image.txt"
VARIANTS = ("gpu", "cpu")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class ImagePins:
    """The target image: ``packages`` maps a normalised distribution name to its version (without
    torch's local label, which is per variant in ``torch_builds``); ``supported`` maps python /
    tensorflow / torch to the inclusive (low, high) major.minor range the code supports."""

    python: str
    packages: Mapping[str, str]
    torch_builds: Mapping[str, str]
    supported: Mapping[str, tuple[str, str]]
    source: str
    read: str
    path: Path

    def torch_version(self, variant: str) -> str:
        """torch's full version string on the ``gpu`` or ``cpu`` image, e.g. ``2.10.0+cu128``."""
        if variant not in self.torch_builds:
            raise ValueError(f"{self.path}: no torch build for image variant {variant!r} "
                             f"(known: {', '.join(sorted(self.torch_builds))})")
        return f"{self.packages['torch']}+{self.torch_builds[variant]}"

    def requirements(self, variant: str | None = None) -> list[str]:
        """``name==version`` for every package of the image; torch with the variant's label when
        ``variant`` is given, else PyPI's plain build (what a local venv can install)."""
        out = []
        for name, version in sorted(self.packages.items()):
            if name == "torch" and variant:
                version = self.torch_version(variant)
            out.append(f"{name}=={version}")
        return out


def _version(value: object, where: str, path: Path) -> str:
    if not isinstance(value, str) or not re.match(r"\d+(\.\d+)*$", value):
        raise UserError(f"{path}: {where} must be a quoted version string like \"2.20.0\", got {value!r}")
    return value


def _parse(path: Path) -> ImagePins:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: the image pins file is missing (it ships with the package)") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    missing = {"python", "packages", "torch_builds", "supported", "source", "read"} - set(raw)
    if missing:
        raise UserError(f"{path}: missing keys {sorted(missing)}")
    packages = {_norm(str(k)): _version(v, f"packages.{k}", path) for k, v in (raw["packages"] or {}).items()}
    if "torch" not in packages:
        raise UserError(f"{path}: packages must list torch (its build label is per image variant)")
    builds = {str(k): str(v) for k, v in (raw["torch_builds"] or {}).items()}
    if set(builds) != set(VARIANTS):
        raise UserError(f"{path}: torch_builds must name exactly {list(VARIANTS)}, got {sorted(builds)}")
    supported = {}
    for name, rng in (raw["supported"] or {}).items():
        if not (isinstance(rng, list) and len(rng) == 2):
            raise UserError(f"{path}: supported.{name} must be [low, high], got {rng!r}")
        supported[str(name)] = (_version(rng[0], f"supported.{name}", path), _version(rng[1], f"supported.{name}", path))
    return ImagePins(python=_version(raw["python"], "python", path), packages=packages, torch_builds=builds,
                     supported=supported, source=" ".join(str(raw["source"]).split()), read=str(raw["read"]),
                     path=path)


@lru_cache(maxsize=None)
def _load_cached(path: Path) -> ImagePins:
    return _parse(path)


def load(path: str | Path | None = None) -> ImagePins:
    """The image pins (:data:`PINS_FILE` unless ``path``); :class:`UserError` naming the file
    and the problem when it is malformed."""
    return _load_cached(Path(path).resolve() if path else PINS_FILE)


def lane_requirements(base_pins: Mapping[str, str], pins: ImagePins | None = None) -> list[str]:
    """What a local venv that matches the image installs: every ``name==version`` line of
    ``base_pins`` (requirements.txt, name -> line) with each package the image has at the image's
    version instead, plus the image's packages that ``base_pins`` does not name."""
    pins = pins or load()
    out = {_norm(name): line for name, line in base_pins.items()}
    out.update({name: f"{name}=={version}" for name, version in pins.packages.items()})
    return [out[name] for name in sorted(out)]


def drift(pins: ImagePins | None = None, version: Callable[[str], str] = md.version) -> list[str]:
    """Where the running environment differs from the pins, one line per package ("numpy 2.1.0
    here, 2.0.2 pinned"); torch is compared without its local label. Empty: the pinned image."""
    pins = pins or load()
    out = []
    for name, want in sorted(pins.packages.items()):
        try:
            have = version(name)
        except md.PackageNotFoundError:
            out.append(f"{name} absent here, {want} pinned")
            continue
        if have.split("+")[0] != want:
            out.append(f"{name} {have} here, {want} pinned")
    return out


def mark_venv(prefix: str | Path | None = None, pins: ImagePins | None = None) -> Path:
    """Mark the venv at ``prefix`` (default: the running one) as built to match the image."""
    pins = pins or load()
    path = Path(prefix or sys.prefix) / VENV_MARKER
    path.write_text(f"built to match {pins.path.name} (Kaggle image read {pins.read})\n")
    return path


def venv_matches_image(prefix: str | Path | None = None) -> bool:
    """True in a venv that :func:`mark_venv` marked (scripts/setup-kaggle.sh's .venv-kaggle)."""
    return (Path(prefix or sys.prefix) / VENV_MARKER).is_file()
