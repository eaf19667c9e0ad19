"""What the internet-off kernels install, and the wheels kernel that makes it installable.

Kernels run on the Kaggle image's OWN TensorFlow and torch; only what the image lacks is
installed, from the wheels kernel's output, with nothing else (``--no-index``). So:

- :data:`KERNEL_REQUIREMENTS` is THE list of what kernels install (pins from requirements.txt);
- :data:`SUPPORTED` is the one statement of the TensorFlow / tf-keras / torch / Python range the
  code supports; the bootstrap (:func:`prepare_kernel`) checks the image against it;
- :func:`build_wheels` (the wheels kernel, internet on, GPU session of the same image) builds
  mmcv with CUDA ops, resolves the FULL dependency closure against the running image (the
  image's own TF / torch / numpy are never replaced), downloads it, and ENDS with a dry-run
  offline install of exactly the list the kernels will install, failing there and not in
  every downstream kernel.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping

from ..errors import UserError
from .image import drift as image_drift
from .image import load as image_pins

WHEELS_MARKER = "siimcovid-wheels.txt"  # exactly what a kernel installs, one requirement a line
WHEELS_INFO = "siimcovid-wheels.json"  # the image the wheels were resolved / built on

# THE list of what kernels install on top of the image (each pin must match requirements.txt;
# a test checks). keras-applications (segmentation-models, efficientnet, image-classifiers) and
# pycocotools (mmdet) are dependencies the images lack: listed so they are never forgotten,
# although the closure would pull them in anyway. tf-keras is added per image (its minor must
# match the image's TensorFlow) and mmcv is built, not downloaded.
KERNEL_REQUIREMENTS = (
    "setuptools<81",  # tensorflow-hub 0.16.1 imports pkg_resources (gone from setuptools 81)
    "segmentation-models==1.0.1", "efficientnet==1.0.0", "image-classifiers==1.0.0",
    "keras-applications==1.0.8", "tensorflow-hub==0.16.1",
    "pydicom==3.0.2", "pylibjpeg==2.1.0", "pylibjpeg-libjpeg==2.5.0", "pylibjpeg-openjpeg==2.6.0",
    "pylibjpeg-rle==2.2.0", "pyjpegls==1.5.1", "dicomsdl==0.109.4",
    "ensemble-boxes==1.0.9", "mmengine==0.10.7", "mmdet==3.3.0", "pycocotools==2.0.11",
    "addict==2.4.0", "yapf==0.43.0", "terminaltables==3.1.10",
)
MMCV = "mmcv==2.1.0"

# What each kernel installs from the wheel set, by distribution name: a kernel gets only its
# groups, so a CPU kernel (the CPU image, torch +cpu) never meets the mmcv the wheels kernel
# compiled on the GPU image (torch +cu128). Every name of the list, mmcv and tf-keras included,
# is in one group (a test checks), so a new requirement cannot be forgotten by every kernel.
REQUIREMENT_GROUPS = {
    "dicom": ("pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pyjpegls",
              "dicomsdl"),
    "classify": ("setuptools", "segmentation-models", "efficientnet", "image-classifiers", "keras-applications",
                 "tensorflow-hub", "tf-keras"),
    # the one config loader (siimcovid.variants reads every stage's variants with mmengine's Config)
    "config": ("mmengine", "addict", "yapf"),
    # the detection stack without its compiled part: a CPU kernel that only reads mmdet's files
    # (configs, model-zoo metafiles) can take these without mmcv
    "detect": ("ensemble-boxes", "mmdet", "pycocotools", "terminaltables"),
    "mmcv": ("mmcv",),
}
# notebook name -> the groups it imports (inference preprocesses the test DICOMs, then runs both kinds)
KERNEL_NEEDS = {
    "preprocess": ("dicom",),
    "train-study": ("config", "classify"),
    "train-binary": ("config", "classify"),
    "train-det": ("config", "detect", "mmcv"),
    "weights": ("config", "detect"),  # reads mmdet's model-zoo metafiles, never imports mmcv (CPU image)
    "inference": ("dicom", "config", "classify", "detect", "mmcv"),
    "preprocess-external": ("dicom", "config", "detect"),  # variants, and WBF (ensemble-boxes) of the readers
    "pretrain-det": ("config", "detect", "mmcv"),
}
# Compiled against the image's torch and CUDA: only these need the wheels kernel's exact torch build
# (pure-Python wheels and the codecs' own C extensions do not link torch).
TORCH_BUILT = ("mmcv",)
MMCV_CXX_STD = 17  # mmcv 2.1.0's setup.py passes -std=c++17 to every compile
T4_ARCH = "7.5"

# The supported range, inclusive, by major.minor: read from the image pins file
# (configs/kaggle/image.yaml, whose comment says where each bound comes from), so the target
# image and the range it must lie in move together.
SUPPORTED = dict(image_pins().supported)
# Never replaced by the closure: replacing them would change the image's frameworks under the
# kernels (and a second TF or a CPU torch would hide the accelerator). Every other package the
# pins file lists for the image is protected too (:func:`protected`), unless the kernels' own list
# names it: `make test-kaggle` runs on exactly those versions.
PROTECTED = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu", "tf-nightly", "keras", "torch", "torchvision",
             "numpy", "jax", "jaxlib", "protobuf")
TF_DISTS = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu")


class WheelsError(UserError):
    """The wheel set cannot serve the kernels (missing dependency, unsupported image, a build that
    cannot work); the message names the cause and the fix."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def minor(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    if not m:
        raise ValueError(f"not a version: {version!r}")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------- versions
def installed_versions(names: Iterable[str] = ("tensorflow", "tf-keras", "torch"),
                       version: Callable[[str], str] = md.version) -> dict[str, str]:
    """name -> installed version (TensorFlow under any of its distribution names) + python."""
    out = {"python": platform.python_version()}
    for name in names:
        for dist in (TF_DISTS if name == "tensorflow" else (name,)):
            try:
                out[name] = version(dist)
                break
            except md.PackageNotFoundError:
                continue
    return out


def tf_keras_requirement(tf_version: str) -> str:
    """The tf-keras that goes with this TensorFlow (same major.minor)."""
    major, mnr = minor(tf_version)
    return f"tf-keras~={major}.{mnr}.0"


def check_versions(versions: Mapping[str, str], supported: Mapping[str, tuple[str, str]] = SUPPORTED) -> list[str]:
    """Problems of an image's versions against :data:`SUPPORTED` (empty: fine). A framework
    that is absent is not a problem here (a kernel that needs it fails at import)."""
    problems = []
    for name, (lo, hi) in supported.items():
        v = versions.get(name)
        if v is None:
            continue
        if not minor(lo) <= minor(v) <= minor(hi):
            problems.append(f"{name} {v} is outside the supported {lo}-{hi}")
    tf, tfk = versions.get("tensorflow"), versions.get("tf-keras")
    if tf and tfk and minor(tf) != minor(tfk):
        problems.append(f"tf-keras {tfk} does not match tensorflow {tf} (need {tf_keras_requirement(tf)})")
    return problems


# --------------------------------------------------------------------------- mmcv
def header_cxx_standard(torch_include: str | os.PathLike) -> int | None:
    """The C++ standard torch's headers demand (17, 20, ...), read from the guards that stop a
    build (``#if __cplusplus < 2020xxL`` + ``#error``); None when no guard is found."""
    std = {2011: 11, 2014: 14, 2017: 17, 2020: 20, 2023: 23}
    found = []
    root = Path(torch_include)
    for rel in ("torch/csrc/api/include/torch/all.h", "c10/macros/Macros.h", "c10/util/C++17.h",
                "torch/headeronly/macros/Macros.h"):
        p = root / rel
        if p.is_file():
            text = p.read_text(errors="replace")
            # only guards that stop the build count (`#if __cplusplus < X` + `#error`, or a
            # static_assert); other __cplusplus tests just pick code paths
            for m in re.finditer(r"__cplusplus\s*<\s*(\d{4})\d\dL[^\n]*\n\s*#\s*error", text):
                found.append(std.get(int(m.group(1)), 0))
            for m in re.finditer(r"static_assert\s*\(\s*__cplusplus\s*>=\s*(\d{4})\d\dL", text):
                found.append(std.get(int(m.group(1)), 0))
    return max(found) if found else None


def check_mmcv_build(torch_version: str, torch_include: str | os.PathLike | None, cuda: bool,
                     require_cuda: bool = True) -> list[str]:
    """Why mmcv 2.1.0 cannot be built here for the GPU kernels, before a 20-minute compile
    finds out. The flag is NOT patched to C++20: nobody has shown mmcv 2.1.0's ops compile and
    behave under it, so a newer torch is an error naming the way out."""
    problems = []
    need = header_cxx_standard(torch_include) if torch_include else None
    if need is None:  # headers not found: the known rule (torch >= 2.14 needs C++20)
        need = 20 if minor(torch_version) >= (2, 14) else 17
    if need > MMCV_CXX_STD:
        problems.append(
            f"torch {torch_version}'s headers need C++{need} but {MMCV}'s setup.py compiles with "
            f"-std=c++{MMCV_CXX_STD}: run the wheels, detection and inference kernels on an image with "
            f"torch <= {SUPPORTED['torch'][1]} (docker_image in kernel-metadata/), or build without mmcv (build_mmcv=False)")
    if require_cuda and not cuda:
        problems.append("no CUDA device in this session: the wheels kernel builds mmcv's CUDA ops for the GPU kernels, "
                        "so it must run with a GPU (enable_gpu: true) on the same image as they do")
    return problems


def _torch_facts() -> tuple[str, str | None, bool]:
    import torch
    from torch.utils import cpp_extension

    include = cpp_extension.include_paths()[0] if cpp_extension.include_paths() else None
    return torch.__version__, include, bool(torch.cuda.is_available())


# --------------------------------------------------------------------------- pip
def protected(requirements: Iterable[str] = ()) -> set[str]:
    """Distributions the closure must not replace: :data:`PROTECTED` and the image's packages of
    the pins file, less those that ``requirements`` (what the kernels install) name themselves."""
    named = {_norm(re.split(r"[<>=!~; \[]", r, maxsplit=1)[0]) for r in requirements}
    return {_norm(n) for n in PROTECTED} | (set(image_pins().packages) - named)


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def _missing_from_pip(output: str) -> list[str]:
    names = re.findall(r"No matching distribution found for ([^\s]+)", output)
    names += re.findall(r"Could not find a version that satisfies the requirement ([^\s]+)", output)
    return sorted(set(names))


def check_closure(wheel_dir: str | os.PathLike, requirements: Iterable[str],
                  runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    """A dry-run OFFLINE install of exactly ``requirements`` from ``wheel_dir`` into the running
    environment (what every downstream kernel does); :class:`WheelsError` naming what is missing."""
    reqs = list(requirements)
    cmd = _pip("install", "--dry-run", "--no-index", "--find-links", str(wheel_dir), *reqs)
    proc = runner(cmd, capture_output=True, text=True)
    if proc.returncode:
        out = (proc.stdout or "") + (proc.stderr or "")
        missing = _missing_from_pip(out)
        detail = f"missing {', '.join(missing)}" if missing else " | ".join(out.strip().splitlines()[-2:])
        raise WheelsError(f"offline install from {wheel_dir} fails ({detail}): the wheel set lacks a dependency; "
                          "re-run the wheels kernel (it resolves the closure with dependencies)")


def resolve_closure(requirements: Iterable[str], find_links: str | os.PathLike,
                    runner: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                    report_path: str | os.PathLike | None = None) -> list[dict]:
    """What ``pip install`` would add to THIS environment for ``requirements`` (online, with
    dependencies; already-satisfied packages of the image are not in it). -> report items."""
    requirements = list(requirements)
    report = Path(report_path or Path(find_links) / "pip-report.json")
    cmd = _pip("install", "--dry-run", "--quiet", "--report", str(report), "--find-links", str(find_links),
               *requirements)
    proc = runner(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise WheelsError(f"pip cannot resolve the kernel requirements on this image: "
                          f"{((proc.stdout or '') + (proc.stderr or '')).strip()[-600:]}")
    items = json.loads(report.read_text())["install"]
    keep = protected(requirements)
    replaced = [f"{i['metadata']['name']} {i['metadata']['version']}" for i in items
                if _norm(i["metadata"]["name"]) in keep]
    if replaced:
        raise WheelsError(f"the kernel requirements would replace the image's own {', '.join(replaced)}: "
                          "relax the pin that pulls it in (pip-report.json in the output says which)")
    return items


def build_wheels(out_dir: str | os.PathLike, requirements: Iterable[str] = KERNEL_REQUIREMENTS,
                 build_mmcv: bool = True, require_cuda: bool = True, dry_run: bool = False,
                 runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[list[str]]:
    """The wheels kernel. Writes into ``out_dir``: mmcv built for this image's torch (CUDA ops
    for the T4 when ``require_cuda``), every wheel of the dependency closure, the marker
    (:data:`WHEELS_MARKER`: what kernels install) and :data:`WHEELS_INFO` (this image's versions).
    Ends with :func:`check_closure`. Returns the commands run (planned, with ``dry_run``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    versions = installed_versions()
    problems = check_versions(versions)
    # not an error: an image inside SUPPORTED still runs, but not on the versions the tests ran on
    drift = image_drift()
    if drift:
        print(f"siimcovid: WARNING this image is not the one pinned in {image_pins().path.name} "
              f"({'; '.join(drift)}): `make test-kaggle` did not run on it", file=sys.stderr)
    reqs = list(requirements)
    if not build_mmcv:  # mmdet needs mmcv: without the built one, the closure would compile a CPU-only mmcv
        reqs = [r for r in reqs if not r.startswith("mmdet")]
    if "tensorflow" in versions:
        reqs.append(tf_keras_requirement(versions["tensorflow"]))
    env = dict(os.environ)
    cmds: list[list[str]] = []
    if build_mmcv:
        torch_version, include, cuda = _torch_facts()
        problems += check_mmcv_build(torch_version, include, cuda, require_cuda)
        env.update(MMCV_WITH_OPS="1", FORCE_CUDA="1" if require_cuda else "0", MAX_JOBS=env.get("MAX_JOBS", "4"))
        if require_cuda:
            env["TORCH_CUDA_ARCH_LIST"] = T4_ARCH
        # no build isolation: the ops compile against THIS torch; setuptools<81 as the facts' build used
        cmds.append(_pip("install", "setuptools<81", "ninja", "psutil"))
        cmds.append(_pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), MMCV))
        reqs.append(MMCV)
    if problems and not dry_run:
        raise WheelsError("; ".join(problems))
    if dry_run:
        cmds.append(_pip("install", "--dry-run", "--report", str(out / "pip-report.json"), "--find-links", str(out),
                         *reqs))
        cmds.append(_pip("wheel", "--no-deps", "-w", str(out), "<each package of the report>"))
    else:
        for cmd in cmds:  # mmcv first: the closure then resolves it from out/
            subprocess.run(cmd, check=True, env=env)
        items = resolve_closure(reqs, out, runner)
        pins = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items
                if not str(i.get("download_info", {}).get("url", "")).startswith("file:")]
        if pins:  # `pip wheel`, not `pip download`: an sdist-only package becomes a wheel here, online
            cmd = _pip("wheel", "--no-deps", "-w", str(out), *pins)
            cmds.append(cmd)
            subprocess.run(cmd, check=True)
    (out / WHEELS_MARKER).write_text("\n".join(reqs) + "\n")
    info = {"versions": versions, "requirements": reqs, "mmcv_cuda": bool(build_mmcv and require_cuda),
            "cuda_arch": T4_ARCH if build_mmcv and require_cuda else None, "problems": problems,
            "image_drift": drift}
    (out / WHEELS_INFO).write_text(json.dumps(info, indent=2) + "\n")
    cmds.append(_pip("install", "--dry-run", "--no-index", "--find-links", str(out), *reqs))
    if not dry_run:
        check_closure(out, reqs, runner)
    return cmds


# --------------------------------------------------------------------------- the bootstrap
def requirement_name(line: str) -> str:
    """The normalised distribution name of a requirement line (``mmcv==2.1.0`` -> ``mmcv``)."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    if not m:
        raise ValueError(f"not a requirement: {line!r}")
    return _norm(m.group(1))


def kernel_requirements(lines: Iterable[str], kernel: str | None = None) -> list[str]:
    """The lines of the wheel set's list that ``kernel`` installs (all of them for None)."""
    reqs = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if kernel is None:
        return reqs
    if kernel not in KERNEL_NEEDS:
        raise WheelsError(f"unknown kernel {kernel!r} for prepare_kernel: one of {', '.join(KERNEL_NEEDS)}")
    names = {_norm(n) for g in KERNEL_NEEDS[kernel] for n in REQUIREMENT_GROUPS[g]}
    return [r for r in reqs if requirement_name(r) in names]


def image_mismatch(built: Mapping[str, str], here: Mapping[str, str],
                   installs: Iterable[str] | None = None) -> list[str]:
    """Differences between the image the wheels were made on and this one that break what this
    kernel installs (``installs``: requirement lines, None = the whole set): every wheel needs the
    same Python minor, tf-keras the same TF minor, and only a package compiled against torch
    (:data:`TORCH_BUILT`) the exact torch build (``2.10.0+cu128`` is not ``2.10.0+cpu``)."""
    names = None if installs is None else {requirement_name(r) for r in installs}
    checks = {"python": True,
              "tensorflow": names is None or "tf-keras" in names,
              "torch": names is None or bool(names & set(TORCH_BUILT))}
    problems = []
    for name, needed in checks.items():
        a, b = built.get(name), here.get(name)
        if needed and a and b and (a != b if name == "torch" else minor(a) != minor(b)):
            problems.append(f"{name} {a} (wheels kernel) vs {b} (this kernel)")
    return problems


def prepare_kernel(kernel: str | None = None, marker: str = WHEELS_MARKER, allow_unsupported: bool | None = None,
                   runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> bool:
    """The notebooks' bootstrap. Locally a no-op (-> False: the venv is the set-up). On Kaggle:
    find the wheels kernel's output, check that what ``kernel`` (a :data:`KERNEL_NEEDS` name;
    None = everything) installs from it fits this image and that this image's TF / torch / Python
    are in :data:`SUPPORTED`, then install exactly those lines offline.
    ``SIIMCOVID_ALLOW_UNSUPPORTED=1`` turns the range check into a warning (nothing else)."""
    from ..paths import KAGGLE_INPUT, find_input, on_kaggle

    if not on_kaggle():
        return False
    if allow_unsupported is None:
        allow_unsupported = os.environ.get("SIIMCOVID_ALLOW_UNSUPPORTED") == "1"
    try:
        folder = find_input(marker, hint=KAGGLE_INPUT)
    except FileNotFoundError:
        raise WheelsError(f"no {marker} under {KAGGLE_INPUT}: add the wheels kernel (<user>/siimcovid-wheels) "
                          "to this kernel's kernel_sources") from None
    here = installed_versions()
    info_path = folder / WHEELS_INFO
    built = json.loads(info_path.read_text()).get("versions", {}) if info_path.is_file() else {}
    installs = kernel_requirements((folder / marker).read_text().splitlines(), kernel)
    problems = image_mismatch(built, here, None if kernel is None else installs)
    if problems:
        raise WheelsError(f"the wheels in {folder} were made on another image ({'; '.join(problems)}), which breaks "
                          f"what {kernel or 'this kernel'} installs: pin one docker_image for the wheels kernel and this one (kaggle render|push --docker-image) and re-run it")
    problems = check_versions(here)
    if problems:
        msg = f"this image is outside the supported range ({'; '.join(problems)})"
        if not allow_unsupported:
            raise WheelsError(f"{msg}: pin a supported image (kaggle render|push --docker-image), or set "
                              "SIIMCOVID_ALLOW_UNSUPPORTED=1 to try anyway")
        print(f"siimcovid: WARNING {msg}", file=sys.stderr)
    if not installs:
        return True
    cmd = _pip("install", "--no-index", "--find-links", str(folder), *installs, "--quiet")
    proc = runner(cmd, capture_output=True, text=True)
    if proc.returncode:
        out = (proc.stdout or "") + (proc.stderr or "")
        raise WheelsError(f"offline install from {folder} failed: {' | '.join(out.strip().splitlines()[-3:])}")
    importlib.invalidate_caches()
    problems = check_versions(installed_versions())
    if problems and not allow_unsupported:
        raise WheelsError(f"after the offline install: {'; '.join(problems)}")
    return True
