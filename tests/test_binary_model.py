"""The binary `none` task on the shared classifier core: a tiny member trains one step per fold
(random init, 64 px, CPU) with two mask heads, writes the fold contract, resumes, and merges."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import siimcovid  # noqa: F401  (before TensorFlow)

tf = pytest.importorskip("tensorflow")

from siimcovid import variants  # noqa: E402
from siimcovid.binary.config import BinaryEnsembleConfig, load_ensemble_config  # noqa: E402
from siimcovid.ensemble import binary_merge as M  # noqa: E402
from siimcovid.binary.config import BinaryConfig, load_config  # noqa: E402
from siimcovid.binary.task import BINARY  # noqa: E402
from siimcovid.binary.train import cli, train_fold  # noqa: E402

MEMBERS = ("effb7_640", "effv2m_640", "effb6_512")


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    """Fold 1 of a tiny member with two mask heads on the study fixture in 3 folds: fold 1 holds
    img011, the extra unboxed view of the boxed study st01; fold 2 holds img051 (st05)."""
    from conftest import write_study_fixture
    from siimcovid.classify.backbones import export_tiny_savedmodel

    root = tmp_path_factory.mktemp("binary")
    pre = write_study_fixture(root, n_folds=3)
    hub = export_tiny_savedmodel(root / "hub", width=4)
    sets = {"hub_handle": str(hub), "preprocess": str(pre), "workdir": str(root / "work"),
            "batch_size": 4, "steps_per_epoch": 1, "verbose": 0, "aux_heads": 2, "fold": 1}
    score = train_fold(load_config("tiny_cpu", sets))
    return {"root": root, "pre": pre, "work": root / "work", "sets": sets, "score": score}


def test_fold_outputs_follow_the_contract(binary_run):
    out = binary_run["work"] / "tiny_cpu" / "fold1"
    for name in ("best.weights.h5", "last.ckpt.index", "history.csv", "history.png", "oof.csv", "test.csv",
                 "config.json", "fold_score.json"):
        assert (out / name).exists(), name
    oof = pd.read_csv(out / "oof.csv", dtype={"image_id": str})
    assert list(oof.columns) == ["image_id", "study_id", "fold", "p_none", "p_none_tta", "has_box"]
    assert oof[["p_none", "p_none_tta"]].stack().between(0, 1).all() and set(oof["fold"]) == {1}
    # the unboxed extra view of a boxed study is predicted (and scored) though never trained on
    assert oof.set_index("image_id").loc["img011", "has_box"] == 0
    test = pd.read_csv(out / "test.csv")
    assert list(test.columns) == ["image_id", "study_id", "fold", "p_none", "p_none_tta"] and len(test) == 4
    s = binary_run["score"]
    assert {"oof_none_ap", "oof_none_ap_tta"} <= set(s) and 0 <= s["oof_none_ap"] <= 1
    history = pd.read_csv(out / "history.csv")
    assert {"val_none_ap", "seg_loss", "seg2_loss"} <= set(history.columns)  # both mask heads trained
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["src_size"] == 64 and cfg["aux_heads"] == 2 and cfg["loss"] == "bce"


def test_training_leaves_out_the_extra_views_of_boxed_studies(binary_run):
    meta = pd.read_csv(binary_run["pre"] / "meta.csv", dtype={"image_id": str})
    others = meta[(meta["split"] == "train") & (meta["fold"] != 1)]
    assert "img051" in set(others["image_id"])  # fold 2's extra view of the boxed st05
    assert binary_run["score"]["data"]["n_train"] == len(others) - 1


def test_rerun_resumes_and_the_merge_reads_the_fold(binary_run, tmp_path):
    again = train_fold(load_config("tiny_cpu", binary_run["sets"]))
    assert again["epochs_done"] == 1 and again["oof_none_ap"] == pytest.approx(binary_run["score"]["oof_none_ap"])
    s = M.merge(binary_run["work"], BinaryEnsembleConfig(members=["tiny_cpu"], n_random=10), out_dir=tmp_path)
    assert s["method"] == "single" and s["problems"] == []
    assert s["n_oof_images"] == len(pd.read_csv(binary_run["work"] / "tiny_cpu" / "fold1" / "oof.csv"))
    assert len(pd.read_csv(tmp_path / M.MERGED_TEST)) == 4


def test_two_mask_heads_on_a_keras_backbone():
    from siimcovid.classify.backbones import build_model

    cfg = BinaryConfig(model="keras", keras_backbone="efficientnetb0", backbone_weights=None, image_size=64,
                       decoder_filters=8, aux_heads=2)
    model = build_model(cfg, BINARY.n_outputs, BINARY.activation)
    out = model(np.zeros((1, 64, 64, 3), np.float32))
    assert out["cls"].shape == (1, 1) and out["seg"].shape == out["seg2"].shape == (1, 64, 64, 1)
    with pytest.raises(variants.ConfigError, match="aux_heads"):
        BinaryConfig(model="sm_fpn", aux_heads=2).validate()


def test_every_member_variant_loads_and_the_ensemble_lists_members():
    for name in MEMBERS + ("tiny_cpu", "demo_cpu"):
        cfg = load_config(name)
        assert cfg.name == name and cfg.label_smoothing == 0.01
    b7, v2m, b6 = (load_config(m) for m in MEMBERS)
    assert (b7.model, b7.keras_backbone, b7.image_size) == ("keras", "efficientnetb7", 640)
    assert (v2m.keras_backbone, v2m.image_size) == ("efficientnetv2m", 640)
    assert (b6.keras_backbone, b6.image_size, b6.aux_heads) == ("efficientnetb6", 512, 2)
    assert set(load_ensemble_config("ensemble").members) == set(MEMBERS)
    with pytest.raises(variants.ConfigError, match="loss must be one of bce, focal"):
        load_config("tiny_cpu", {"loss": "hinge"})
    focal = BINARY.loss(load_config("tiny_cpu", {"loss": "focal", "focal_gamma": 1.5}))
    assert type(focal).__name__ == "BinaryFocalCrossentropy" and focal.get_config()["gamma"] == 1.5


def test_cli_prints_the_resolved_config(capsys):
    assert cli(["--config", "tiny_cpu", "--set", "epochs=3", "--fold", "1", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["name"], cfg["epochs"], cfg["fold"]) == ("tiny_cpu", 3, 1)
