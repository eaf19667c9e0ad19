# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # siimcovid inference (code-competition kernel)
# Internet off, at most 9 hours, writes `/kaggle/working/submission.csv` for the test set the kernel
# sees (the hidden one when it runs as a submission). Steps, all in `siimcovid.inference`:
# test DICOMs -> PNGs (`pre_test/`, same pixel settings as the train preprocess run); the ensemble's
# merge fitted on every member's out-of-fold predictions (`siimcovid.ensemble`); one fold of each
# member timed on a few test images and the hidden test set's time projected against the 9-hour
# limit; every study fold predicts the test images (hflip TTA), detector folds give boxes (flip TTA,
# WBF in two levels), binary members P(none); the merge writes study and image rows (the small
# learner gives the image rows only when no detector or binary member exists); validation.
# A fold that cannot load is reported and skipped; no fold at all -> class priors (said loudly);
# a test DICOM that fails gets a fallback row and a line in `pre_test/errors.csv`.

# %% tags=["parameters"]
config = None  # variant in siimcovid/configs/infer/ (or a path); None = the InferConfig defaults
data_dir = None  # competition folder; None = found under /kaggle/input by sample_submission.csv
train_pre = None  # preprocess kernel output (meta.csv + images/<S>/train); None = found by meta.csv
study_work = None  # folder(s) holding fold*/ (list or one path); None = search /kaggle/input
out_dir = None  # None = /kaggle/working on Kaggle, ./work/inference locally
learner_size = None  # the small learner's PNG folder (images/<S>/); None = the smallest in train_pre
limit = 0  # convert at most this many test images (0 = all; smoke runs only)
exp = None  # only the folds of this experiment (config name), None = every fold found
hub = None  # backbone SavedModel folder for every fold, None = resolve each fold's hub_handle
batch_size = None  # prediction batch, None = each fold's training batch
tta = None  # hflip TTA on/off, None = as each fold was configured
workers = 0  # preprocess worker processes (0 = one per CPU core)
threads = 0  # TensorFlow threads (0 = TF default)
seed = 0
learner = {}  # other LearnerConfig fields of the image learner, e.g. {"patch_iter": 50}
ensemble = "default"  # ensemble variant (siimcovid/configs/ensemble/): members, weights, merge rule
ensemble_fit = None  # a saved ensemble_fit.json (cv-report's); None = fit here on the members' OOF
budget_probe = True  # time each member on a few test images, project the hidden test set vs 9 h first

# %%
import glob, sys
try:
    import siimcovid
except ImportError:  # on Kaggle: the utils dataset is mounted 1-4 folders below /kaggle/input
    # fixed depths, shallowest first: a recursive "**" glob would walk the competition's DICOM tree
    pats = ["/kaggle/input/" + "*/" * d + "siimcovid/__init__.py" for d in range(1, 5)]
    hits = next((h for h in (sorted(glob.glob(p)) for p in pats) if h), [])
    if not hits:
        raise RuntimeError("add the siimcovid utils dataset to this kernel's dataset_sources")
    sys.path.insert(0, hits[0].rsplit("/siimcovid/", 1)[0])
    import siimcovid
from siimcovid.kaggle.wheels import prepare_kernel
prepare_kernel("inference")  # no-op locally; on Kaggle: checks the image, installs what this kernel needs from the wheels offline

# %%
import json
from pathlib import Path

import pandas as pd

from siimcovid.inference import config_from_params, format_summary, plot_test_predictions, run

cfg = config_from_params(config, data=data_dir, train_pre=train_pre, study_work=study_work, out=out_dir,
                         learner_size=learner_size,
                         limit=limit, exp=exp, hub=hub, batch_size=batch_size, tta=tta, workers=workers,
                         threads=threads, seed=seed, learner=learner, ensemble=ensemble,
                         ensemble_fit=ensemble_fit, budget_probe=budget_probe)
summary = run(cfg)
out = Path(summary["out"])
print(format_summary(summary))

# %% [markdown]
# Study folds (used or skipped, with the reason) and the test DICOMs that failed to convert.

# %%
pd.DataFrame.from_dict(summary["study"]["folds"], orient="index")

# %%
pd.read_csv(out / "pre_test" / "errors.csv")

# %% [markdown]
# The ensemble: the merge used (fitted on the members' out-of-fold predictions, or loaded) and the
# budget projected before the full prediction (one fold of each member timed on a few test images).

# %%
print(json.dumps({k: summary["ensemble"].get(k) for k in ("source", "oof_default", "oof_fitted", "settings")},
                 indent=1, default=str))
print("\n".join(summary.get("budget_lines", [])))

# %% [markdown]
# The submission, and a few test images with the image rows' boxes (score >= 0.3) drawn in the
# preprocessed frame. With ground truth (synthetic sets: `DATA/truth`) the metric's result too.

# %%
sub = pd.read_csv(out / "submission.csv")
print(f"{len(sub)} rows, {sub['id'].str.endswith('_study').sum()} study rows")
sub.head()

# %%
fig = plot_test_predictions(out, n=4)

# %%
if summary["score"] is not None:
    print(json.dumps({k: summary["score"][k] for k in ("score", "study_map", "image_map", "ap")}, indent=1))
