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
# Runs with internet ON, in a GPU session of the SAME image as the kernels that install its output
# (`kaggle render|push --docker-image` pins one for all of them). It builds mmcv with CUDA ops for this
# image's torch (T4: `TORCH_CUDA_ARCH_LIST=7.5`), resolves the full dependency closure of the one
# list in `siimcovid.kaggle.wheels.KERNEL_REQUIREMENTS` (+ the tf-keras matching this image's TensorFlow)
# against this image (its own TF / torch / numpy are never replaced), saves every wheel, and ENDS
# with a dry-run offline install of exactly that list: a missing dependency fails here, not in
# every downstream kernel. The other kernels list this kernel in `kernel_sources`.

# %% tags=["parameters"]
out_dir = None  # default: /kaggle/working/wheels on Kaggle, ./work/wheels locally
build_mmcv = True  # build mmcv 2.1.0 (20-30 min); False: a wheel set without the detection stack's mmcv
require_cuda = True  # mmcv with CUDA ops (needs a GPU session); False only for a local CPU try
dry_run = False  # print the plan, build nothing

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

# %%
import json

from siimcovid.paths import working_dir
from siimcovid.kaggle.wheels import WHEELS_INFO, WHEELS_MARKER, build_wheels

out = out_dir or str(working_dir("work") / "wheels")
for cmd in build_wheels(out, build_mmcv=build_mmcv, require_cuda=require_cuda, dry_run=dry_run):
    print(" ".join(cmd))
print(open(f"{out}/{WHEELS_MARKER}").read())
print(json.dumps(json.load(open(f"{out}/{WHEELS_INFO}")), indent=1))
