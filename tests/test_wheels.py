"""The offline wheel set: one list, the supported range, the closure check (a real pip dry-run on
a folder of tiny fake wheels), the mmcv build preflight and the bootstrap's checks."""
from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from siimcovid.kaggle import render as kaggle
from siimcovid.kaggle import wheels as W


def fake_wheel(folder: Path, name: str, version: str = "1.0", requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel whose METADATA declares ``requires``."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name.replace('-', '_')}/__init__.py", "")
        z.writestr(f"{dist}.dist-info/METADATA", meta)
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def test_closure_check_catches_a_missing_dependency(tmp_path):
    fake_wheel(tmp_path, "siimfake-top", requires=("siimfake-dep>=1.0", "numpy"))  # numpy: the image has it
    with pytest.raises(W.WheelsError, match="missing siimfake-dep"):
        W.check_closure(tmp_path, ["siimfake-top==1.0"])
    fake_wheel(tmp_path, "siimfake-dep", version="1.2")
    W.check_closure(tmp_path, ["siimfake-top==1.0"])  # complete now: resolves offline
    with pytest.raises(W.WheelsError, match="missing siimfake-absent"):
        W.check_closure(tmp_path, ["siimfake-top==1.0", "siimfake-absent"])


def test_kernel_list_is_pinned_like_the_local_setup():
    pins = kaggle.requirement_pins()
    lines = kaggle.repo_root().joinpath("requirements.txt").read_text().splitlines()
    for req in W.KERNEL_REQUIREMENTS:
        assert (pins[req.split("==")[0].lower()] == req) if "==" in req else req in lines, req
    names = {r.split("==")[0] for r in W.KERNEL_REQUIREMENTS}
    assert {"keras-applications", "pycocotools"} <= names  # the images lack both


def test_build_wheels_dry_run_plans_mmcv_closure_and_offline_check(tmp_path):
    cmds = W.build_wheels(tmp_path, dry_run=True)
    flat = [" ".join(c) for c in cmds]
    assert any("wheel --no-deps --no-build-isolation" in c and W.MMCV in c for c in flat)
    assert any("install --dry-run --report" in c for c in flat)
    assert "--no-index" in cmds[-1] and "--dry-run" in cmds[-1]  # it ENDS with the offline dry-run
    listed = (tmp_path / W.WHEELS_MARKER).read_text().split()
    assert listed == list(cmds[-1][cmds[-1].index(str(tmp_path)) + 1:])  # exactly what kernels install
    tfk = [r for r in listed if r.startswith("tf-keras")]
    info = json.loads((tmp_path / W.WHEELS_INFO).read_text())
    assert tfk == [W.tf_keras_requirement(info["versions"]["tensorflow"])]
    assert W.MMCV in listed and info["mmcv_cuda"] is True and info["cuda_arch"] == "7.5"
    # without the built mmcv, mmdet (which needs it) is left out rather than compiled CPU-only
    W.build_wheels(tmp_path / "nommcv", build_mmcv=False, dry_run=True)
    listed = (tmp_path / "nommcv" / W.WHEELS_MARKER).read_text().split()
    assert W.MMCV not in listed and not any(r.startswith("mmdet") for r in listed)


def test_supported_range_and_tf_keras_match():
    assert W.check_versions({"python": "3.12.1", "tensorflow": "2.19.0", "tf-keras": "2.19.1", "torch": "2.10.0"}) == []
    probs = W.check_versions({"tensorflow": "2.22.0", "tf-keras": "2.21.0", "torch": "2.14.0"})
    assert any("tensorflow 2.22.0 is outside" in p for p in probs)
    assert any("torch 2.14.0 is outside" in p for p in probs)
    assert any("tf-keras 2.21.0 does not match tensorflow 2.22.0" in p for p in probs)
    assert W.tf_keras_requirement("2.19.0") == "tf-keras~=2.19.0"
    assert W.check_versions({}) == []


def test_mmcv_preflight_on_fake_torch_versions_and_headers(tmp_path):
    assert W.check_mmcv_build("2.10.0+cu126", None, cuda=True) == []
    (msg,) = W.check_mmcv_build("2.14.0+cu128", None, cuda=True)
    assert "headers need C++20" in msg and "-std=c++17" in msg and "docker_image" in msg
    # the headers decide when present: a torch whose all.h demands C++20
    hdr = tmp_path / "torch" / "csrc" / "api" / "include" / "torch"
    hdr.mkdir(parents=True)
    (hdr / "all.h").write_text("#if !defined(_MSC_VER) && __cplusplus < 202002L\n#error C++20 required\n#endif\n")
    assert W.header_cxx_standard(tmp_path) == 20
    assert W.check_mmcv_build("2.13.0", tmp_path, cuda=True)
    (hdr / "all.h").write_text("#if !defined(_MSC_VER) && __cplusplus < 201703L\n#error C++17 or later\n#endif\n"
                               "#if (defined(__GNUC__) && __GNUC__ < 13 && __cplusplus < 202002L)\n#define X 1\n#endif\n")
    assert W.header_cxx_standard(tmp_path) == 17 and W.check_mmcv_build("2.13.0", tmp_path, cuda=True) == []
    (msg,) = W.check_mmcv_build("2.10.0", tmp_path, cuda=False)
    assert "must run with a GPU" in msg
    assert W.check_mmcv_build("2.10.0", tmp_path, cuda=False, require_cuda=False) == []


def test_installed_torch_headers_are_read():
    torch = pytest.importorskip("torch")
    from torch.utils import cpp_extension

    assert W.header_cxx_standard(cpp_extension.include_paths()[0]) == 17, torch.__version__


def test_closure_never_replaces_the_image_frameworks(tmp_path):
    def runner(cmd, **kw):
        report = Path(cmd[cmd.index("--report") + 1])
        report.write_text(json.dumps({"install": [
            {"metadata": {"name": "keras-applications", "version": "1.0.8"}, "download_info": {"url": "https://x"}},
            {"metadata": {"name": "NumPy", "version": "1.26.4"}, "download_info": {"url": "https://y"}}]}))
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    with pytest.raises(W.WheelsError, match="replace the image's own NumPy 1.26.4"):
        W.resolve_closure(["segmentation-models==1.0.1"], tmp_path, runner)


def test_closure_never_replaces_a_package_of_the_pinned_image(tmp_path):
    """pandas is no framework, but the image pins it (configs/kaggle/image.yaml) and `make test-kaggle`
    ran on that version: a closure that would swap it stops the wheels kernel; a package the kernels'
    own list names (pycocotools) may be installed at the list's version."""
    def runner(cmd, **kw):
        Path(cmd[cmd.index("--report") + 1]).write_text(json.dumps({"install": [
            {"metadata": {"name": name, "version": version}, "download_info": {"url": "https://x"}}
            for name, version in installs]}))
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    installs = [("pycocotools", "2.0.10")]
    assert W.resolve_closure(["pycocotools==2.0.10"], tmp_path, runner)[0]["metadata"]["name"] == "pycocotools"
    installs = [("pandas", "3.0.0")]
    with pytest.raises(W.WheelsError, match="replace the image's own pandas 3.0.0"):
        W.resolve_closure(["segmentation-models==1.0.1"], tmp_path, runner)
    assert "pandas" in W.protected() and "pycocotools" not in W.protected(["pycocotools==2.0.10"])


def test_build_wheels_reports_an_image_that_moved_from_the_pins(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(W, "image_drift", lambda: ["numpy 2.1.0 here, 2.0.2 pinned"])
    W.build_wheels(tmp_path, build_mmcv=False, dry_run=True)
    assert json.loads((tmp_path / W.WHEELS_INFO).read_text())["image_drift"] == ["numpy 2.1.0 here, 2.0.2 pinned"]
    assert "not the one pinned in image.yaml (numpy 2.1.0 here" in capsys.readouterr().err


def test_prepare_kernel(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert W.prepare_kernel() is False  # locally the venv is the set-up
    assert kaggle.install_offline_wheels is W.prepare_kernel

    from siimcovid import paths

    monkeypatch.setattr(paths, "on_kaggle", lambda: True)
    monkeypatch.setattr(paths, "KAGGLE_INPUT", tmp_path / "input")
    monkeypatch.delenv("SIIM_INPUT", raising=False)
    (tmp_path / "input").mkdir()
    with pytest.raises(W.WheelsError, match="add the wheels kernel"):
        W.prepare_kernel()
    out = tmp_path / "input" / "notebooks" / "alice" / "siimcovid-wheels" / "wheels"
    out.mkdir(parents=True)
    (out / W.WHEELS_MARKER).write_text("siimfake-top==1.0\n")
    here = W.installed_versions()
    (out / W.WHEELS_INFO).write_text(json.dumps({"versions": {**here, "torch": "2.0.0+cu118"}}))
    with pytest.raises(W.WheelsError, match=r"made on another image \(torch 2.0.0\+cu118"):
        W.prepare_kernel()
    (out / W.WHEELS_INFO).write_text(json.dumps({"versions": here}))
    calls = []

    def runner(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for siimfake-top")

    with pytest.raises(W.WheelsError, match="offline install from .* failed.*siimfake-top"):
        W.prepare_kernel(runner=runner)
    assert "--no-index" in calls[0] and "siimfake-top==1.0" in calls[0]
    ok = W.prepare_kernel(runner=lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, "", ""))
    assert ok is True


def test_prepare_kernel_refuses_an_unsupported_image(tmp_path, monkeypatch):
    from siimcovid import paths

    monkeypatch.setattr(paths, "on_kaggle", lambda: True)
    monkeypatch.setattr(paths, "KAGGLE_INPUT", tmp_path)
    monkeypatch.delenv("SIIM_INPUT", raising=False)
    (tmp_path / W.WHEELS_MARKER).write_text("")
    monkeypatch.setattr(W, "installed_versions", lambda: {"python": "3.12.0", "tensorflow": "2.23.0"})
    ok = lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, "", "")  # noqa: E731
    with pytest.raises(W.WheelsError, match="outside the supported range.*SIIMCOVID_ALLOW_UNSUPPORTED"):
        W.prepare_kernel(runner=ok)
    assert W.prepare_kernel(runner=ok, allow_unsupported=True) is True


# the build strings of today's two images (kaggle-runtime.md, "December 2026")
GPU_IMAGE = {"python": "3.12.13", "tensorflow": "2.20.0", "tf-keras": "2.20.0", "torch": "2.10.0+cu128"}
CPU_IMAGE = {**GPU_IMAGE, "torch": "2.10.0+cpu"}


def test_every_requirement_is_in_one_group_and_every_notebook_names_its_kernel():
    listed = {W.requirement_name(r) for r in (*W.KERNEL_REQUIREMENTS, W.MMCV, "tf-keras~=2.20.0")}
    grouped = [W._norm(n) for names in W.REQUIREMENT_GROUPS.values() for n in names]
    assert sorted(grouped) == sorted(listed)  # each once, none forgotten
    assert set(W.TORCH_BUILT) <= set(grouped)
    import re

    called = {}
    for nb in kaggle.repo_root().joinpath("notebooks").glob("*.py"):
        called.update({nb.stem: m for m in re.findall(r'^prepare_kernel\("([\w-]+)"\)', nb.read_text(), re.M)})
    assert called == {k: k for k in W.KERNEL_NEEDS}


def test_cpu_kernel_takes_the_gpu_images_wheels_but_not_their_mmcv():
    marker = [*W.KERNEL_REQUIREMENTS, "tf-keras~=2.20.0", W.MMCV]
    pre = W.kernel_requirements(marker, "preprocess")
    assert "pydicom==3.0.2" in pre and W.MMCV not in pre and not any(r.startswith("mmdet") for r in pre)
    assert W.image_mismatch(GPU_IMAGE, CPU_IMAGE, pre) == []  # the CPU image's preprocess runs
    for kernel in ("train-det", "inference"):  # mmcv's ops link the GPU image's torch build
        (msg,) = W.image_mismatch(GPU_IMAGE, CPU_IMAGE, W.kernel_requirements(marker, kernel))
        assert msg == "torch 2.10.0+cu128 (wheels kernel) vs 2.10.0+cpu (this kernel)"
        assert W.image_mismatch(GPU_IMAGE, GPU_IMAGE, W.kernel_requirements(marker, kernel)) == []
    assert W.image_mismatch(GPU_IMAGE, CPU_IMAGE, W.kernel_requirements(marker, "train-study")) == []
    assert W.image_mismatch(GPU_IMAGE, {**CPU_IMAGE, "python": "3.11.9"}, pre) == [
        "python 3.12.13 (wheels kernel) vs 3.11.9 (this kernel)"]  # every wheel is cp312
    assert W.kernel_requirements(marker) == marker
    with pytest.raises(W.WheelsError, match="unknown kernel 'train'"):
        W.kernel_requirements(marker, "train")


def test_prepare_kernel_on_the_cpu_image_installs_only_what_preprocess_needs(tmp_path, monkeypatch):
    from siimcovid import paths

    monkeypatch.setattr(paths, "on_kaggle", lambda: True)
    monkeypatch.setattr(paths, "KAGGLE_INPUT", tmp_path)
    monkeypatch.delenv("SIIM_INPUT", raising=False)
    (tmp_path / W.WHEELS_MARKER).write_text("\n".join([*W.KERNEL_REQUIREMENTS, "tf-keras~=2.20.0", W.MMCV]) + "\n")
    (tmp_path / W.WHEELS_INFO).write_text(json.dumps({"versions": GPU_IMAGE}))
    monkeypatch.setattr(W, "installed_versions", lambda: dict(CPU_IMAGE))
    calls = []

    def runner(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    assert W.prepare_kernel("preprocess", runner=runner) is True
    (cmd,) = calls
    assert "dicomsdl==0.109.4" in cmd and W.MMCV not in cmd and "mmdet==3.3.0" not in cmd
    with pytest.raises(W.WheelsError, match=r"torch 2.10.0\+cu128 \(wheels kernel\) vs 2.10.0\+cpu.*train-det"):
        W.prepare_kernel("train-det", runner=runner)
