"""Inference rebuilds a trained fold without its pretrained backbone file (issue 20, finding 2):
a member trained from an ImageNet .h5 (``backbone_weights``) predicts where that file is not
attached, because the fold's own weights file holds every weight."""
from __future__ import annotations

import numpy as np
import pytest

import siimcovid  # noqa: F401  (before TensorFlow)

tf = pytest.importorskip("tensorflow")

from siimcovid import runs  # noqa: E402


def _keras_fold(root, load_config, task, pre, stage_sets):
    """A fold folder as training leaves it: config.json naming a backbone .h5, best.weights.h5."""
    from siimcovid.classify.backbones import KERAS_BACKBONES, build_model

    make, _ = KERAS_BACKBONES["efficientnetb0"]
    imagenet = root / "imagenet" / "efficientnet-b0_notop.h5"
    imagenet.parent.mkdir(parents=True)
    make(include_top=False, weights=None, input_shape=(64, 64, 3)).save_weights(str(imagenet))
    cfg = load_config("tiny_cpu", {"model": "keras", "keras_backbone": "efficientnetb0", "aux_seg": False,
                                   "backbone_weights": str(imagenet), "preprocess": str(pre),
                                   "workdir": str(root / "work"), "fold": 0, **stage_sets})
    model = build_model(cfg, task.n_outputs, task.activation)  # reads the .h5, as training did
    out = cfg.out_dir()
    runs.write_config(out, cfg, src_size=64)
    model.save_weights(str(out / runs.BEST_WEIGHTS))
    tf.keras.backend.clear_session()
    imagenet.unlink()  # the inference kernel does not attach the Keras weights dataset
    return out


def test_binary_member_trained_from_a_backbone_file_predicts_without_it(tmp_path):
    from conftest import write_study_fixture
    from siimcovid.binary.config import load_config
    from siimcovid.binary.predict import predict_folds
    from siimcovid.binary.task import BINARY

    pre = write_study_fixture(tmp_path, n_folds=2)
    fold = _keras_fold(tmp_path, load_config, BINARY, pre, {})
    tables, info = predict_folds([fold], pre)
    assert info["skipped"] == [] and info["used"] == [str(fold)], info
    (table,) = tables
    assert len(table) == 4 and np.isfinite(table["p_none"]).all()


def test_study_fold_is_rebuilt_without_its_backbone_file(tmp_path, monkeypatch):
    """The study predictor builds from the same for_trained_weights (checked without building)."""
    from siimcovid.classify import backbones
    from siimcovid.study.config import load_config
    from siimcovid.study.predict import load_fold_model

    seen = []

    class Built:
        def load_weights(self, path):
            seen.append(path)

    monkeypatch.setattr(backbones, "build_model", lambda cfg, *task: seen.append(cfg) or Built())
    cfg = load_config("tiny_cpu", {"model": "keras", "backbone_weights": "/nowhere/effb0_notop.h5",
                                   "sm_encoder_weights": "imagenet"})
    (tmp_path / runs.BEST_WEIGHTS).write_bytes(b"")
    load_fold_model(tmp_path, cfg)
    built, weights = seen
    assert built.backbone_weights is None and built.sm_encoder_weights is None and built.keras_backbone == cfg.keras_backbone
    assert weights == str(tmp_path / runs.BEST_WEIGHTS)
