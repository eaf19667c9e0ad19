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
# # siimcovid: train the binary `none` classifier, one fold
# Per image P(no opacity), one sigmoid on a Keras EfficientNet (B7 at 640 px by default) with the
# auxiliary box-mask loss. The unboxed images of a study that has a boxed image are left out of
# training and still predicted. One kernel per fold (`fold` is injected) trains every member
# listed in `members` one after the other; re-running continues from each member's last
# checkpoint. Writes `<member>/fold<k>/` (best weights, history, OOF and test predictions) and,
# with `merge`, the ensemble of every member x fold found (`binary-merge`: fitted weights, OOF
# `none` AP of every member, the ensemble and, with `study`, the study negative and their blend).
# Logic lives in `siimcovid.binary` on the shared core `siimcovid.classify`.

# %% tags=["parameters"]
members = None  # config variants in siimcovid/configs/binary/ to train, None: the ensemble's (ensemble.yaml)
fold = 0
folds = None  # list of folds to train in this run (local runs), None: only `fold`
overrides = {}  # any config key for every member, e.g. {"epochs": 2, "image_size": 64}
preprocess = None  # folder holding meta.csv, None: find it under /kaggle/input
workdir = None  # None: /kaggle/working (Kaggle) or ./work/binary
merge = False  # after training: binary-merge every <member>/fold*/ found under workdir
study = None  # with merge: a study-merge output folder (oof_study.csv), for the negative's AP and the blend
make_tiny_hub = None  # folder: write a tiny local SavedModel there first and use it as hub_handle (CPU tests)

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
prepare_kernel("train-binary")  # no-op locally; on Kaggle: checks the image, installs what this kernel needs from the wheels offline

# %%
import pandas as pd
from IPython.display import Image, display

from siimcovid.binary.config import load_ensemble_config
from siimcovid.ensemble.binary_merge import format_scores, merge as merge_members
from siimcovid.binary.train import run
configs, scores = run(members, folds if folds is not None else [fold], overrides, preprocess=preprocess,
                      workdir=workdir, make_tiny_hub=make_tiny_hub)
names = list(dict.fromkeys(c.name for c in configs))  # member folders, in training order
pd.DataFrame([{k: v for k, v in s.items() if k != "data"} for s in scores])

# %% [markdown]
# Training history of the last member x fold trained (losses, validation `none` AP per epoch).

# %%
out = configs[-1].out_dir()
display(pd.read_csv(out / "history.csv"))
if (out / "history.png").exists():
    display(Image(filename=str(out / "history.png")))

# %%
if merge:
    summary = merge_members(out.parent.parent, load_ensemble_config("ensemble", {"members": names}), study=study)
    print(format_scores(summary))
    display(pd.read_csv(out.parent.parent / "test_binary.csv").head())
