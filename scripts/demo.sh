#!/usr/bin/env bash
# The main job on synthetic data: synth -> folds -> preprocess -> baseline / small learner ->
# study classifier folds -> merge -> submission.csv -> validate -> score, side by side.
# Every step skips work that is already done, so an interrupted demo resumes.
#   scripts/demo.sh DIR STUDIES SCALE SEED SIZE
set -euo pipefail
cd "$(dirname "$0")/.."
D="${1:-demo}"; STUDIES="${2:-300}"; SCALE="${3:-0.25}"; SEED="${4:-0}"; SIZE="${5:-128}"
FOLDS="${DEMO_FOLDS:-0 1 2 3 4}"
STUDY_CONFIG="${DEMO_STUDY_CONFIG:-demo_cpu}"
PY=".venv/bin/python"
siim() { echo "+ siimcovid $*" >&2; "$PY" -m siimcovid "$@"; }
mkdir -p "$D/subs" "$D/preds" "$D/scores"

if [ -f "$D/data/synth.json" ]; then
  # Resuming: the folder must hold the set that was asked for, or every later step would mix sets.
  "$PY" - "$D/data/synth.json" "$STUDIES" "$SEED" "$SCALE" <<'PY' || exit 2
import json, sys
c = json.load(open(sys.argv[1]))["config"]
want = {"studies": int(sys.argv[2]), "seed": int(sys.argv[3]), "scale": float(sys.argv[4])}
have = {k: type(v)(c[k]) for k, v in want.items()}
if have != want:
    sys.exit(f"demo: {sys.argv[1]} holds {have}, not {want}: use another DEMO=folder or `make clean-demo`")
PY
else
  siim synth --out "$D/data" --studies "$STUDIES" --seed "$SEED" --scale "$SCALE"
fi
[ -f "$D/data/folds.csv" ] || siim folds --data "$D/data" --k 5 --seed 42
# preprocess resumes by itself (finished images are skipped); exit 1 = some files failed, listed in errors.csv
siim preprocess --data "$D/data" --out "$D/pre" --size "$SIZE" || echo "preprocess: see $D/pre/errors.csv" >&2

siim baseline --data "$D/data" --out "$D/subs/baseline.csv"
siim baseline --data "$D/data" --out "$D/subs/oracle.csv" --oracle   # the truth: must score 1.000
siim learner --data "$D/data" --pre "$D/pre" --size "$SIZE" --out "$D/subs/learner.csv" \
  --image-preds "$D/preds/learner_image.csv" --study-preds "$D/preds/learner_study.csv"

# Study classifier, one run per fold (what the five train-study-fold-k kernels do on Kaggle), on a tiny
# local SavedModel standing in for the TF Hub EfficientNetV2 (no downloads here). Re-runs resume.
[ -f "$D/tiny_hub/saved_model.pb" ] || siim study-train --make-tiny-hub "$D/tiny_hub" --tiny-width 16
# shellcheck disable=SC2086
siim study-train --config "$STUDY_CONFIG" --preprocess "$D/pre" --workdir "$D/study" \
  --set hub_handle="$D/tiny_hub" --set verbose=0 --fold $FOLDS
siim study-merge --work "$D/study/$STUDY_CONFIG"
# Detector (issue 9): the default DCN Faster R-CNN made narrow for CPU (tiny_cpu), one run per fold as the
# train-det-r1-fold-k kernels do, merged; --truth scores its fused test boxes on the same test split as
# the learner's (opacity AP in $D/det/<config>/scores.json). Re-runs resume after the last epoch.
# Two folds at a time with one torch thread each: on this 2-core machine one thread per process cost
# 0.7 s CPU per training step against 6 s with two (OpenMP threads spinning; measured on a loaded
# machine with a narrow R50 at 96 px, batch 8).
DET_CONFIG="${DEMO_DET_CONFIG:-tiny_cpu}"; DET_JOBS="${DEMO_DET_JOBS:-2}"
mkdir -p "$D/det"
det_fold() {
  OMP_NUM_THREADS=1 "$PY" -m siimcovid det-train --config "$DET_CONFIG" --preprocess "$D/pre" --workdir "$D/det" \
    --size "$SIZE" --fold "$1" --no-progress > "$D/det/train_fold$1.log" 2>&1 \
    || echo "det-train fold $1 failed: see $D/det/train_fold$1.log" >&2
}
n=0
for f in $FOLDS; do
  echo "+ siimcovid det-train --config $DET_CONFIG --fold $f (log: $D/det/train_fold$f.log)" >&2
  det_fold "$f" &
  n=$((n + 1)); if [ $((n % DET_JOBS)) -eq 0 ]; then wait; fi
done
wait
siim det-merge --work "$D/det/$DET_CONFIG" --truth "$D/data" || echo "det-merge: a fold was skipped, see $D/det/$DET_CONFIG/scores.json" >&2

# The pipeline's submission, made the way the Kaggle inference kernel makes it: test DICOMs only ->
# PNGs, the five folds' study predictions (hflip TTA) averaged, image rows from the best image-level
# component so far (the small learner; the detectors are the next stage), validated.
siim infer --data "$D/data" --train-pre "$D/pre" --study-work "$D/study" --exp "$STUDY_CONFIG" \
  --out "$D/infer" || echo "infer: see $D/infer/inference.json" >&2
cp "$D/infer/submission.csv" "$D/subs/pipeline.csv"

for sub in "$D"/subs/*.csv; do
  name=$(basename "$sub" .csv)
  siim validate-submission --data "$D/data" "$sub"
  siim score "$sub" --truth "$D/data" > "$D/scores/$name.json"
done
cp "$D/subs/pipeline.csv" "$D/submission.csv"

"$PY" - "$D/scores" <<'PY'
import json, sys
from pathlib import Path
rows = [(p.stem, json.loads(p.read_text())) for p in sorted(Path(sys.argv[1]).glob("*.json"))]
cls = ["negative", "typical", "indeterminate", "atypical", "opacity", "none"]
print(f"\n{'submission':<12}{'score':>8}{'study':>8}{'image':>8}  " + "".join(f"{c[:8]:>9}" for c in cls))
for name, s in rows:
    aps = "".join(f"{(s['ap'][c] if s['ap'][c] is not None else float('nan')):9.3f}" for c in cls)
    print(f"{name:<12}{s['score']:8.3f}{s['study_map']:8.3f}{s['image_map']:8.3f}  {aps}")
PY
echo "submission: $D/submission.csv"
