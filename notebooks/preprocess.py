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
# # siimcovid preprocess
# Every train and test DICOM -> 8-bit PNGs at the requested sizes, `meta.csv` (original size,
# photometric, transfer syntax, boxes in the original and every output frame, study label, fold),
# `errors.csv`, `folds.csv`, `preprocess.json`. Runs on CPU with internet off; downstream kernels
# list this kernel in `kernel_sources`. Re-running resumes: finished images are skipped.

# %% tags=["parameters"]
data_dir = None  # competition folder; None = found under /kaggle/input by sample_submission.csv
out_dir = None  # None = /kaggle/working on Kaggle, ./work/preprocess locally
sizes = [512]  # output sizes in px, e.g. [512, 1024]
workers = 0  # 0 = one worker process per CPU core
keep_aspect = False  # True letterboxes instead of stretching to a square
decoder = "auto"  # auto | dicomsdl | pydicom | pillow
limit = 0  # convert at most this many images (0 = all)
tfrecords = False  # also write TFRecord shards for the TPU kernels
n_folds = 5  # used only when the data has no folds.csv
seed = 42

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
prepare_kernel("preprocess")  # no-op locally; on Kaggle: checks the image, installs what this kernel needs from the wheels offline

# %%
import pandas as pd

from siimcovid.data import find_data_dir
from siimcovid.layout import read_meta
from siimcovid.paths import working_dir
from siimcovid.preprocess.convert import PreprocessConfig, example_grid, parse_sizes, run

data = find_data_dir(data_dir)
out = out_dir or str(working_dir("work/preprocess"))  # /kaggle/working on Kaggle
cfg = PreprocessConfig(data=str(data), out=out, sizes=parse_sizes(sizes), workers=workers, keep_aspect=keep_aspect,
                       decoder=decoder, limit=limit, tfrecords=tfrecords, n_folds=n_folds, seed=seed)
summary = run(cfg)
print(pd.Series(summary["counts"]).to_string())
print(pd.Series(summary["timing"]).to_string())

# %% [markdown]
# Files that failed (with the reason) and the metadata table the later stages read.

# %%
errors = pd.read_csv(f"{out}/errors.csv")
print(f"{len(errors)} problem(s)")
errors.head(20)

# %%
meta = read_meta(out)
meta.groupby(["split", "photometric", "transfer_syntax"]).size().rename("images").to_frame()

# %% [markdown]
# One output image per photometric interpretation and transfer syntax, boxes drawn in the
# output frame (`boxes_<size>`): the opacities must sit inside the boxes, and bone must be
# bright on every row (MONOCHROME1 inverted).

# %%
fig = example_grid(out, min(cfg.sizes))
