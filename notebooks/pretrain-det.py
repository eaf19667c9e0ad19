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
# # siimcovid pretrain det
# A detector pre-trained on the external sets' boxes (RSNA Pneumonia, the VinBigData opacity findings: the
# `preprocess-external` kernel's output), whose weights start every detector fold: when this kernel is in the
# graph (`kaggle plan --include preprocess-external pretrain-det`), the train-det fold kernels read it and get
# `init_from="pretrain-det"`. It trains the same variant as the folds (a fold refuses weights of another one),
# from the weights kernel's COCO checkpoint, on the box-labelled rows; one external fold is held out and
# scored. Writes `pretrain/det/<variant>/` (`model.pth`, history, `oof.csv`, the manifest). Logic lives in
# `siimcovid.pretrain.det`.

# %% tags=["parameters"]
config = "faster_rcnn_r50_dcn"  # detector variant in siimcovid/configs/det/: the one the folds train
configs = None  # several variants, pre-trained one after the other (every detector the folds train); None: [config]
sources = ["rsna", "vinbigdata"]  # external sets to train on (a set that is not attached is skipped)
size = None  # input px (the external sets must hold it), None: the config's siim.size
overrides = {}  # any config key, e.g. {"train_cfg.max_epochs": 6, "siim.empty_rate": 0.1}
external = None  # folder holding the external sets, None: found under /kaggle/input
held_out_fold = 0  # the external fold scored, not trained on
workdir = None  # None: /kaggle/working (Kaggle) or ./work
gpus = None  # None: every visible GPU (2 on a T4 x2 session: torchrun), 0/1: this process

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
prepare_kernel("pretrain-det")  # no-op locally; on Kaggle: checks the image, installs what this kernel needs from the wheels offline

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Image, display

from siimcovid.pretrain.det import run

scores = [run(c, sources, size=size, overrides=overrides, external=external, workdir=workdir, gpus=gpus,
              held_out_fold=held_out_fold) for c in (configs or [config])]
score = scores[-1]
pd.DataFrame(scores)

# %% [markdown]
# Training loss.

# %%
out = Path(score["run_dir"])
if (out / "loss.png").exists():
    display(Image(filename=str(out / "loss.png")))
