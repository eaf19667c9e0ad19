"""Detection stage (issue 9): configs, COCO conversion, box round trips, the WBF wrapper,
pseudo labels, training with resume, prediction and merge, on tiny CPU models."""
import json

import numpy as np
import pandas as pd
import pytest

from siimcovid.boxes import Resize
from siimcovid.errors import UserError

pytest.importorskip("mmdet")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """On a shared 2-core machine OpenMP's spinning threads cost 5-8x the CPU of the work itself
    (measured: 6 s against 0.7 s per tiny training step); restored for other test modules."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def test_random_init_trains_every_backbone_layer_and_bn_statistics():
    """mmdet's configs freeze the stem + first stage and keep BN in eval mode, which is right over
    ImageNet weights and wrong from random init (random filters frozen, BN stuck at its initial
    statistics; on the demo set fixing it doubled the tiny detector's OOF opacity AP)."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from siimcovid.detect import config as C

    register_all_modules()
    scratch = C.prepare(C.load("tiny_cpu", ["siim.size=128"]), "/x")
    assert (scratch.model.backbone.frozen_stages, scratch.model.backbone.norm_eval) == (-1, False)
    model = MODELS.build(scratch.model)
    model.train()
    assert model.backbone.stem[0].weight.requires_grad if hasattr(model.backbone, "stem") else \
        model.backbone.conv1.weight.requires_grad
    assert all(m.training for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    for weights in (["siim.weights=/w/coco.pth"], ["siim.backbone_weights=/w/r50.pth"]):
        pre = C.prepare(C.load("tiny_cpu", ["siim.size=128", *weights]), "/x")
        assert (pre.model.backbone.frozen_stages, pre.model.backbone.norm_eval) == (1, True), weights
    yolo = C.prepare(C.load("yolov3_d53", ["siim.size=128"]), "/x")
    assert yolo.model.backbone.norm_eval is False
    assert C.train_from_scratch({"type": "SwinTransformer"}) is False  # takes neither key


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
    with pytest.raises(UserError, match="det config 'no_such_variant' not found .*tiny_cpu"):
        C.load("no_such_variant")
    with pytest.raises(UserError, match="key=value"):
        C.load("tiny_cpu", ["siim.size"])
    with pytest.raises(UserError, match="not single-class"):
        C.load("tiny_cpu", ["model.roi_head.bbox_head.num_classes=80"])


def test_a_detector_variant_is_a_line_of_bases_ending_in_mmdet(tmp_path):
    """The project layer goes between mmdet's config and ours, so every file names ONE base."""
    from siimcovid.detect import config as C

    (tmp_path / "none.py").write_text("model = dict()\n")
    (tmp_path / "two.py").write_text(f"_base_ = ['{C.CONFIG_DIR / 'tiny_cpu.py'}', './none.py']\n")
    (tmp_path / "other.py").write_text("_base_ = 'mmpretrain::resnet/x.py'\n")
    (tmp_path / "mine.py").write_text(f"_base_ = '{C.CONFIG_DIR / 'tiny_cpu.py'}'\ntrain_cfg = dict(max_epochs=2)\n")
    with pytest.raises(UserError, match=r"none\.py: no _base_"):
        C.load(tmp_path / "none.py")
    with pytest.raises(UserError, match=r"two\.py: a detector variant takes ONE _base_"):
        C.load(tmp_path / "two.py")
    with pytest.raises(UserError, match="builds on an mmdet:: config"):
        C.load(tmp_path / "other.py")
    cfg = C.load(tmp_path / "mine.py")  # a path works, over one of ours
    assert cfg.train_cfg.max_epochs == 2 and cfg.siim["size"] == 128 and cfg.siim["variant"] == "mine"


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
    from siimcovid.wbf import flip_boxes

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
    from siimcovid.wbf import fuse

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
    from siimcovid.wbf import fuse

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
    from siimcovid.wbf import fuse, fuse_two_level

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


# ----------------------------------------------------------------------------- pseudo labels
def test_pseudo_label_filter_follows_the_first_place_rule():
    from siimcovid.detect.pseudo import PseudoRule, select

    b = lambda *scores: np.array([[0, 0, 10, 10, s] for s in scores], dtype=float)  # noqa: E731
    boxes = pd.DataFrame({"image_id": ["keep", "neg", "weakpos", "lowbox", "nobox", "third", "nostudy"],
                          "boxes": [b(0.9, 0.5, 0.1), b(0.9, 0.9), b(0.9, 0.9), b(0.9, 0.1), b(), b(0.3, 0.8, 0.25),
                                    b(0.9)]})
    studies = pd.DataFrame({"study_id": ["s1", "s2", "s3", "s4", "s5", "s6"],
                            "negative": [0.1, 0.35, 0.1, 0.1, 0.1, 0.29],
                            "typical": [0.8, 0.8, 0.5, 0.9, 0.9, 0.0],
                            "indeterminate": [0.0, 0.0, 0.69, 0.0, 0.0, 0.71], "atypical": [0.0] * 6})
    image_study = {"keep": "s1", "neg": "s2", "weakpos": "s3", "lowbox": "s4", "nobox": "s5", "third": "s6"}
    out = select(boxes, studies, image_study)
    assert list(out["image_id"]) == ["keep", "third"]
    kept = json.loads(out.iloc[0]["boxes"])
    assert [k[4] for k in kept] == [0.9, 0.5]  # top 2, best first
    assert [k[4] for k in json.loads(out.iloc[1]["boxes"])] == [0.8, 0.3]
    # thresholds are config
    loose = select(boxes, studies, image_study, PseudoRule.from_dict({"negative_max": 0.4, "min_box_score": 0.05}))
    assert set(loose["image_id"]) == {"keep", "neg", "lowbox", "third"}
    with pytest.raises(UserError, match="unknown pseudo-label config key .neg_max. .did you mean .negative_max"):
        PseudoRule.from_dict({"neg_max": 0.2})


# ----------------------------------------------------------------------------- train / predict / merge
DET_SIZE = 128


def write_det_fixture(root, n_train=12, n_test=2, n_folds=2, seed=0):
    """Preprocess-shaped folder at 128 px: bright rectangles are the opacities; originals 512 x 384."""
    import cv2

    rng = np.random.default_rng(seed)
    s, oh, ow = DET_SIZE, 512, 384
    rows = []
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        boxes = []
        if i % 3:  # a third without box
            for _ in range(1 + i % 2):
                x, y = rng.integers(4, 80, 2)
                w, h = rng.integers(24, 44, 2)
                boxes.append([float(x), float(y), float(x + w), float(y + h)])
        img = rng.integers(10, 50, (s, s)).astype(np.uint8)
        for x0, y0, x1, y1 in boxes:
            img[int(y0):int(y1), int(x0):int(x1)] = 220
        d = root / "images" / str(s) / split
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"im{i:02d}.png"), img)
        plan = Resize.plan(oh, ow, s)
        orig = plan.to_original(boxes).round(2).tolist() if boxes else []
        rows.append({"image_id": f"im{i:02d}", "study_id": f"st{i:02d}", "series_id": f"se{i:02d}", "split": split,
                     "dicom": "x.dcm", "orig_h": oh, "orig_w": ow, "photometric": "MONOCHROME2",
                     "transfer_syntax": "1.2.840.10008.1.2.1", "bits_stored": 12, "keep_aspect": False,
                     "boxes": json.dumps(orig), f"boxes_{s}": json.dumps(boxes),
                     "study_label": (1 if boxes else 0) if split == "train" else -1,
                     "fold": i % n_folds if split == "train" else -1})
    pd.DataFrame(rows).to_csv(root / "meta.csv", index=False)
    return root


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    """Fold 0 trained for 1 epoch, then resumed to 2 epochs through the CLI; fold 1 for 1 epoch."""
    from siimcovid.__main__ import main

    root = tmp_path_factory.mktemp("det")
    pre = write_det_fixture(root / "pre")
    work = root / "work"
    base = ["det-train", "--config", "tiny_cpu", "--preprocess", str(pre), "--workdir", str(work), "--no-progress",
            "--set", "train_dataloader.batch_size=4", "--set", "default_hooks.logger.interval=1"]
    assert main(base + ["--fold", "0", "--set", "train_cfg.max_epochs=1"]) == 0
    first = sorted(p.name for p in (work / "tiny_cpu" / "fold0").glob("epoch_*.pth"))
    assert main(base + ["--fold", "0", "--set", "train_cfg.max_epochs=2"]) == 0
    assert main(base + ["--fold", "1", "--set", "train_cfg.max_epochs=1"]) == 0
    return {"pre": pre, "work": work, "first": first}


def test_det_train_writes_a_run_and_resumes_after_the_last_epoch(det_run):
    out = det_run["work"] / "tiny_cpu" / "fold0"
    assert det_run["first"] == ["epoch_1.pth"]
    assert sorted(p.name for p in out.glob("epoch_*.pth")) == ["epoch_1.pth", "epoch_2.pth"]
    hist = pd.read_csv(out / "history.csv")
    assert hist["epoch"].max() == 2 and hist["step"].is_monotonic_increasing and "loss" in hist
    # the second session started from epoch 1's checkpoint instead of from scratch
    assert hist["step"].nunique() == len(hist) and (hist["epoch"] == 1).any()
    assert (out / "loss.png").stat().st_size > 1000
    # the next fold of the same process logs into its own folder, not into the first run's
    other = pd.read_csv(det_run["work"] / "tiny_cpu" / "fold1" / "history.csv")
    assert len(other) and other["epoch"].max() == 1
    # the trap the resume goes through: torch >= 2.6 refuses mmengine's checkpoint by default ...
    import pickle

    import torch

    with pytest.raises(pickle.UnpicklingError):
        torch.load(out / "epoch_1.pth")
    # ... while the exported weights load with the safe default
    assert "state_dict" in torch.load(out / "model.pth")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["src_size"] == 128 and cfg["siim"]["variant"] == "tiny_cpu" and cfg["n_train_images"] > 0
    coco = json.loads((out / "coco" / "train.json").read_text())
    assert all(a["category_id"] == 1 for a in coco["annotations"]) and coco["images"]
    score = json.loads((out / "fold_score.json").read_text())
    assert score["epochs"] == 2 and 0.0 <= score["opacity_ap_tta"] <= 1.0


def test_predictions_are_in_original_pixels_with_and_without_tta(det_run):
    from siimcovid.tables import read_detector as read_predictions

    out = det_run["work"] / "tiny_cpu" / "fold0"
    meta = pd.read_csv(det_run["pre"] / "meta.csv")
    oof = read_predictions(out / "oof.csv")
    assert set(oof["image_id"]) == set(meta[(meta["split"] == "train") & (meta["fold"] == 0)]["image_id"])
    test = read_predictions(out / "test.csv")
    assert set(test["image_id"]) == set(meta[meta["split"] == "test"]["image_id"])
    allb = np.concatenate([*oof["boxes"], *oof["boxes_notta"], *test["boxes"]])
    assert len(allb)
    assert allb[:, [0, 2]].max() <= 384 and allb[:, [1, 3]].max() <= 512  # original frame, not 128 px
    assert allb[:, [1, 3]].max() > 128  # (a 128 px box could not reach here)
    assert ((allb[:, 4] >= 0) & (allb[:, 4] <= 1)).all()


def test_det_compare_scores_fold_sets_side_by_side_and_refuses_other_folds(det_run, tmp_path, capsys):
    import shutil

    from siimcovid.__main__ import main
    from siimcovid.ensemble.det_merge import compare

    a, b, one = tmp_path / "a", tmp_path / "b", tmp_path / "one"
    for d in (a, b):
        shutil.copytree(det_run["work"] / "tiny_cpu", d)
    one.mkdir()
    shutil.copytree(det_run["work"] / "tiny_cpu" / "fold0", one / "fold0")
    rows = compare({"scratch": a, "again": b})
    assert [r["start"] for r in rows] == ["scratch", "again"] and rows[0]["folds"] == [0, 1]
    assert rows[0]["oof_opacity_ap"] == rows[1]["oof_opacity_ap"]  # the same folds score the same
    with pytest.raises(UserError, match="different folds"):
        compare({"scratch": a, "one": one})
    assert main(["det-compare", f"x={a}", f"y={b}", "--out", str(tmp_path / "c.json")]) == 0
    assert "OOF opacity" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "c.json").read_text())["rows"]) == 2


def test_det_merge_scores_oof_and_skips_a_broken_fold(det_run, tmp_path):
    import shutil

    from siimcovid.__main__ import main
    from siimcovid.tables import read_detector as read_predictions

    exp = tmp_path / "tiny_cpu"
    shutil.copytree(det_run["work"] / "tiny_cpu", exp)
    assert main(["det-merge", "--work", str(exp)]) == 0
    scores = json.loads((exp / "scores.json").read_text())
    assert scores["folds"] == [0, 1] and scores["skipped"] == []
    meta = pd.read_csv(det_run["pre"] / "meta.csv")
    assert scores["oof"]["n_images"] == int((meta["split"] == "train").sum())
    for k in ("opacity_ap_tta", "opacity_ap_notta", "none_ap_max_tta", "none_ap_prod_tta", "none_ap_max_notta"):
        assert 0.0 <= scores["oof"][k] <= 1.0, k
    test = read_predictions(exp / "test_boxes.csv")
    assert len(test) == int((meta["split"] == "test").sum())
    (exp / "fold1" / "oof.csv").write_text("garbage\n")
    assert main(["det-merge", "--work", str(exp)]) == 1
    scores = json.loads((exp / "scores.json").read_text())
    assert scores["folds"] == [0] and scores["skipped"][0]["fold"] == 1


def test_train_det_notebook_runs_under_papermill(det_run, tmp_path, monkeypatch):
    """The notebook's one call into the package, its loss plot and merge, on the tiny set (1 epoch)."""
    from pathlib import Path

    import papermill as pm

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel process inherits it
    root = Path(__file__).resolve().parents[1]
    work = tmp_path / "work"
    pm.execute_notebook(str(root / "notebooks" / "train-det.ipynb"), str(tmp_path / "out.ipynb"), cwd=str(tmp_path),
                        parameters=dict(config="tiny_cpu", fold=1, preprocess=str(det_run["pre"]), workdir=str(work),
                                        gpus=0, merge=True, overrides={"train_cfg.max_epochs": 1,
                                                                       "train_dataloader.batch_size": 4}),
                        progress_bar=False, kernel_name="python3")
    out = work / "tiny_cpu"
    assert (out / "fold1" / "oof.csv").exists() and (out / "scores.json").exists()
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    assert any("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def test_det_fold_twice_with_one_seed_gives_the_same_oof(det_run, tmp_path):
    """Fold 1 trained again (same config, seed and threads, fresh folder) predicts byte-identical
    oof.csv: the CPU detector is repeatable (torch deterministic algorithms, no loader workers)."""
    import torch

    from siimcovid.__main__ import main

    work = tmp_path / "again"
    assert main(["det-train", "--config", "tiny_cpu", "--preprocess", str(det_run["pre"]), "--workdir", str(work),
                 "--no-progress", "--set", "train_dataloader.batch_size=4", "--set", "default_hooks.logger.interval=1",
                 "--fold", "1", "--set", "train_cfg.max_epochs=1"]) == 0
    first = (det_run["work"] / "tiny_cpu" / "fold1" / "oof.csv").read_text()
    assert (work / "tiny_cpu" / "fold1" / "oof.csv").read_text() == first
    assert torch.are_deterministic_algorithms_enabled()


def test_round_two_without_pseudo_labels_stops_before_writing(tmp_path):
    from siimcovid.__main__ import main

    pre = write_det_fixture(tmp_path / "pre", n_train=4, n_test=1)
    work = tmp_path / "work"
    assert main(["det-train", "--config", "tiny_cpu", "--preprocess", str(pre), "--workdir", str(work),
                 "--round", "2"]) == 2
    assert not work.exists()
    assert main(["det-train", "--config", "tiny_cpu", "--preprocess", str(pre), "--workdir", str(work),
                 "--size", "256"]) == 2  # no images at that size
    assert not work.exists()


def test_two_gpus_run_det_train_under_torchrun():
    from siimcovid.detect.train import torchrun_command

    cmd = torchrun_command(["--config", "faster_rcnn_r50_dcn", "--fold", "3"], 2)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=2"]
    assert cmd[-6:] == ["det-train", "--config", "faster_rcnn_r50_dcn", "--fold", "3", "--launcher", "pytorch"][-6:]
    assert cmd[-2:] == ["--launcher", "pytorch"]


def test_detector_figures_equal_the_metric_on_unsorted_tied_boxes():
    """det-merge's and a fold's figures go through siimcovid.scoring: the metric's own APs, also when
    boxes are not best first and scores tie."""
    import ensemble_fixtures as F

    from siimcovid.detect.predict import figures, none_score
    from siimcovid.metric import FULL_BOX, average_precision

    d = F.make_set(60, n_folds=2, seed=3)
    preds = pd.concat(list(F.detector_member(d, 0.7, 3).values()), ignore_index=True)
    preds["boxes"] = [np.round(b, 1)[::-1] for b in preds["boxes"]]  # worst first, scores to 0.1: ties
    truth = dict(zip(d["images"]["image_id"], d["images"]["boxes"]))
    got = figures(preds, truth)
    dets = [(i, float(b[4]), *b[:4]) for i, p in zip(preds["image_id"], preds["boxes"]) for b in p]
    boxed = {i: np.asarray(t, float) for i, t in truth.items() if len(t)}
    assert got["opacity_ap_tta"] == pytest.approx(average_precision(dets, boxed), abs=1e-12)
    for rule in ("max", "prod"):
        none = [(i, none_score(p, rule), *FULL_BOX) for i, p in zip(preds["image_id"], preds["boxes"])]
        want = average_precision(none, {i: [FULL_BOX] for i in preds["image_id"] if not len(truth[i])})
        assert got[f"none_ap_{rule}_tta"] == pytest.approx(want, abs=1e-12)
    assert 0 < got["opacity_ap_tta"] < 1 and got["n_images"] == len(preds)
