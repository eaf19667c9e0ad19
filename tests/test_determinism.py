"""Two runs of the same tiny stage with the same seed write the same oof.csv (issue 20, finding 7).

Measured before the fix: one study fold at 64 px trained three times in one process gave three
different oof.csv (first image P(typical) 0.231, 0.385, 0.396): TensorFlow's training input
pipeline and kernels ran nondeterministically. ``classify.runtime.prepare`` now enables op
determinism on the CPU; the detector fold (mmdet on CPU, no loader workers) was already repeatable
and the detector test in test_detect.py keeps it so.

Each run is its own process, as each kernel (papermill) and each `study-train` is: a process that
already ran other TensorFlow work (this test session) is not what a seed promises to repeat."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

import siimcovid  # noqa: F401  (before TensorFlow)

pytest.importorskip("tensorflow")

RUN = """
import json, sys
from dataclasses import replace
import siimcovid
from siimcovid.classify import runtime
from siimcovid.study import config as C
from siimcovid.study import train as T
a = json.loads(sys.argv[1])
cfg = replace(C.load_config("tiny_cpu", sets=["mixed_precision=off"]), hub_handle=a["hub"], preprocess=a["pre"],
              workdir=a["work"], batch_size=4, name="det", verbose=0, fold=0, epochs=1, steps_per_epoch=2,
              tta_hflip=False)
T.train_fold(cfg)
print(json.dumps(runtime.prepare()))
"""


def test_study_fold_twice_with_one_seed_gives_the_same_oof(study_preprocess, tmp_path):
    from siimcovid.classify.backbones import export_tiny_savedmodel

    hub = str(export_tiny_savedmodel(tmp_path / "hub", endpoints=True))
    oofs = []
    for run, hashseed in (("a", "1"), ("b", "2")):
        args = {"hub": hub, "pre": str(study_preprocess), "work": str(tmp_path / run)}
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        proc = subprocess.run([sys.executable, "-c", RUN, json.dumps(args)], capture_output=True, text=True, env=env,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1])["deterministic"] is True  # CPU: op determinism on
        oofs.append(pd.read_csv(tmp_path / run / "det" / "fold0" / "oof.csv"))
    pd.testing.assert_frame_equal(oofs[0], oofs[1], check_exact=True)
    assert oofs[0]["p_typical"].nunique() > 1  # a model that predicts something, not a constant
