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
# # siimcovid: train the study classifier, one fold
# EfficientNetV2 (TF Hub / Kaggle Models) or an sm FPN, both with the auxiliary box-mask loss,
# on the preprocess output. One kernel per fold (`fold` is injected); re-running continues from
# the last epoch's checkpoint. Writes `<exp>/fold<k>/` (best weights, history, OOF and test
# predictions) and, with `merge`, the study predictions of every fold found
# (`oof_study.csv`, `test_study.csv`, `scores.json`). Logic lives in `siimcovid.study`.

# %% tags=["parameters"]
config = "effv2l_hub_512"  # variant in siimcovid/configs/study/ (or a YAML path)
fold = 0
folds = None  # list of folds to train in this run (local runs), None: only `fold`
overrides = {}  # any config key, e.g. {"epochs": 2, "image_size": 64}
preprocess = None  # folder holding meta.csv, None: find it under /kaggle/input
workdir = None  # None: /kaggle/working (Kaggle) or ./work/study
make_tiny_hub = None  # folder: write a tiny local SavedModel there first and use it as hub_handle
# (its first-stage width: overrides["tiny_width"], default 16; not a config key, taken out of overrides)
teacher = None  # noisy student: the previous round's output folder(s)
merge = False  # merge every fold*/ found under the experiment folder after training

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
prepare_kernel("train-study")  # no-op locally; on Kaggle: checks the image, installs what this kernel needs from the wheels offline

# %%
import pandas as pd
from IPython.display import Image, display

from siimcovid.ensemble.study_merge import format_scores, merge as merge_folds
from siimcovid.study.train import run
configs, scores = run(config, folds if folds is not None else [fold], overrides, preprocess=preprocess,
                      workdir=workdir, teacher=teacher, make_tiny_hub=make_tiny_hub)
pd.DataFrame([{k: v for k, v in s.items() if k != "data"} for s in scores])

# %% [markdown]
# Training history of the last fold trained (losses, validation study mAP per epoch).

# %%
cfg = configs[-1]
out = cfg.out_dir()
display(pd.read_csv(out / "history.csv"))
if (out / "history.png").exists():
    display(Image(filename=str(out / "history.png")))

# %%
if merge:
    summary = merge_folds(out.parent, how=cfg.study_agg, use_tta=cfg.tta_hflip)
    print(format_scores(summary))
    display(pd.read_csv(out.parent / "test_study.csv").head())
