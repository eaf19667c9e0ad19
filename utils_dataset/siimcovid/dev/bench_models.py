"""``python -m siimcovid bench models``: what each member of a recipe costs at its real size.

Every member is built through its stage's own builders (the classifier core for the study and
binary members, ``detect.config`` + mmdet's registry for the detectors) with random weights, and
measured here on the CPU: parameters, forward GFLOPs per image, forward images/s, seconds per
training step, peak resident memory. Each member runs in its own subprocess, so its peak RSS is its
own and its memory goes back to the machine when it ends. The rows feed :mod:`siimcovid.costs`
(commit a real-size run's ``models.json`` as ``configs/costs/measured.json``).

The study backbone of the default recipe is a TF Hub EfficientNetV2-L SavedModel, which cannot be
fetched here: its stand-in is ``tf_keras.applications.EfficientNetV2L`` (weights=None) at the same
input size, through the same heads. Training steps run at a smaller batch than the recipe's where
the recipe's would not fit in this machine's memory / time (``train_batch`` of each row); the time
is scaled linearly to the recipe's batch (``train_step_s``), which over-states a GPU step a little
(a larger batch uses the device better) and is said so in docs/costs.md.

FLOPs: TF members from the TF profiler on the frozen forward graph (every op); torch members from
forward hooks on every convolution (including mmcv's deformable ones, which a tracing counter
skips) and linear layer, 2 FLOPs per multiply-add: RoI pooling, NMS and the anchors are left out
(a few % of a two-stage detector's forward).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from ..atomic import write_json
from ..costs import BENCH_MEMBERS, MEMBERS, TINY_MEMBERS
from ..errors import UserError

# The members (costs.MEMBERS: member -> stage, config variant) and which a recipe measures live in
# siimcovid.costs, the table's reader. --tiny: the CPU test variants at 64-128 px, one member per
# stage; the study / binary ones swap their tiny hub for a small keras body (no SavedModel to write).
TINY_KERAS = {"model": "keras", "keras_backbone": "efficientnetb0", "backbone_weights": None, "image_size": 64}
# The real-size study stand-in (see the module doc).
STUDY_STAND_IN = {"model": "keras", "keras_backbone": "efficientnetv2l", "backbone_weights": None}
# Training batch timed here at real size (memory: B7 at 640 x 16 needs tens of GB; several helpers
# share this machine's 24 GiB), and for the tiny variants.
REAL_TRAIN_BATCH, TINY_TRAIN_BATCH = 1, 2


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --------------------------------------------------------------------------- TF members
def _tf_member(stage: str, variant: str, tiny: bool):
    if stage == "study":
        from ..study.config import load_config
        from ..study.task import StudyTask as TaskClass
    else:
        from ..binary.config import load_config
        from ..binary.task import BinaryTask as TaskClass
    overrides = dict(TINY_KERAS if tiny else (STUDY_STAND_IN if stage == "study" else {"backbone_weights": None}))
    overrides["mixed_precision"] = "off"
    return load_config(variant, overrides), TaskClass()


def _tf_flops(model, size: int) -> float:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph

    fn = tf.function(lambda x: model(x, training=False))
    frozen, _ = convert_variables_to_constants_v2_as_graph(fn.get_concrete_function(tf.TensorSpec([1, size, size, 3])))
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                         options=opts)
    return float(prof.total_float_ops)


def _tf_targets(model, batch: int, n_outputs: int):
    import numpy as np

    ys = {}
    for name, shape in zip(model.output_names, model.output_shape.values() if isinstance(model.output_shape, dict)
                           else model.output_shape):
        y = np.zeros((batch,) + tuple(shape[1:]), np.float32)
        if name == "cls" and n_outputs > 1:
            y[:, 0] = 1.0
        ys[name] = y
    return ys


def measure_tf(stage: str, variant: str, tiny: bool, steps: int) -> dict:
    import numpy as np

    from ..classify.backbones import build_model
    from ..classify.runtime import set_policy, set_threads
    from ..classify.train import compile_model

    cfg, task = _tf_member(stage, variant, tiny)
    set_threads(int(os.environ.get("SIIM_BENCH_THREADS", "2")))
    set_policy("off", "cpu")
    size, batch = cfg.image_size, cfg.batch_size
    model = build_model(cfg, task.n_outputs, task.activation)
    row = {"input_size": size, "batch": batch, "epochs": cfg.epochs, "params": int(model.count_params()),
           "gflops": _tf_flops(model, size) / 1e9, "backbone": cfg.keras_backbone}
    x1 = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
    model.predict_on_batch(x1)  # builds the predict function
    t0 = time.perf_counter()
    for _ in range(steps):
        model.predict_on_batch(x1)
    row["cpu_images_per_s"] = steps / (time.perf_counter() - t0)
    tb = min(batch, TINY_TRAIN_BATCH if tiny else REAL_TRAIN_BATCH)
    compile_model(model, cfg, steps_per_epoch=100, task=task)
    xb = np.repeat(x1, tb, axis=0)
    ys = _tf_targets(model, tb, task.n_outputs)
    model.train_on_batch(xb, ys)  # traces the train function
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(xb, ys)
    row["train_batch"] = tb
    row["train_step_s"] = (time.perf_counter() - t0) / steps * batch / tb
    return row


# --------------------------------------------------------------------------- torch members
def _torch_flops(model, run) -> float:
    """2 x multiply-adds of every conv / deformable conv / linear layer during ``run()``."""
    import torch

    total = [0.0]

    def conv_hook(mod, _inp, out):
        out = out[0] if isinstance(out, (tuple, list)) else out
        k = 1
        for d in mod.kernel_size if isinstance(mod.kernel_size, (tuple, list)) else (mod.kernel_size,) * 2:
            k *= d
        groups = getattr(mod, "groups", 1)
        total[0] += 2.0 * out.numel() * (mod.in_channels // groups) * k

    def linear_hook(mod, _inp, out):
        total[0] += 2.0 * out.numel() * mod.in_features

    handles = []
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
        # nn.Conv2d and mmcv's DeformConv2d family hold their own weight; mmcv's ConvModule wraps a
        # conv and repeats its kernel_size / channels, so a wrapper (no weight of its own) is skipped
        elif hasattr(mod, "kernel_size") and hasattr(mod, "in_channels") and mod._parameters.get("weight") is not None:
            handles.append(mod.register_forward_hook(conv_hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return total[0]


def _det_batch(model, size: int, n: int, train: bool):
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    samples = []
    for _ in range(n):
        s = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0)))
        q = size / 4
        s.gt_instances = InstanceData(bboxes=torch.tensor([[q, q, 2 * q, 3 * q], [2.2 * q, q, 3.5 * q, 2.8 * q]]),
                                      labels=torch.tensor([0, 0]))
        samples.append(s)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen) for _ in range(n)]
    return model.data_preprocessor({"inputs": inputs, "data_samples": samples}, train)


def measure_det(variant: str, tiny: bool, steps: int) -> dict:
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from ..detect.config import load, train_from_scratch

    torch.set_num_threads(int(os.environ.get("SIIM_BENCH_THREADS", "2")))
    register_all_modules()
    cfg = load(variant, {"siim.weights": None})
    size, batch = int(cfg.siim["size"]), int(cfg.train_dataloader.batch_size)
    cfg.model.backbone["init_cfg"] = None
    train_from_scratch(cfg.model.backbone)  # as detect.config.prepare does for a run without weights
    model = MODELS.build(cfg.model)
    model.init_weights()
    row = {"input_size": size, "batch": batch, "epochs": int(cfg.train_cfg.max_epochs),
           "params": int(sum(p.numel() for p in model.parameters())),
           "backbone": cfg.model.backbone.get("type")}
    model.eval()
    data = _det_batch(model, size, 1, False)
    with torch.no_grad():
        row["gflops"] = _torch_flops(model, lambda: model(**data, mode="predict")) / 1e9
        t0 = time.perf_counter()
        for _ in range(steps):
            model(**data, mode="predict")
        row["cpu_images_per_s"] = steps / (time.perf_counter() - t0)
    # DCN on CPU is slow: training steps run at batch 1 at real size, scaled to the recipe's batch.
    tb = batch if tiny else min(batch, REAL_TRAIN_BATCH)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    times = []
    for _ in range(steps + 1):  # the first step warms the allocator up
        data = _det_batch(model, size, tb, True)
        t0 = time.perf_counter()
        loss, _ = model.parse_losses(model(**data, mode="loss"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    row["train_batch"] = tb
    row["train_step_s"] = sum(times[1:]) / steps * batch / tb
    return row


# --------------------------------------------------------------------------- driver
def measure_one(member: str, stage: str, variant: str, tiny: bool, steps: int) -> dict:
    """One member measured in this process (the subprocess of :func:`bench_models`)."""
    import siimcovid  # noqa: F401  (TF_USE_LEGACY_KERAS before TF loads)

    t0 = time.perf_counter()
    row = measure_det(variant, tiny, steps) if stage == "det" else measure_tf(stage, variant, tiny, steps)
    row.update(member=member, stage=stage, variant=variant, peak_rss_mb=peak_rss_mb(),
               wall_s=time.perf_counter() - t0)
    return row


def bench_models(out: str | Path, recipe: str = "default", tiny: bool = False, steps: int = 1,
                 only: list[str] | None = None, threads: int = 2, resume: bool = False) -> dict:
    """Every member of ``recipe`` (or the tiny set), each in a subprocess -> ``out/models.json``.
    ``resume``: a member whose row ``out/members/<member>.json`` exists is not measured again."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if recipe not in BENCH_MEMBERS:
        raise UserError(f"recipe {recipe!r} unknown; valid: {', '.join(BENCH_MEMBERS)}")
    table = TINY_MEMBERS if tiny else {m: MEMBERS[m] for m in BENCH_MEMBERS[recipe]}
    members = [(m, stage, variant) for m, (stage, variant) in table.items()
               if not only or m in only or stage in only]
    rows, errors = [], []
    env = dict(os.environ, SIIM_BENCH_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
    for member, stage, variant in members:
        row_file = out / "members" / f"{member}.json"
        row_file.parent.mkdir(exist_ok=True)
        code = ("import json, sys; from siimcovid.dev.bench_models import measure_one; "
                f"r = measure_one({member!r}, {stage!r}, {variant!r}, {tiny!r}, {steps!r}); "
                f"open({str(row_file)!r}, 'w').write(json.dumps(r))")
        if resume and row_file.is_file():
            rows.append(json.loads(row_file.read_text()))
            print(format_row(rows[-1]) + "  (reused)", flush=True)
            continue
        row_file.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not row_file.is_file():
            errors.append({"member": member, "returncode": proc.returncode, "stderr": proc.stderr[-2000:]})
            print(f"bench models: {member} failed (exit {proc.returncode}): {proc.stderr[-400:]}", file=sys.stderr)
            continue
        rows.append(json.loads(row_file.read_text()))
        print(format_row(rows[-1]), flush=True)
    summary = {"recipe": "tiny" if tiny else recipe, "threads": threads, "steps": steps,
               "cpu_count": os.cpu_count(), "members": rows, "errors": errors,
               "command": "python -m siimcovid bench models " + ("--tiny" if tiny else f"--recipe {recipe}")}
    write_json(out / "models.json", summary)
    return summary


def format_row(r: dict) -> str:
    return (f"{r['member']:<26} {r['stage']:<6} {r['input_size']:>5} {r['params'] / 1e6:>8.1f}M "
            f"{r['gflops']:>9.1f} {r['cpu_images_per_s']:>8.3f} {r['train_step_s']:>9.1f} "
            f"(batch {r['batch']}, timed at {r['train_batch']}) {r['peak_rss_mb']:>8.0f}")


def format_table(summary: dict) -> str:
    head = (f"{'member':<26} {'stage':<6} {'size':>5} {'params':>9} {'GFLOPs':>9} {'img/s':>8} "
            f"{'step s':>9} {'':<24} {'RSS MB':>8}")
    lines = [head] + [format_row(r) for r in summary["members"]]
    lines += [f"FAILED {e['member']}: exit {e['returncode']}" for e in summary.get("errors", [])]
    return "\n".join(lines)


def add_parser(sub) -> None:
    m = sub.add_parser("models", help="params, GFLOPs, CPU images/s, train step, peak RSS of every recipe member")
    m.add_argument("--recipe", default="default", choices=sorted(BENCH_MEMBERS))
    m.add_argument("--out", required=True)
    m.add_argument("--tiny", action="store_true", help="the CPU test variants at 64-128 px (seconds)")
    m.add_argument("--steps", type=int, default=1, help="timed forward / training steps per member (after one warm-up)")
    m.add_argument("--only", nargs="*", help="members or stages to run")
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--resume", action="store_true", help="reuse the rows already under OUT/members/")


def run_cli(args: argparse.Namespace) -> int:
    summary = bench_models(args.out, args.recipe, tiny=args.tiny, steps=args.steps, only=args.only,
                           threads=args.threads, resume=args.resume)
    print(format_table(summary))
    from ..costs import format_rows

    print("\nprojected (siimcovid.costs, uncalibrated, docs/costs.md):\n" + "\n".join(format_rows(summary["members"])))
    print(f"wrote {Path(args.out) / 'models.json'}")
    return 1 if summary["errors"] else 0
