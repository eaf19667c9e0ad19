"""The pinned stack installs into one environment and imports together (set-up regressions).

The pins are those of the venv the tests run in: requirements.txt in .venv (scripts/setup.sh), the
Kaggle image's (configs/kaggle/image.yaml, then requirements.txt for what the image lacks) in a venv
that scripts/setup-kaggle.sh built and marked."""
import platform
import subprocess
import sys
from importlib.metadata import version

import pytest

from siimcovid.kaggle import image
from siimcovid.kaggle.render import requirement_pins


def expected_pins() -> dict[str, str]:
    """name -> the version this venv must have."""
    pins = requirement_pins()
    lines = image.lane_requirements(pins) if image.venv_matches_image() else pins.values()
    return {line.split("==")[0]: line.split("==")[1] for line in lines}


@pytest.mark.parametrize("name", sorted(expected_pins()))
def test_installed_versions_match_pins(name):
    assert version(name).split("+")[0] == expected_pins()[name].split("+")[0]


@pytest.mark.skipif(not image.venv_matches_image(), reason="only in the venv built to match the Kaggle image")
def test_image_venv_runs_the_image_python_minor():
    assert platform.python_version_tuple()[:2] == tuple(image.load().python.split(".")[:2])


PROBE = """
import siimcovid, os
assert os.environ["SM_FRAMEWORK"] == "tf.keras" and os.environ["TF_USE_LEGACY_KERAS"] == "1"
import tensorflow_hub, segmentation_models, tf_keras          # hub needs pkg_resources (setuptools<81)
import torch, mmcv, mmdet, mmengine
from mmcv.ops import nms, DeformConv2d                         # compiled ops present
import pydicom, dicomsdl, cv2, ensemble_boxes, papermill
import pydicom.pixels
import numpy as np
b = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]]); s = torch.tensor([0.9, 0.8])
dets, keep = nms(b, s, 0.5)
print("OK", keep.tolist(), cv2.__file__.split("site-packages/")[1].split("/")[0])
"""


def test_stack_imports_together():
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "OK [0] cv2"
