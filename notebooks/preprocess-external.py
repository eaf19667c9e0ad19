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
# # siimcovid preprocess external
# External chest X-ray sets (RSNA Pneumonia, VinBigData, NIH ChestX-ray14, CheXpert), each read as
# published and written in the preprocess layout (`<out>/<source>/meta.csv`, `images/<S>/train/`,
# `errors.csv`), with `source`, `opacity`, `view`, `box_labelled` and the source's own `labels`.
# Images that duplicate the competition's (perceptual hash against the preprocess kernel's output)
# and lateral views are left out and listed in `errors.csv`. CPU, internet off; an optional stage
# (`kaggle plan --include preprocess-external`). Settings: `siimcovid/configs/external/<source>.yaml`.

# %% tags=["parameters"]
sources = ["rsna", "vinbigdata", "nih", "chexpert"]  # which attached sources to convert (a missing one is skipped)
src_dirs = {}  # source -> its folder (a source not named here is found under /kaggle/input by its marker file)
out_dir = None  # None: /kaggle/working on Kaggle, ./work/external locally (one folder per source below it)
sizes = [512]  # output sizes in px
exclude_like = None  # competition preprocess output to find duplicates in (None: found by its meta.csv)
limit = 0  # convert at most this many images per source (0: all)
overrides = {}  # source -> {key: value} of its config, e.g. {"chexpert": {"uncertain": "ignore"}}

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
prepare_kernel("preprocess-external")  # no-op locally; on Kaggle: checks the image, installs what this kernel needs from the wheels offline

# %%
import pandas as pd

from siimcovid.layout import find_preprocess, read_errors
from siimcovid.paths import working_dir
from siimcovid.preprocess.external.cli import convert_sources

out = out_dir or str(working_dir("work/external"))
counts, skipped = convert_sources(sources, out, src_dirs=src_dirs, sizes=sizes, limit=limit, overrides=overrides,
                                  exclude_like=exclude_like or str(find_preprocess(None)))
print(pd.DataFrame(counts).T.drop(columns=["opacity", "errors_by_stage"], errors="ignore").to_string())
for source, why in skipped.items():
    print(f"{source}: skipped ({why})")

# %% [markdown]
# What was left out or failed, per source and stage (`errors.csv`).

# %%
left_out = pd.concat([read_errors(f"{out}/{s}").assign(source=s) for s in counts] or [read_errors(out)])
left_out.groupby(["source", "stage"]).size().rename("images").to_frame() if len(left_out) else "nothing left out"
