#!/usr/bin/env bash
# The classifier tests on a second, OLDER TensorFlow (Kaggle's GPU image ships an older TF than the
# 2.21 pinned here), so a Keras API drift shows up locally first. Outside CI's `make test`.
#   scripts/test-tf-old.sh [pytest args]     TF_OLD=2.19 (major.minor), VENV_TF_OLD=.venv-tf-old
# Builds its own venv: TensorFlow + the matching tf-keras from PyPI, plus the classifier's pinned
# dependencies from requirements.txt (no torch / mmcv / mmdet: the classifier does not import them).
set -euo pipefail
cd "$(dirname "$0")/.."
TF_OLD="${TF_OLD:-2.19}"
VENV="${VENV_TF_OLD:-.venv-tf-old}"
PY="${PYTHON:-python3}"
# torch, the mmlab stack, kaggle and the notebook runner are not needed by the classifier tests;
# TensorFlow and tf-keras come at the old version instead of the pins.
skip='^(torch|mmcv|mmdet|tensorflow|tf-keras|kaggle|papermill|ipykernel|nbformat|dicomsdl|ensemble-boxes)=='
key=$(printf '%s\n' "$TF_OLD" | cat - requirements.txt scripts/test-tf-old.sh | sha256sum | cut -c1-16)
stamp="$VENV/.setup-$key"
if [ ! -f "$stamp" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  pip="$VENV/bin/python -m pip --disable-pip-version-check"
  reqs=$(mktemp)
  trap 'rm -f "$reqs"' EXIT
  grep -v '^\s*#' requirements.txt | grep -Ev "$skip" | grep -v '^\s*$' > "$reqs"
  $pip install "tensorflow==${TF_OLD}.*" "tf-keras==${TF_OLD}.*" -r "$reqs"
  # mmengine pulls opencv-python; the headless build must own cv2 (as scripts/setup.sh does)
  $pip install --force-reinstall --no-deps "$(grep '^opencv-python-headless==' requirements.txt)"
  $pip install --no-deps -e utils_dataset
  rm -f "$VENV"/.setup-*
  touch "$stamp"
fi
"$VENV/bin/python" -c 'import tensorflow as tf, tf_keras; print("TensorFlow", tf.__version__, "tf-keras", tf_keras.__version__)'
tests=$(ls tests/test_study*.py tests/test_classify*.py tests/test_accelerator.py 2>/dev/null || true)
exec "$VENV/bin/python" -m pytest -q $tests "$@"
