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
# # siimcovid weights
# Runs with internet ON (the only other online kernel beside wheels), on CPU. It fetches every
# pretrained file the members start from: the Keras ImageNet notop weights the classifier variants
# name, and the COCO checkpoint of every detector variant (mmdet's model-zoo URL of the config it
# inherits). Each is checked against its published hash; the manifest `siimcovid-weights.json` is
# written last. The training kernels list this kernel in `kernel_sources`; the detectors then start
# from COCO (`siim.weights="auto"`). Locally (`dry_run`) it writes only the plan, and every member
# starts from random initialisation.

# %% tags=["parameters"]
out_dir = None  # default: /kaggle/working/weights on Kaggle, ./work/weights locally
dry_run = False  # write the plan (manifest without files), fetch nothing

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
prepare_kernel("weights")  # no-op locally; on Kaggle: checks the image, installs what this kernel needs from the wheels offline

# %%
import pandas as pd

from siimcovid.kaggle.weights import fetch
from siimcovid.paths import working_dir

manifest = fetch(out_dir or working_dir("work") / "weights", dry_run=dry_run)
pd.DataFrame.from_dict(manifest["files"], orient="index")[["kind", "used_by", "url"] + (
    [] if dry_run else ["bytes", "sha256"])]
