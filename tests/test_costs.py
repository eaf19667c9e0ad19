"""The cost model (siimcovid.costs): T4 projection from FLOPs, the plan per kernel against Kaggle's
limits, the cuts, the committed measured table; `bench models --tiny` writes a table it reads."""
import json
import subprocess
import sys

import pytest

from siimcovid import costs
from siimcovid.errors import UserError


def row(member, stage, gflops, epochs=10, backbone="efficientnetv2l"):
    return {"member": member, "stage": stage, "input_size": 512, "params": 1, "gflops": gflops,
            "cpu_images_per_s": 1.0, "train_step_s": 1.0, "peak_rss_mb": 1.0, "epochs": epochs, "backbone": backbone}


ROWS = {"study_effv2l_512": row("study_effv2l_512", "study", 100.0, 20),
        "binary_effb7_640": row("binary_effb7_640", "binary", 80.0, 15, "efficientnetb7"),
        "binary_effv2m_640": row("binary_effv2m_640", "binary", 80.0, 15, "efficientnetv2m"),
        "binary_effb6_512": row("binary_effb6_512", "binary", 40.0, 15, "efficientnetb6"),
        "det_faster_rcnn_r50_dcn": row("det_faster_rcnn_r50_dcn", "det", 120.0, 12, "ResNet")}
GRAPH = ([("siimcovid-wheels", "wheels", "gpu"), ("siimcovid-preprocess", "preprocess", "cpu")]
         + [(f"siimcovid-train-{s}-fold-{k}", f"train-{s}-fold", "gpu") for s in ("study", "binary", "det")
            for k in range(5)]
         + [("siimcovid-inference", "inference", "gpu")])


def test_t4_throughput_follows_flops_efficiency_and_gpus():
    r = ROWS["study_effv2l_512"]
    one = costs.t4_images_per_s(r, train=False)
    assert one == pytest.approx(65e12 * costs.EFFICIENCY["efficientnet_v2"] / 100e9)
    assert costs.t4_images_per_s(r, train=True) == pytest.approx(one / costs.TRAIN_FLOP_FACTOR)
    assert costs.t4_images_per_s(r, train=False, gpus=2) == pytest.approx(one * costs.MULTI_GPU_SCALING["tf"])
    det = ROWS["det_faster_rcnn_r50_dcn"]
    assert costs.kind(det) == "two_stage_detector" and costs.kind(ROWS["binary_effb7_640"]) == "efficientnet_v1"
    assert costs.t4_images_per_s(det, train=False, gpus=2) / costs.t4_images_per_s(det, train=False) == \
        pytest.approx(costs.MULTI_GPU_SCALING["torch"])


def test_calibrate_reproduces_a_measured_throughput():
    r = ROWS["binary_effb7_640"]
    eff = costs.calibrate(r, 7.5, train=True)
    assert costs.t4_images_per_s(r, train=True, efficiency=eff) == pytest.approx(7.5)
    assert eff["efficientnet_v2"] == costs.EFFICIENCY["efficientnet_v2"]  # other kinds untouched


def test_fold_hours_count_epochs_train_images_and_predictions():
    r = ROWS["det_faster_rcnn_r50_dcn"]
    h = costs.fold_hours(r)
    train_s = 12 * (costs.BOXED_TRAIN_IMAGES * 0.8 / costs.t4_images_per_s(r, train=True, gpus=2)
                    + costs.EPOCH_OVERHEAD_S)
    assert h["train_h"] == pytest.approx(train_s / 3600)
    n_pred = costs.TRAIN_IMAGES / 5 + costs.PUBLIC_TEST_IMAGES
    assert h["predict_h"] == pytest.approx((costs.LOAD_S_PER_FOLD + n_pred * costs.member_seconds_per_image(r)) / 3600)
    assert h["total_h"] == pytest.approx(h["train_h"] + h["predict_h"])
    assert costs.fold_hours({**r, "epochs": 24})["train_h"] == pytest.approx(2 * h["train_h"])


def test_plan_sums_kernels_and_projects_inference_on_every_fold():
    p = costs.plan(GRAPH, ROWS)
    by = {k.slug: k for k in p.kernels}
    binary = by["siimcovid-train-binary-fold-0"]
    assert set(binary.members) == {"binary_effb7_640", "binary_effv2m_640", "binary_effb6_512"}
    assert binary.hours == pytest.approx(sum(costs.fold_hours(ROWS[m])["total_h"] for m in binary.members))
    assert by["siimcovid-wheels"].hours == costs.FIXED_GPU_HOURS["wheels"]
    assert by["siimcovid-preprocess"].hours == 0
    expect = sum(5 * (costs.LOAD_S_PER_FOLD + costs.HIDDEN_TEST_IMAGES * costs.member_seconds_per_image(r))
                 for r in ROWS.values()) / 3600 + costs.HIDDEN_TEST_IMAGES / costs.TEST_PREPROCESS_IMAGES_PER_S / 3600
    assert p.inference_h == pytest.approx(expect) and by["siimcovid-inference"].hours == pytest.approx(expect)
    assert p.gpu_hours == pytest.approx(sum(k.hours for k in p.kernels if k.session == "gpu"))
    text = "\n".join(p.lines())
    assert "siimcovid-train-binary-fold-0" in text and "weekly quota of 30 h" in text and "9 h with a 30% margin" in text


def test_over_quota_cuts_members_costliest_first_and_keeps_one_per_stage():
    p = costs.plan(GRAPH, ROWS, quota_h=1.0)
    assert not p.fits_quota
    cut = costs.cuts(p)
    dropped = [c.split()[1] for c in cut if c.startswith("drop ")]
    assert dropped and "study_effv2l_512" not in dropped and "det_faster_rcnn_r50_dcn" not in dropped
    assert len(dropped) == 2  # of three binary members one stays
    assert "epochs" in cut[-1] or "inference" in cut[-1]
    assert "above the weekly quota of 1 h" in costs.quota_error(p)
    assert costs.quota_error(costs.plan(GRAPH, ROWS, quota_h=1e6)) is None


def test_inference_over_nine_hours_suggests_tta_off():
    slow = {m: {**r, "gflops": r["gflops"] * 50} for m, r in ROWS.items()}
    p = costs.plan(GRAPH, slow, quota_h=1e9)
    assert not p.inference_fits and any("TTA" in c for c in costs.cuts(p))


def test_unknown_recipe_and_missing_rows_are_said():
    with pytest.raises(UserError, match="recipe 'nope' unknown"):
        costs.plan(GRAPH, ROWS, recipe="nope")
    p = costs.plan(GRAPH, {k: v for k, v in ROWS.items() if k != "binary_effb6_512"})
    assert p.unknown == ["binary_effb6_512"] and "binary_effb6_512" in "\n".join(p.lines())


def test_read_measured_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(UserError, match="no measured cost table"):
        costs.read_measured(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"members": [{"member": "x"}]}))
    with pytest.raises(UserError, match=r"bad.json: members\[0\] lacks"):
        costs.read_measured(bad)


def test_committed_table_covers_the_default_recipe():
    rows = costs.read_measured()
    needed = {m for ms in costs.RECIPES["default"].values() for m in ms}
    assert needed <= set(rows)
    assert all(rows[m]["gflops"] > 1 and rows[m]["cpu_images_per_s"] > 0 for m in needed)
    assert costs.variant_seconds_per_image("effb7_640", rows) == pytest.approx(
        costs.member_seconds_per_image(rows["binary_effb7_640"]))
    assert costs.variant_seconds_per_image("faster_rcnn_r50_dcn_r2", rows) is not None
    assert costs.variant_seconds_per_image("no_such_variant", rows) is None


@pytest.mark.parametrize("only", ["binary", "det"])
def test_bench_models_tiny_writes_a_table_the_model_reads(tmp_path, only):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "siimcovid", "bench", "models", "--tiny", "--only", only,
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = costs.read_measured(out / "models.json")
    (r,) = rows.values()
    assert r["stage"] == only and r["input_size"] in (64, 128)
    assert r["params"] > 1000 and r["gflops"] > 0.001 and r["cpu_images_per_s"] > 0 and r["train_step_s"] > 0
    assert r["peak_rss_mb"] > 100 and r["epochs"] >= 1
    assert "models.json" in proc.stdout and r["member"] in proc.stdout
    # --resume reuses the row without measuring again
    again = subprocess.run([sys.executable, "-m", "siimcovid", "bench", "models", "--tiny", "--only", only,
                            "--resume", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "(reused)" in again.stdout


def test_torch_flops_count_each_conv_once_deformable_included():
    torch = pytest.importorskip("torch")
    from mmcv.cnn import ConvModule
    from mmcv.ops import ModulatedDeformConv2dPack

    from siimcovid.dev.bench_models import _torch_flops

    m = torch.nn.Sequential(ConvModule(3, 8, 3, padding=1), ModulatedDeformConv2dPack(8, 8, 3, padding=1),
                            torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 10))
    x = torch.zeros(1, 3, 16, 16)
    px = 16 * 16
    # ConvModule's conv once (not again for the wrapper), the DCN and its offset conv (27 = 3 x 3 x 3), the linear
    expect = 2 * (px * 8 * 3 * 9 + px * 8 * 8 * 9 + px * 27 * 8 * 9 + 10 * 8 * px)
    assert _torch_flops(m, lambda: m(x)) == expect
