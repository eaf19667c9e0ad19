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
# # siimcovid wheels
# Runs once with internet ON and saves every wheel the internet-off kernels need (and an mmcv
# built against this image's torch) to its output; the other kernels list it in `kernel_sources`.

# %% tags=["parameters"]
out_dir = None  # default: /kaggle/working/wheels on Kaggle, ./work/wheels locally
build_mmcv = True
dry_run = False

# %%
import glob, sys
try:
    import siimcovid
except ImportError:  # on Kaggle: the utils dataset is mounted somewhere under /kaggle/input
    hits = sorted(glob.glob("/kaggle/input/**/siimcovid/__init__.py", recursive=True))
    if not hits:
        raise RuntimeError("add the siimcovid utils dataset to this kernel's dataset_sources")
    sys.path.insert(0, hits[0].rsplit("/siimcovid/", 1)[0])
    import siimcovid

# %%
from siimcovid.kaggle import build_wheels
from siimcovid.paths import working_dir

out = out_dir or str(working_dir("work") / "wheels")
for cmd in build_wheels(out, build_mmcv=build_mmcv, dry_run=dry_run):
    print(" ".join(cmd))
print(open(f"{out}/siimcovid-wheels.txt").read())
