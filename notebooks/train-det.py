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
# # siimcovid: train a detector (mmdet), one fold
# DCN Faster R-CNN (default), Cascade R-CNN, RetinaNet, YOLOv3 for the `opacity` boxes, on the preprocess
# output. One kernel per fold (`fold` is injected); re-running continues after the last epoch's checkpoint.
# On a session with 2 GPUs both are used (torchrun, mmdet's distributed launcher). Writes
# `<variant>[_r<round>]/fold<k>/`: checkpoints, `model.pth`, `history.csv` + `loss.png`, `oof.csv` and
# `test.csv` (boxes in original pixels, with and without flip TTA), `fold_score.json`; with `merge`, the
# merged boxes and `scores.json` of every fold found. Logic lives in `siimcovid.detect`.

# %% tags=["parameters"]
config = "faster_rcnn_r50_dcn"  # variant in siimcovid/configs/det/ (or a .py path)
configs = None  # several variants, trained one after the other in this kernel (a recipe's detector members); None: [config]
fold = 0
folds = None  # list of folds to train in this run (local runs), None: only `fold`
size = None  # input px (the preprocess output must hold it), None: the config's siim.size
train_round = 1  # 2+: train + pseudo-labelled test images (needs `pseudo`)
pseudo = None  # pseudo_labels.csv of det-pseudo; None: searched under /kaggle/input in round 2+
init_from = None  # "pretrain-det": start from the pretrain-det kernel's weights (the graph sets it when that
                  # kernel is in the plan); a .pth path; None: the config's siim.weights (COCO on Kaggle)
overrides = {}  # any config key, e.g. {"train_cfg.max_epochs": 2, "siim.weights": "/kaggle/input/.../coco.pth"}
preprocess = None  # folder holding meta.csv, None: find it under /kaggle/input
workdir = None  # None: /kaggle/working (Kaggle) or ./work/det
gpus = None  # None: every visible GPU (2 on a T4 x2 session: torchrun), 0/1: this process
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
prepare_kernel("train-det")  # no-op locally; on Kaggle: checks the image, installs what this kernel needs from the wheels offline

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Image, display

from siimcovid.ensemble.det_merge import format_scores, merge as merge_folds
from siimcovid.detect.train import run

scores = [s for c in (configs or [config])
          for s in run(c, folds if folds is not None else [fold], size=size, train_round=train_round, pseudo=pseudo,
                       init_from=init_from, overrides=overrides, preprocess=preprocess, workdir=workdir, gpus=gpus)]
pd.DataFrame(scores)

# %% [markdown]
# Training loss of the last fold trained.

# %%
out = Path(scores[-1]["run_dir"])
if (out / "loss.png").exists():
    display(Image(filename=str(out / "loss.png")))

# %%
if merge:
    print(format_scores(merge_folds(out.parent)))
