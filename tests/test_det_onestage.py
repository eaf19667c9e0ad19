"""The one-stage detector family (issue 22, part 2): YOLOX-L and RTMDet-L at 1024 px build single-class
through mmdet's registry with the project layer, start from their COCO checkpoints on Kaggle, and the
CPU-sized RTMDet-tiny trains, exports and predicts through the same fold code as the R-CNNs."""
from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("mmdet")

ONE_STAGE = ("yolox_l_1024", "rtmdet_l_1024")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ONE_STAGE + ("rtmdet_tiny_cpu",))
def test_one_stage_variants_build_single_class_with_our_pipeline(name):
    import torch
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules

    from siimcovid.detect import config as C

    register_all_modules()
    cfg = C.prepare(C.load(name), "/nonexistent")
    size = cfg.siim["size"]
    assert size == (128 if name.endswith("_cpu") else 1024)
    assert cfg.train_dataloader.dataset.pipeline[2]["scale"] == (size, size)  # ours, not Mosaic / MixUp
    assert cfg.get("custom_hooks") == []  # mode / pipeline switch hooks would swap in mmdet's pipeline
    assert cfg.model.bbox_head.num_classes == 1 and cfg.model.backbone.init_cfg is None
    # random init locally: every stage trains and BN learns (train_from_scratch knows the CSP backbones)
    assert (cfg.model.backbone.frozen_stages, cfg.model.backbone.norm_eval) == (-1, False)
    model = MODELS.build(cfg.model).eval()
    assert type(model).__name__ == ("YOLOX" if name.startswith("yolox") else "RTMDet")
    if name != "rtmdet_tiny_cpu":
        return  # an L model's forward at 1024 px is too slow for the suite; the tiny one runs below
    s = 128
    sample = DetDataSample(metainfo=dict(img_shape=(s, s), ori_shape=(s, s), scale_factor=(1.0, 1.0)))
    with torch.no_grad():
        data = model.data_preprocessor({"inputs": [torch.rand(3, s, s) * 255], "data_samples": [sample]}, False)
        inst = model(**data, mode="predict")[0].pred_instances
    assert inst.bboxes.shape[1] == 4 and set(inst.labels.tolist()) <= {0}


@pytest.mark.parametrize("name", ONE_STAGE)
def test_one_stage_variants_name_their_coco_checkpoint(name):
    from siimcovid.detect.zoo import checkpoint_file

    f = checkpoint_file(name)
    assert f.endswith(".pth") and f.startswith(name.split("_")[0])


def test_the_cpu_one_stage_variant_trains_exports_and_predicts(tmp_path):
    from siimcovid.detect import config as C
    from siimcovid.detect.predict import load_model
    from siimcovid.detect.train import train_fold
    from test_detect import write_det_fixture

    pre = write_det_fixture(tmp_path / "pre", n_train=6, n_test=1)
    cfg = C.load("rtmdet_tiny_cpu", ["train_cfg.max_epochs=1", "train_dataloader.batch_size=4"])
    score = train_fold(cfg, preprocess=pre, workdir=tmp_path / "w", progress=False)
    out = tmp_path / "w" / "rtmdet_tiny_cpu" / "fold0"
    assert (out / "model.pth").is_file() and score["epochs"] == 1 and "opacity_ap_tta" in score
    oof = pd.read_csv(out / "oof.csv")
    assert len(oof) == 3 and {"boxes", "boxes_notta"} <= set(oof.columns)  # fold 0 of 6 train images
    load_model(C.load("rtmdet_tiny_cpu"), out / "model.pth", device="cpu")  # the export loads back
