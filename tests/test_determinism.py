"""Two runs of the same tiny stage with the same seed write the same oof.csv (issue 20, finding 7).

Measured before the fix: one study fold at 64 px trained three times in one process gave three
different oof.csv (first image P(typical) 0.231, 0.385, 0.396): TensorFlow's training input
pipeline and kernels ran nondeterministically. ``classify.runtime.prepare`` now enables op
determinism on the CPU; the detector fold (mmdet on CPU, no loader workers) was already repeatable
and the detector test in test_detect.py keeps it so."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

import siimcovid  # noqa: F401  (before TensorFlow)

tf = pytest.importorskip("tensorflow")


def test_study_fold_twice_with_one_seed_gives_the_same_oof(study_preprocess, tmp_path):
    from siimcovid.classify import runtime
    from siimcovid.classify.backbones import export_tiny_savedmodel
    from siimcovid.study import config as C
    from siimcovid.study import train as T

    hub = str(export_tiny_savedmodel(tmp_path / "hub", endpoints=True))
    oofs = []
    for run in ("a", "b"):
        cfg = replace(C.load_config("tiny_cpu", sets=["mixed_precision=off"]), hub_handle=hub,
                      preprocess=str(study_preprocess), workdir=str(tmp_path / run), batch_size=4, name="det",
                      verbose=0, fold=0, epochs=1, steps_per_epoch=2, tta_hflip=False)
        T.train_fold(cfg)
        oofs.append(pd.read_csv(tmp_path / run / "det" / "fold0" / "oof.csv"))
    assert runtime.prepare()["deterministic"] is True  # CPU: op determinism on
    pd.testing.assert_frame_equal(oofs[0], oofs[1], check_exact=True)
    assert oofs[0]["p_typical"].nunique() > 1  # a model that predicts something, not a constant
