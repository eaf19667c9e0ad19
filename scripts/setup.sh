#!/usr/bin/env bash
# Creates .venv and installs the pinned stack. Idempotent: a stamp keyed on the
# requirements and this script makes a re-run with nothing changed take seconds.
#   scripts/setup.sh [--wheels DIR]   DIR: a wheel folder (e.g. ../shared/wheels) that
#                                     holds a prebuilt mmcv; without it mmcv builds from source.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-common.sh
setup_args setup.sh "$@"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
key=$(cat requirements.txt scripts/setup.sh scripts/setup-common.sh utils_dataset/pyproject.toml | sha256sum | cut -c1-16)
stamp="$VENV/.setup-$key"
if [ -f "$stamp" ]; then
  echo "setup: $VENV is up to date ($stamp)"; exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip="$VENV/bin/python -m pip --disable-pip-version-check"
# Build prerequisites for mmcv (no build isolation: it compiles against the installed torch).
$pip install "setuptools<81" wheel ninja psutil torch==2.13.0
# mmcv with compiled CPU ops; a matching wheel in --wheels skips the 20-30 minute build.
MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
  $pip install --no-build-isolation "${findlinks[@]}" mmcv==2.1.0
$pip install "${findlinks[@]}" -r requirements.txt
# mmengine pulls opencv-python; the headless build must own cv2 (no GUI libs on Kaggle/CI).
$pip install --force-reinstall --no-deps opencv-python-headless==5.0.0.93
$pip install --no-deps -e utils_dataset
$VENV/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
rm -f "$VENV"/.setup-*
touch "$stamp"
echo "setup: done ($VENV)"
