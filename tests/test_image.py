"""The image pins file (configs/kaggle/image.yaml) and its one reader, siimcovid.kaggle.image: the
versions of Kaggle's image, the supported range derived from it, the local lane's list, drift."""
from __future__ import annotations

import importlib.metadata as md

import pytest

from siimcovid.errors import UserError
from siimcovid.kaggle import image
from siimcovid.kaggle import wheels as W


def test_pins_hold_the_image_with_its_source():
    pins = image.load()
    assert pins.path == image.PINS_FILE and pins.path.is_file()
    assert pins.python == "3.12.13"
    want = {"tensorflow": "2.20.0", "tf-keras": "2.20.0", "keras": "3.13.2", "torch": "2.10.0", "numpy": "2.0.2",
            "pandas": "2.2.2", "scikit-learn": "1.6.1", "pillow": "11.3.0", "protobuf": "5.29.5",
            "tensorflow-hub": "0.16.1", "pycocotools": "2.0.11"}
    assert {k: pins.packages[k] for k in want} == want
    assert pins.packages["opencv-python-headless"].startswith("4.13.")
    assert pins.torch_version("gpu") == "2.10.0+cu128" and pins.torch_version("cpu") == "2.10.0+cpu"
    assert "release-colab-external-images_20260514-060047_RC00" in pins.source and pins.read.startswith("2026-12")
    assert "torch==2.10.0+cpu" in pins.requirements("cpu") and "torch==2.10.0" in pins.requirements()
    with pytest.raises(ValueError, match="no torch build for image variant 'tpu'"):
        pins.torch_version("tpu")


def test_supported_range_is_read_from_the_pins_and_holds_the_image():
    pins = image.load()
    assert W.SUPPORTED == dict(pins.supported)
    here = {"python": pins.python, "tensorflow": pins.packages["tensorflow"], "tf-keras": pins.packages["tf-keras"],
            "torch": pins.torch_version("gpu")}
    assert W.check_versions(here) == []


def test_a_malformed_pins_file_names_the_file_and_the_key(tmp_path):
    text = image.PINS_FILE.read_text()
    bad = tmp_path / "image.yaml"
    bad.write_text(text.replace('python: ["3.10", "3.12"]', "python: [3.10, 3.12]"))  # YAML reads 3.1
    with pytest.raises(UserError, match=r"image.yaml: supported.python must be a quoted version string.*3.1"):
        image.load(bad)
    bad.write_text(text.replace("torch_builds:", "builds:"))
    with pytest.raises(UserError, match=r"image.yaml: missing keys \['torch_builds'\]"):
        image.load(bad)
    with pytest.raises(UserError, match="pins file is missing"):
        image.load(tmp_path / "absent.yaml")


def test_lane_list_takes_the_image_version_of_every_image_package():
    pins = image.load()
    base = {"pandas": "pandas==3.1.1", "papermill": "papermill==2.7.0", "Pillow": "pillow==13.0.0"}
    lane = image.lane_requirements(base, pins)
    assert "pandas==2.2.2" in lane and "pillow==11.3.0" in lane and "papermill==2.7.0" in lane
    assert "keras==3.13.2" in lane  # an image package requirements.txt does not name
    assert not any(r in lane for r in ("pandas==3.1.1", "pillow==13.0.0"))
    assert len({r.split("==")[0] for r in lane}) == len(lane)


def test_drift_lists_each_package_that_moved(tmp_path):
    pins = image.load()

    def version(name):
        if name == "numpy":
            return "2.1.0"
        if name == "h5py":
            raise md.PackageNotFoundError(name)
        return pins.packages[name] + ("+cu128" if name == "torch" else "")

    assert image.drift(pins, version) == ["h5py absent here, 3.16.0 pinned", "numpy 2.1.0 here, 2.0.2 pinned"]
    assert image.drift(pins, lambda n: pins.packages[n]) == []


def test_venv_marker(tmp_path):
    assert not image.venv_matches_image(tmp_path)
    image.mark_venv(tmp_path)
    assert image.venv_matches_image(tmp_path)
