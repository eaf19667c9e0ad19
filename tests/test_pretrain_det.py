"""pretrain-det (issue 21, part 2): a detector pre-trained on the external sets' boxes, whose weights
start the detector folds through ``siim.init_from``; the graph wires the kernel and the parameter
together. Tiny CPU detector, 128 px, one epoch."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from siimcovid.dev import external_sets
from siimcovid.errors import UserError
from siimcovid.pretrain import outputs

pytest.importorskip("mmdet")
SIZE = 128


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """The demo's RSNA-layout stand-in (16 images) and the VinBigData fixture (several readers, a
    finding that is not opacity), converted as the preprocess-external kernel writes them."""
    from siimcovid.preprocess.external.cli import convert_sources

    root = tmp_path_factory.mktemp("pre_ext")
    src = external_sets.write_inputs(root / "input", {"rsna": 16}, seed=3, orig=160)
    vin = external_sets.write_vinbigdata(root / "vin_src")
    out = root / "external"
    counts, skipped = convert_sources(["rsna", "vinbigdata"], out, sizes=[SIZE], overrides={"rsna": {"workers": 1}},
                                      src_dirs={"rsna": str(src["rsna"]), "vinbigdata": str(vin)})
    assert set(counts) == {"rsna", "vinbigdata"} and not skipped
    return out


@pytest.fixture(scope="module")
def pretrained(external, tmp_path_factory):
    from siimcovid.detect import config as C
    from siimcovid.pretrain.det import pretrain

    work = tmp_path_factory.mktemp("pre_work")
    cfg = C.load("tiny_cpu", ["train_cfg.max_epochs=1", "train_dataloader.batch_size=4", "siim.fold=0"])
    score = pretrain(cfg, ["rsna", "vinbigdata", "nih"], external=external, workdir=work, progress=False)
    return work, score


def test_pretrain_trains_on_the_box_labelled_rows_and_writes_the_manifest(external, pretrained):
    work, score = pretrained
    folder = outputs.out_dir(work, "det", "tiny_cpu")
    manifest = outputs.read_manifest(folder)
    assert manifest["kind"] == "det" and manifest["variant"] == "tiny_cpu" and manifest["from_scratch"] is True
    assert manifest["sources"] == ["rsna", "vinbigdata"] and score["skipped"] == ["nih"]  # nih: not attached
    assert (folder / manifest["weights"]).is_file()
    coco = json.loads((folder / "coco" / "train.json").read_text())
    trained = {i["siim_id"] for i in coco["images"]}
    meta = pd.concat([pd.read_csv(external / s / "meta.csv") for s in ("rsna", "vinbigdata")])
    held = set(meta.loc[meta["fold"] == 0, "image_id"])
    assert trained and not trained & held  # the held-out external fold is scored, not trained on
    assert trained <= set(meta.loc[meta["box_labelled"] == 1, "image_id"])
    assert "vin-op" in trained or "vin-op" in held  # VinBigData's opacity readers are in
    assert manifest["score"]["n_images"] == len(held) and "opacity_ap_tta" in manifest["score"]


def _fold_cfg(variant, extra=()):
    from siimcovid.detect import config as C

    return C.load(variant, ["siim.size=128", "siim.init_from=pretrain-det", *extra])


def test_a_fold_with_init_from_starts_from_the_mounted_pretraining(pretrained, monkeypatch):
    from siimcovid.detect import config as C

    work, _ = pretrained
    monkeypatch.setenv("SIIM_INPUT", str(work))
    cfg = C.prepare(_fold_cfg("tiny_cpu"), "/x")
    assert cfg.load_from == str(outputs.out_dir(work, "det", "tiny_cpu") / "model.pth")
    # the pre-training itself started from random init: the fold keeps training every layer
    assert (cfg.model.backbone.frozen_stages, cfg.model.backbone.norm_eval) == (-1, False)
    assert cfg.siim["init_weights"] == cfg.load_from


def test_a_fold_trains_from_the_pretrained_weights(pretrained, tmp_path, monkeypatch):
    """lr 0: the exported fold's weights ARE the pre-trained ones (a fold from random init differs)."""
    import torch

    from siimcovid.detect import config as C
    from siimcovid.detect.train import train_fold
    from test_detect import write_det_fixture

    work, _ = pretrained
    monkeypatch.setenv("SIIM_INPUT", str(work))
    pre = write_det_fixture(tmp_path / "pre", n_train=4, n_test=1)
    frozen = ["train_cfg.max_epochs=1", "train_dataloader.batch_size=4", "optim_wrapper.optimizer.lr=0.0",
              "optim_wrapper.optimizer.weight_decay=0.0", "siim.fold=0"]
    train_fold(_fold_cfg("tiny_cpu", frozen), preprocess=pre, workdir=tmp_path / "w", predict=False, progress=False)
    source = torch.load(outputs.out_dir(work, "det", "tiny_cpu") / "model.pth", weights_only=True)["state_dict"]
    fold = torch.load(tmp_path / "w" / "tiny_cpu" / "fold0" / "model.pth", weights_only=True)["state_dict"]
    convs = [k for k in source if k.endswith("conv.weight") or k.endswith("conv1.weight")]
    assert convs and all(torch.equal(source[k], fold[k]) for k in convs)
    # the control: the same fold from random init (same seed) does not hold them
    scratch_cfg = C.load("tiny_cpu", ["siim.size=128", *frozen])
    train_fold(scratch_cfg, preprocess=pre, workdir=tmp_path / "s", predict=False, progress=False)
    scratch = torch.load(tmp_path / "s" / "tiny_cpu" / "fold0" / "model.pth", weights_only=True)["state_dict"]
    assert not all(torch.equal(source[k], scratch[k]) for k in convs)


def test_init_from_refuses_another_model_and_a_missing_output(pretrained, tmp_path, monkeypatch):
    from siimcovid.detect import config as C

    work, _ = pretrained
    monkeypatch.setenv("SIIM_INPUT", str(work))
    with pytest.raises(outputs.InitError, match=r"wants \{'variant': 'demo_cpu'\}.*variant=tiny_cpu"):
        C.prepare(_fold_cfg("demo_cpu"), "/x")
    monkeypatch.setenv("SIIM_INPUT", str(tmp_path))
    with pytest.raises(outputs.InitError, match="no pretrain-det output is mounted.*--include pretrain-det"):
        C.prepare(_fold_cfg("tiny_cpu"), "/x")
    with pytest.raises(outputs.InitError, match="this kind of run starts from 'pretrain-det'"):
        outputs.find_init("pretrain-cls", "pretrain-det")
    with pytest.raises(outputs.InitError, match="neither a stage"):
        outputs.find_init(str(tmp_path / "nope.pth"), "pretrain-det")


def test_pretrain_without_any_external_set_is_a_user_error(tmp_path):
    from siimcovid.detect import config as C
    from siimcovid.pretrain.det import pretrain

    with pytest.raises(UserError, match="no external set found: rsna: no external rsna set"):
        pretrain(C.load("tiny_cpu"), ["rsna"], external=tmp_path, workdir=tmp_path / "w")


def test_the_graph_wires_pretrain_det_with_its_parameter_only_when_included():
    from siimcovid.kaggle import graph as G

    plain = G.build("me")
    det = plain.by_stage("train-det-fold")
    assert det and all("init_from" not in n.kernel.params for n in det)
    assert not any(n.stage.startswith("pretrain") for n in plain.order())
    full = G.build("me", include=["preprocess-external", "pretrain-det"])
    pre = full.by_stage("pretrain-det")
    assert len(pre) == 1 and pre[0].kernel.metadata["enable_internet"] is False
    assert {full.nodes[u].stage for u in pre[0].upstream} >= {"preprocess-external", "weights", "wheels"}
    for n in full.by_stage("train-det-fold"):
        assert pre[0].slug in n.upstream and n.kernel.params["init_from"] == "pretrain-det"
        assert f"me/{pre[0].slug}" in n.kernel.metadata["kernel_sources"]
    assert not any("hand-written" in note for note in full.notes)
    with pytest.raises(UserError, match="needs unknown stage 'preprocess-external'"):
        G.build("me", include=["pretrain-det"])  # pretrain-det reads preprocess-external: include both
