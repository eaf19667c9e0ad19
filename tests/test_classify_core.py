"""The shared classifier core: a task defined HERE (a toy 1-output sigmoid "has a box" task, the
shape of the binary `none` stage) trains through classify.train_fold with no copied training
code and predicts with TTA; the backbone registry names the valid choices."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

import siimcovid  # noqa: F401  (before TensorFlow)

tf = pytest.importorskip("tensorflow")

from siimcovid import variants  # noqa: E402
from siimcovid.classify import backbones as B  # noqa: E402
from siimcovid.classify.config import MODEL_FAMILIES, ClassifierConfig  # noqa: E402
from siimcovid.classify.task import Task  # noqa: E402
from siimcovid.classify.train import train_fold  # noqa: E402


@dataclass
class ToyConfig(ClassifierConfig):
    STAGE: ClassVar[str] = "toy"
    label_smoothing: float = 0.0


class HasBoxTask(Task):
    name = "toy"
    columns = ("p_box",)
    activation = "sigmoid"
    metric_name = "val_acc"

    def targets(self, train, test, cfg):
        y = (train["boxes_src"].map(len) > 0).to_numpy(np.float32)[:, None]
        return train, y, np.ones(len(train), bool), {"n_train": len(train)}

    def metric(self, pred, cols, cfg):
        truth = pred["image_id"].map(self.truth).to_numpy()
        return float(((pred[cols[0]].to_numpy() > 0.5) == truth).mean())


@pytest.fixture(scope="module")
def toy_run(study_preprocess, tmp_path_factory):
    from siimcovid.classify.backbones import export_tiny_savedmodel

    root = tmp_path_factory.mktemp("toy")
    hub = export_tiny_savedmodel(root / "hub", width=4)
    meta = pd.read_csv(study_preprocess / "meta.csv", dtype={"image_id": str})
    task = HasBoxTask()
    task.truth = dict(zip(meta["image_id"], meta["boxes_64"].map(lambda s: len(json.loads(s)) > 0)))
    cfg = ToyConfig(name="toy1", hub_handle=str(hub), preprocess=str(study_preprocess), workdir=str(root),
                    image_size=64, batch_size=4, epochs=1, steps_per_epoch=1, mixed_precision="off", verbose=0,
                    randaug_n=0, decoder_filters=8)
    score = train_fold(cfg, task)
    return {"cfg": cfg, "task": task, "score": score, "out": cfg.out_dir()}


def test_a_task_defined_outside_the_package_trains_through_the_core(toy_run, study_preprocess):
    out, task = toy_run["out"], toy_run["task"]
    assert out == toy_run["cfg"].out_dir() and out.parent.name == "toy1"
    for name in ("best.weights.h5", "last.ckpt.index", "history.csv", "oof.csv", "test.csv", "config.json"):
        assert (out / name).exists(), name
    oof = pd.read_csv(out / "oof.csv")
    assert list(oof.columns) == ["image_id", "study_id", "fold", "p_box", "p_box_tta"]
    assert oof["p_box"].between(0, 1).all() and set(oof["fold"]) == {0}
    assert {"oof_acc", "oof_acc_tta"} <= set(toy_run["score"])
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [0] and "val_acc" in history
    # the resolved config records the source size it read
    assert json.loads((out / "config.json").read_text())["src_size"] == 64


def test_registry_names_the_valid_choices():
    cfg = ToyConfig(model="keras", keras_backbone="efficientnetb9", image_size=64)
    with pytest.raises(variants.ConfigError, match="efficientnetb9.*valid: efficientnetb0.*resnet101v2"):
        B.build_model(cfg, 1, "sigmoid")
    with pytest.raises(variants.ConfigError, match="model 'vgg' unknown; valid: hub, sm_fpn, keras"):
        B.build_model(ToyConfig(model="vgg"), 1, "sigmoid")
    with pytest.raises(variants.ConfigError, match="would download"):
        B.resolve_local_weights("imagenet", "backbone_weights")
    assert {"efficientnetb7", "efficientnetv2m", "resnet101v2"} <= set(B.KERAS_BACKBONES)
    # the config's check names the families the registry builds, no more, no fewer
    assert tuple(B.MODELS) == MODEL_FAMILIES
    with pytest.raises(variants.ConfigError, match="model must be one of hub, sm_fpn, keras, got 'vgg'"):
        ToyConfig(model="vgg").validate()


def test_keras_family_builds_with_a_sigmoid_head_and_aux_mask():
    cfg = ToyConfig(model="keras", keras_backbone="efficientnetb0", image_size=64, decoder_filters=8)
    model = B.build_model(cfg, 1, "sigmoid")
    out = model(np.zeros((1, 64, 64, 3), np.float32))
    assert out["cls"].shape == (1, 1) and out["seg"].shape == (1, 64, 64, 1)
    assert model.aux_design == "fpn_on_body"
