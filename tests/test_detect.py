"""Detection stage (issue 9): configs, COCO conversion, box round trips, the WBF wrapper,
pseudo labels, training with resume, prediction and merge, on tiny CPU models."""
import json

import numpy as np
import pandas as pd
import pytest

from siimcovid.boxes import Resize
from siimcovid.errors import UserError

pytest.importorskip("mmdet")


# ----------------------------------------------------------------------------- configs
def _shrink(cfg, w=8):
    """Narrow ResNet (mmdet's ResNet takes base/stem channels) so a CPU forward is cheap."""
    b = cfg.model.backbone
    if b.type == "ResNet":
        b.base_channels = b.stem_channels = w
        cfg.model.neck.in_channels = [4 * w, 8 * w, 16 * w, 32 * w]


def test_every_variant_builds_single_class_and_runs_a_cpu_forward():
    import torch
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules

    from siimcovid.detect import config as C

    register_all_modules()
    names = C.variants()
    assert {"faster_rcnn_r50_dcn", "faster_rcnn_r101_dcn", "cascade_rcnn_r50_dcn", "retinanet_r50",
            "yolov3_d53", "tiny_cpu"} <= set(names)
    s = 128  # mmcv's CPU DCN refuses the 2 px c5 map a 64 px input gives
    for name in names:
        cfg = C.load(name, ["siim.size=128"])
        C.prepare(cfg, "/nonexistent")
        assert cfg.train_dataloader.dataset.metainfo["classes"] == ("opacity",)
        assert cfg.train_dataloader.dataset.pipeline[2]["scale"] == (s, s)
        assert cfg.model.backbone.init_cfg is None and cfg.load_from is None  # no downloads
        if name == "cascade_rcnn_r50_dcn":
            heads = cfg.model.roi_head.bbox_head
            assert isinstance(heads, list) and [h["num_classes"] for h in heads] == [1, 1, 1]
        if "dcn" in name or name == "tiny_cpu":
            assert cfg.model.backbone.dcn["type"] == "DCN"
        _shrink(cfg)
        model = MODELS.build(cfg.model).eval()
        sample = DetDataSample(metainfo=dict(img_shape=(s, s), ori_shape=(s, s), scale_factor=(1.0, 1.0)))
        with torch.no_grad():
            data = model.data_preprocessor({"inputs": [torch.rand(3, s, s) * 255], "data_samples": [sample]}, False)
            out = model(**data, mode="predict")
        inst = out[0].pred_instances
        assert inst.bboxes.shape[1] == 4 and len(inst) > 0, name
        assert set(inst.labels.tolist()) <= {0}, name


def test_config_overrides_and_mistakes():
    from siimcovid.detect import config as C

    cfg = C.load("tiny_cpu", ["train_cfg.max_epochs=3", "siim.size=96", "siim.tta.vflip=true"])
    C.prepare(cfg, "/x")
    assert cfg.train_cfg.max_epochs == 3 and cfg.siim["size"] == 96 and cfg.siim["tta"]["vflip"] is True
    assert [s for s in cfg.param_scheduler if s["type"] == "CosineAnnealingLR"][0]["end"] == 3
    # the variant's own keys merge over the project layer, which replaced mmdet's dataset
    assert cfg.train_dataloader.batch_size == 8 and cfg.train_dataloader.dataset.type == "CocoDataset"
    assert cfg.siim["variant"] == "tiny_cpu" and cfg.siim["wbf"]["iou_thr"] == 0.6
    with pytest.raises(UserError, match="no key 'max_epoch'"):
        C.load("tiny_cpu", ["train_cfg.max_epoch=3"])
    with pytest.raises(UserError, match="unknown detector config"):
        C.load("no_such_variant")
    with pytest.raises(UserError, match="key=value"):
        C.load("tiny_cpu", ["siim.size"])
    with pytest.raises(UserError, match="not single-class"):
        C.load("tiny_cpu", ["model.roi_head.bbox_head.num_classes=80"])


def test_amp_and_weights_follow_siim_keys(monkeypatch):
    from siimcovid.detect import config as C

    monkeypatch.setattr(C, "cuda_available", lambda: True)
    cfg = C.prepare(C.load("faster_rcnn_r50_dcn", ["siim.weights=/in/coco.pth", "siim.backbone_weights=/in/r50.pth"]),
                    "/x")
    assert cfg.optim_wrapper.type == "AmpOptimWrapper"
    assert cfg.load_from == "/in/coco.pth" and cfg.model.backbone.init_cfg["checkpoint"] == "/in/r50.pth"
    monkeypatch.setattr(C, "cuda_available", lambda: False)
    assert C.prepare(C.load("faster_rcnn_r50_dcn"), "/x").optim_wrapper.type == "OptimWrapper"


# ----------------------------------------------------------------------------- tiny data
def _frame_meta(tmp_path):
    """meta rows as coco.load_meta returns them (no images needed for the conversion itself)."""
    return pd.DataFrame({
        "image_id": ["a", "b", "c", "d", "t1"], "split": ["train"] * 4 + ["test"],
        "fold": [0, 1, 1, 1, -1], "orig_h": [400] * 5, "orig_w": [200] * 5, "keep_aspect": [False] * 5,
        "boxes_frame": [[[1, 2, 11, 22]], [[10, 20, 30, 60], [0, 0, 5, 5]], [], [], []],
        "path": [str(tmp_path / f"{i}.png") for i in "abcd"] + [str(tmp_path / "t1.png")],
    })


def test_coco_conversion_excludes_empties_by_default(tmp_path):
    from siimcovid.detect import coco

    meta = _frame_meta(tmp_path)
    for p in meta["path"]:
        open(p, "wb").close()
    path, train, held = coco.write_fold(meta, 0, 64, tmp_path / "coco")
    d = json.loads(path.read_text())
    assert list(held["image_id"]) == ["a"] and list(train["image_id"]) == ["b"]
    assert d["categories"] == [{"id": 1, "name": "opacity"}]
    assert [a["bbox"] for a in d["annotations"]] == [[10, 20, 20, 40], [0, 0, 5, 5]]
    assert d["images"][0]["file_name"].endswith("b.png") and d["images"][0]["siim_id"] == "b"
    assert coco.count_boxes(d) == {"images": 1, "boxes": 2, "images_without_box": 0}
    _, train, _ = coco.write_fold(meta, 0, 64, tmp_path / "coco", empty_rate=0.5)
    assert sorted(train["image_id"]) in (["b", "c"], ["b", "d"])
    _, train, _ = coco.write_fold(meta, 0, 64, tmp_path / "coco", empty_rate=1.0)
    assert sorted(train["image_id"]) == ["b", "c", "d"]
    with pytest.raises(UserError, match="fold 7"):
        coco.write_fold(meta, 7, 64, tmp_path / "coco")
    with pytest.raises(UserError, match="empty_rate"):
        coco.write_fold(meta, 0, 64, tmp_path / "coco", empty_rate=2)
    # pseudo labels come in original px ([.., score] allowed) and go into the 64 px frame
    pseudo = pd.DataFrame({"image_id": ["t1"], "boxes": [json.dumps([[50, 100, 100, 200, 0.9]])]})
    path, train, _ = coco.write_fold(meta, 0, 64, tmp_path / "coco", pseudo=pseudo)
    d = json.loads(path.read_text())
    assert d["annotations"][-1]["bbox"] == [16, 16, 16, 16]
    with pytest.raises(UserError, match="not in the test split"):
        coco.write_fold(meta, 0, 64, tmp_path / "coco", pseudo=pseudo.assign(image_id="zz"))


def test_box_round_trip_through_resize_and_flip():
    from siimcovid.detect.wbf import flip_boxes

    orig = np.array([[100.0, 300.0, 900.0, 1500.0, 0.7]])
    plan = Resize.plan(2000, 1000, 128)
    frame = plan.to_resized(orig[:, :4])
    # a prediction on the hflipped resized image, flipped back, then to original pixels
    on_flipped = flip_boxes(np.c_[frame, orig[:, 4]], 128, 128, hflip=True)
    assert on_flipped[0, 0] == pytest.approx(128 - frame[0, 2])
    back = flip_boxes(on_flipped, 128, 128, hflip=True)
    np.testing.assert_allclose(plan.to_original(back[:, :4]), orig[:, :4], atol=1e-9)
    both = flip_boxes(flip_boxes(orig, 2000, 1000, True, True), 2000, 1000, True, True)
    np.testing.assert_allclose(both, orig)
    v = flip_boxes(orig, 2000, 1000, vflip=True)
    np.testing.assert_allclose(v[0, :4], [100, 500, 900, 1700])


# ----------------------------------------------------------------------------- WBF
def test_wbf_fuses_in_original_pixels_with_each_images_own_size():
    from siimcovid.detect.wbf import fuse

    a = np.array([[100, 200, 300, 600, 0.9]])
    b = np.array([[110, 210, 310, 610, 0.7]])
    out = fuse([a, b], height=1000, width=500)
    assert out.shape == (1, 5)
    np.testing.assert_allclose(out[0, :4], [100 + 10 * 0.7 / 1.6, 200 + 10 * 0.7 / 1.6,
                                            300 + 10 * 0.7 / 1.6, 600 + 10 * 0.7 / 1.6], atol=1e-4)
    assert out[0, 4] == pytest.approx(0.8)
    # a box only one of two lists found keeps half its score with conf_type avg
    alone = fuse([a, np.zeros((0, 5))], 1000, 500)
    assert alone[0, 4] == pytest.approx(0.45)
    assert fuse([np.zeros((0, 5))], 1000, 500).shape == (0, 5)
    # boxes past the border are clipped to the image, not lost
    out = fuse([np.array([[-10, 0, 600, 900, 0.5]])], 1000, 500)
    np.testing.assert_allclose(out[0, :4], [0, 0, 500, 900])


def test_wbf_raises_where_the_library_would_exit():
    from siimcovid.detect.wbf import fuse

    a = np.array([[0, 0, 10, 10, 0.5]])
    with pytest.raises(UserError, match="conf_type"):
        fuse([a], 100, 100, conf_type="mean")
    with pytest.raises(ValueError, match="2 weights for 1"):
        fuse([a], 100, 100, weights=[1, 2])
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        fuse([np.zeros((2, 4))], 100, 100)
    with pytest.raises(ValueError, match="image size"):
        fuse([a], 0, 100)


def test_wbf_two_levels_folds_then_models_with_score_scaling():
    from siimcovid.detect.wbf import fuse, fuse_two_level

    box = [10, 10, 50, 50]
    m1 = [np.array([box + [0.8]]), np.array([box + [0.6]])]  # two folds
    m2 = [np.array([box + [1.0]])]
    out = fuse_two_level({"frcnn": m1, "yolo": m2}, 100, 100, score_scale={"frcnn": 0.5},
                         model_weights={"yolo": 3.0}, folds={"iou_thr": 0.5}, models={"iou_thr": 0.5})
    # level 1: (0.8 + 0.6) / 2 = 0.7, scaled 0.35; level 2: (0.35 * 1 + 1.0 * 3) / 4
    assert out.shape == (1, 5) and out[0, 4] == pytest.approx((0.35 + 3.0) / 4)
    # one level over all lists would differ: that is why the levels exist
    flat = fuse(m1 + m2, 100, 100)
    assert flat[0, 4] != pytest.approx(out[0, 4])
    with pytest.raises(ValueError, match="not among"):
        fuse_two_level({"a": m1}, 100, 100, score_scale={"b": 1.0})
    with pytest.raises(UserError, match="unknown WBF keys"):
        fuse_two_level({"a": m1}, 100, 100, folds={"iou": 0.5})
