#!/usr/bin/env bash
# The main job on synthetic data, run the way Kaggle runs it: synth -> folds -> the kernel graph's
# notebooks (wheels plan, preprocess, five study, five binary `none` and five detector folds, inference)
# under papermill with `run-local`, each kernel seeing a Kaggle-shaped input folder -> baseline / oracle /
# small learner beside it -> the stages' OOF merges and the CV report -> validate -> score, side by side.
# Every step skips work that is already done (run-local keeps a done-marker per kernel), so an
# interrupted demo resumes.
#   scripts/demo.sh DIR STUDIES SCALE SEED SIZE        (DEMO_PROFILE=tiny: the notebook tests' sizes)
set -euo pipefail
cd "$(dirname "$0")/.."
D="${1:-demo}"; STUDIES="${2:-300}"; SCALE="${3:-0.25}"; SEED="${4:-0}"; SIZE="${5:-128}"
PROFILE="${DEMO_PROFILE:-demo}"
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
# External data: an RSNA-Pneumonia-layout set drawn like the competition's (DEMO_RSNA images), plus the
# hand-made CheXpert / VinBigData / NIH sets, laid out as Kaggle mounts them (run-local --inputs).
siim synth-external --out "$D/inputs" --rsna "${DEMO_RSNA:-600}" --chexpert 0 --seed "$SEED"
# The kernel graph, locally: every notebook under papermill in graph order (run-local; the same
# notebooks the Kaggle kernels run). The study folds use the demo_cpu variant on a tiny, randomly
# initialised stand-in for EfficientNetV2 (configs/local/demo.yaml; no downloads here).
# DEMO_JOBS kernels at once (default 2: the fold kernels in pairs, one core each).
# With the optional stages preprocess-external and pretrain-det: the detector folds start from a
# detector pre-trained on the RSNA-layout set (init_from="pretrain-det", wired by the graph).
siim run-local --data "$D/data" --out "$D/run" --profile "$PROFILE" --param "preprocess.sizes=[$SIZE]" \
  --param "preprocess-external.sizes=[$SIZE]" --include preprocess-external pretrain-det --inputs "$D/inputs" \
  --jobs "${DEMO_JOBS:-2}"
found() { find "$1" -maxdepth 4 -name "$2" -print -quit | xargs -r dirname; }
PRE=$(found "$D/run/siimcovid-preprocess/work" meta.csv)
INF=$(found "$D/run/siimcovid-inference/work" submission.csv)
[ -n "$PRE" ] && [ -n "$INF" ] || { echo "demo: no preprocess or inference output under $D/run" >&2; exit 1; }

siim baseline --data "$D/data" --out "$D/subs/baseline.csv"
siim baseline --data "$D/data" --out "$D/subs/oracle.csv" --oracle   # the truth: must score 1.000
siim learner --data "$D/data" --pre "$PRE" --size "$SIZE" --out "$D/subs/learner.csv" \
  --image-preds "$D/preds/learner_image.csv" --study-preds "$D/preds/learner_study.csv"

# Out-of-fold study mAP over the fold kernels' outputs (one folder of links, as a merge would see them)
mkdir -p "$D/study"
for f in "$D"/run/siimcovid-train-study-fold-*/work/study/*/fold*; do
  ln -sfn "$(cd "$f" && pwd)" "$D/study/$(basename "$f")"
done
siim study-merge --work "$D/study" || echo "study-merge: a fold was skipped, see $D/study/scores.json" >&2
# Binary `none` members over the fold kernels' outputs (folder of links, <member>/fold<k>): OOF none AP of
# every member, of the study model's negative and of their blend (weight fitted on OOF), then two more
# submissions: the pipeline's with `none` from the binary ensemble, and from that blend.
for f in "$D"/run/siimcovid-train-binary-fold-*/work/binary/*/fold*; do
  m=$(basename "$(dirname "$f")"); mkdir -p "$D/binary/$m"
  ln -sfn "$(cd "$f" && pwd)" "$D/binary/$m/$(basename "$f")"
done
siim binary-merge --work "$D/binary" --set "members=[]" --study "$D/study" \
  || echo "binary-merge: see $D/binary/scores.json" >&2
for name in binary binary+neg; do
  col=$([ "$name" = binary ] && echo p_none || echo p_none_blend)
  "$PY" - "$INF/test_image.csv" "$D/binary/test_binary.csv" "$col" "$D/preds/$name.csv" <<'PY'
import sys
import pandas as pd
image, binary = (pd.read_csv(p, dtype={"image_id": str}) for p in sys.argv[1:3])
none = image["image_id"].map(dict(zip(binary["image_id"], binary[sys.argv[3]])))
image["none"] = none.fillna(image["none"])  # an image the binary folds did not predict keeps the pipeline's none
image.to_csv(sys.argv[4], index=False)
PY
  siim make-submission --data "$D/data" --study "$INF/test_study.csv" --image "$D/preds/$name.csv" \
    --out "$D/subs/$name.csv"
done
# The pipeline's submission is the inference kernel's: test DICOMs -> PNGs, every study, binary and detector
# fold, merged by the rule fitted on their out-of-fold predictions, validated.
cp "$INF/submission.csv" "$D/subs/pipeline.csv"
# The detector folds (train-det-r1-fold-k kernels, demo_cpu variant: a narrow DCN Faster R-CNN on CPU)
# ran in the same graph; det-merge fuses their boxes and scores them on the same test split as the
# learner's (opacity AP in $D/det/scores.json).
mkdir -p "$D/det"
for f in "$D"/run/siimcovid-train-det-r1-fold-*/work/det/*/fold*; do
  [ -d "$f" ] && ln -sfn "$(cd "$f" && pwd)" "$D/det/$(basename "$f")"
done
siim det-merge --work "$D/det" --truth "$D/data" || echo "det-merge: a fold was skipped, see $D/det/scores.json" >&2
# Pre-trained against scratch: folds 0 and 1 of the same detector trained again from random init (two
# at once, a core each), merged beside the same two pre-trained folds (folds 2-4 left out to fit the time).
SCRATCH_FOLDS="0 1"
mkdir -p "$D/det-pretrained"
for k in $SCRATCH_FOLDS; do
  [ -d "$D/det/fold$k" ] && ln -sfn "$(cd "$D/det/fold$k" && pwd)" "$D/det-pretrained/fold$k"
  [ -f "$D/det-scratch/demo_cpu/fold$k/fold_score.json" ] || \
    OMP_NUM_THREADS=1 siim det-train --config demo_cpu --size "$SIZE" --fold "$k" --preprocess "$PRE" \
      --workdir "$D/det-scratch" --no-progress > "$D/det-scratch-fold$k.log" 2>&1 &
done
wait
siim det-compare --truth "$D/data" --out "$D/det_start.json" \
  "scratch=$D/det-scratch/demo_cpu" "pretrain-det=$D/det-pretrained" > "$D/det_start.txt" \
  || echo "det-compare: see $D/det_start.json" >&2
# The CV report: the inference kernel's merge (fitted on the members' out-of-fold predictions) scored on
# them, per member and per merge rule, with and without TTA ($D/cv_report/cv_report.html: PR curves,
# confusion matrix, calibration of `none`, example images).
siim cv-report --inputs "$D/run" --preprocess "$PRE" --out "$D/cv_report" \
  --compare "scratch=$D/det-scratch/demo_cpu" "pretrain-det=$D/det-pretrained" > "$D/cv_report.txt" \
  || echo "cv-report: a member or fold was skipped, see $D/cv_report/cv_report.json" >&2

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
echo
echo "CV report (out-of-fold, train split; * = the merge the inference kernel used):"
cat "$D/cv_report.txt"
echo
echo "Detector start, same folds ($SCRATCH_FOLDS), test split too: random init vs pretrain-det (RSNA-layout set):"
cat "$D/det_start.txt"
echo "submission: $D/submission.csv"
