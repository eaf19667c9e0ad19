#!/usr/bin/env bash
# Creates .venv-kaggle: a local venv that matches the Kaggle image the kernels run on (the pins in
# utils_dataset/siimcovid/configs/kaggle/image.yaml), so `make test-kaggle` runs the suite on the
# versions that ship. Idempotent: a stamp keyed on the pins, requirements.txt, the kernels' list and
# this script makes a re-run with nothing changed take seconds.
#   scripts/setup-kaggle.sh [--wheels DIR]   DIR: a wheel folder (e.g. ../shared/wheels) holding an mmcv
#                                            built for cp312 against torch 2.10.0; without it mmcv builds
#                                            from source (as in scripts/setup.sh).
# Layers, in the order the image and the wheels kernel make them:
#   1. the image: every package image.yaml pins, at its version (torch as PyPI serves it for cp312:
#      the CUDA build, several GB, which runs on the CPU);
#   2. mmcv 2.1.0 compiled against that torch (no build isolation), as the wheels kernel builds it;
#   3. what the image lacks: requirements.txt with every image package at the image's version
#      (siimcovid.kaggle.image.lane_requirements), under a constraints file of the image's pins, so,
#      like the wheels kernel's closure, nothing the image has is ever replaced.
# Python is the machine's CPython 3.12 (3.12.1 here; the image has 3.12.13: same minor, the
# wheels and the code see no difference that the suite knows of).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-common.sh
setup_args setup-kaggle.sh "$@"
VENV="${VENV_KAGGLE:-.venv-kaggle}"
PY="${PYTHON_KAGGLE:-}"
if [ -z "$PY" ]; then
  for cand in /root/.pyenv/versions/3.12.1/bin/python "$(command -v python3.12 || true)"; do
    [ -n "$cand" ] && [ -x "$cand" ] && { PY="$cand"; break; }
  done
fi
[ -n "$PY" ] || { echo "setup-kaggle: no CPython 3.12 found (the Kaggle image's minor): install one (pyenv install 3.12) or set PYTHON_KAGGLE=/path/to/python3.12" >&2; exit 2; }
pins=utils_dataset/siimcovid/configs/kaggle/image.yaml
key=$(cat "$pins" requirements.txt scripts/setup-kaggle.sh scripts/setup-common.sh utils_dataset/pyproject.toml \
      utils_dataset/siimcovid/kaggle/wheels.py utils_dataset/siimcovid/kaggle/image.py | sha256sum | cut -c1-16)
stamp="$VENV/.setup-$key"
if [ -f "$stamp" ]; then
  echo "setup-kaggle: $VENV is up to date ($stamp)"; exit 0
fi
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
vpy="$VENV/bin/python"
pip="$vpy -m pip --disable-pip-version-check"
# pyyaml only to read the pins (the image layer then sets its version); build prerequisites of mmcv
$pip install --quiet "setuptools<81" wheel ninja psutil pyyaml
lists="$VENV/siimcovid-lists"
mkdir -p "$lists"
# the pins are read by their owner module, never parsed here
PYTHONPATH=utils_dataset "$vpy" - "$lists" <<'EOF'
import sys
from pathlib import Path
from siimcovid.kaggle.image import lane_requirements, load
from siimcovid.kaggle.render import requirement_pins

out = Path(sys.argv[1])
pins = load()
(out / "image.txt").write_text("\n".join(pins.requirements()) + "\n")
(out / "lane.txt").write_text("\n".join(lane_requirements(requirement_pins(), pins)) + "\n")
print(f"setup-kaggle: image pins read {pins.read} ({pins.path})")
EOF
# 1. the image (pip first: it is the resolver the wheels kernel runs)
$pip install "$(grep '^pip==' "$lists/image.txt")"
$pip install -c "$lists/image.txt" -r "$lists/image.txt"
# 2. mmcv with compiled CPU ops against the image's torch; a matching wheel in --wheels skips the build
MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
  $pip install --no-build-isolation -c "$lists/image.txt" "${findlinks[@]}" "$(grep '^mmcv==' "$lists/lane.txt")"
# 3. everything else, never replacing a package of the image
$pip install -c "$lists/image.txt" "${findlinks[@]}" -r "$lists/lane.txt"
# opencv-python and -headless both write cv2/: the headless build must own it (no GUI libs on CI)
$pip install --force-reinstall --no-deps "$(grep '^opencv-python-headless==' "$lists/image.txt")"
$pip install --no-deps -e utils_dataset
"$vpy" -m ipykernel install --sys-prefix --name python3 >/dev/null
PYTHONPATH=utils_dataset "$vpy" -c 'from siimcovid.kaggle.image import mark_venv; mark_venv()'
rm -f "$VENV"/.setup-*
touch "$stamp"
echo "setup-kaggle: done ($VENV, $(( $(date +%s) - start )) s)"
