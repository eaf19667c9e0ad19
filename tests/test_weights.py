"""The weights kernel (siimcovid.kaggle.weights), the folder it writes (siimcovid.pretrained) and
the detectors' ``siim.weights="auto"`` (siimcovid.detect.zoo)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from siimcovid import pretrained
from siimcovid.detect import zoo
from siimcovid.kaggle import graph as G
from siimcovid.kaggle import weights as W
from siimcovid.variants import list_variants


def test_keras_urls_and_hashes_are_the_ones_the_packages_check():
    import efficientnet.model as efn
    from tf_keras.src.applications import efficientnet_v2 as v2

    for name, (url, digest) in pretrained.KERAS_FILES.items():
        if name.startswith("efficientnetv2-"):
            v = name.split("-")[1].split("_")[0]
            assert url == v2.BASE_WEIGHTS_PATH + name
            assert digest == v2.WEIGHTS_HASHES[f"-{v}"][1]
        else:
            model = name.split("_")[0]
            assert url == efn.BASE_WEIGHTS_PATH + name
            assert digest == efn.WEIGHTS_HASHES[model][1]


def test_catalogue_covers_every_pretrained_variant():
    items = {it.file: it for it in W.catalogue()}
    users = {u for it in items.values() for u in it.used_by}
    for name in list_variants("det"):
        if not name.endswith("_cpu"):
            assert f"det/{name}" in users, name
    assert "binary/effb7_640" in users and "binary/effv2m_640" in users and "binary/effb6_512" in users
    dcn = items["faster_rcnn_r50_fpn_dconv_c3-c5_1x_coco_20200130-d68aed1e.pth"]
    assert dcn.kind == "mmdet" and dcn.url.startswith("https://download.openmmlab.com/mmdetection/")
    assert not any(u.endswith("_cpu") for u in users)  # CPU variants train from random init by design


def test_fetch_verifies_hashes_and_writes_the_manifest_last(tmp_path):
    good = b"weights" * 100
    item = W.Item("a_notop.h5", "keras", "https://example.invalid/a_notop.h5", hashlib.sha256(good).hexdigest())
    other = W.Item("b.pth", "mmdet", "https://example.invalid/b.pth", None)
    calls = []

    def download(url, dest):
        calls.append(url)
        dest.write_bytes(good)

    manifest = W.fetch(tmp_path, [item, other], download=download)
    assert (tmp_path / "keras" / "a_notop.h5").read_bytes() == good
    assert manifest["files"]["b.pth"]["sha256"] == hashlib.sha256(good).hexdigest()
    assert json.loads((tmp_path / pretrained.MANIFEST).read_text())["files"].keys() == {"a_notop.h5", "b.pth"}
    W.fetch(tmp_path, [item, other], download=download)  # a second run keeps the verified files
    assert len(calls) == 2

    (tmp_path / pretrained.MANIFEST).unlink()
    bad = W.Item("c_notop.h5", "keras", "https://example.invalid/c", "0" * 64)
    with pytest.raises(pretrained.WeightsError, match="c_notop.h5.*published"):
        W.fetch(tmp_path, [bad, item], download=download)
    assert not (tmp_path / pretrained.MANIFEST).exists()  # an incomplete output never looks complete


def test_auto_weights_random_init_locally_and_the_mounted_checkpoint_on_kaggle(tmp_path, monkeypatch):
    monkeypatch.setenv("SIIM_INPUT", str(tmp_path / "input"))
    (tmp_path / "input").mkdir()
    assert zoo.resolve_weights("auto", "faster_rcnn_r50_dcn") is None  # nothing mounted: random init
    assert zoo.resolve_weights("/x/y.pth", "faster_rcnn_r50_dcn") == "/x/y.pth"
    assert zoo.resolve_weights(None, "faster_rcnn_r50_dcn") is None

    out = tmp_path / "input" / "notebooks" / "u" / "siimcovid-weights" / "weights"
    W.fetch(out, W.catalogue(), dry_run=True)  # a local run's plan: still random init
    assert zoo.resolve_weights("auto", "faster_rcnn_r50_dcn") is None

    W.stand_ins(out, W.catalogue())
    got = zoo.resolve_weights("auto", "faster_rcnn_r50_dcn")
    assert got == str(out / "mmdet" / "faster_rcnn_r50_fpn_dconv_c3-c5_1x_coco_20200130-d68aed1e.pth")
    one = [it for it in W.catalogue() if it.file.startswith("retinanet")]
    W.stand_ins(out, one)  # a weights output made for other configs: an error naming the file
    with pytest.raises(pretrained.WeightsError, match="faster_rcnn_r50_fpn_dconv.*re-run the weights kernel"):
        zoo.resolve_weights("auto", "faster_rcnn_r50_dcn")


def test_stand_in_keras_file_loads_and_leaves_the_model_untouched(tmp_path):
    import numpy as np
    import tensorflow as tf  # noqa: F401 - after siimcovid, which set the Keras flavour

    from siimcovid.classify.backbones import keras

    (item,) = [it for it in W.catalogue() if it.file == "efficientnetv2-m_notop.h5"]
    W.stand_ins(tmp_path, [item])
    K = keras()
    model = K.Sequential([K.Input((4,)), K.layers.Dense(2, name="d")])
    before = [w.copy() for w in model.get_weights()]
    model.load_weights(str(tmp_path / item.rel), by_name=True, skip_mismatch=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_weights_kernel_is_online_and_feeds_the_training_kernels():
    graph = G.build("alice")
    by_stage = {n.stage: n for n in graph.nodes.values()}
    w = by_stage["weights"].kernel.metadata
    assert w["enable_internet"] is True and w["enable_gpu"] is False
    online = sorted(n.stage for n in graph.nodes.values() if n.kernel.metadata["enable_internet"])
    assert online == ["weights", "wheels"]
    for stage in ("train-binary-fold", "train-det-fold"):
        node = by_stage[stage]
        assert "siimcovid-weights" in node.upstream
        assert not any("keras-weights" in d for d in node.kernel.metadata["dataset_sources"])
    assert "siimcovid-weights" not in by_stage["inference"].upstream  # inference loads trained weights only
