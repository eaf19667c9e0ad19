"""What a recipe costs on Kaggle's GPUs: the one cost model (docs/costs.md), pure functions.

The inputs are the rows ``python -m siimcovid bench models`` measures here on the CPU (forward
GFLOPs per image, parameters, CPU images/s, the recipe's epochs and batch per member), committed
as ``configs/costs/measured.json``. A T4's time is projected from the FLOPs at a stated efficiency
per kind of network (:data:`EFFICIENCY`, a fraction of the T4's 65 TFLOPS fp16 tensor peak; the
kernels train under mixed precision), 2 x T4 with the launcher the kernels use (MirroredStrategy for
the Keras members, torchrun / DDP for mmdet: :data:`MULTI_GPU_SCALING`). No GPU has been measured
yet, so the efficiencies are assumptions derived from published throughputs (docs/costs.md), each
uncertain by about a factor of :data:`UNCERTAINTY` either way; :func:`calibrate` replaces one by a
measured images/s when a GPU run exists.

``kaggle plan`` prints :func:`plan` per kernel against Kaggle's limits (12 h a session, the weekly
GPU quota, 9 h for the submission kernel), ``kaggle push`` refuses a graph over the quota with
:func:`cuts`, and the inference kernel's budget probe prints :func:`member_seconds_per_image`
beside what it times.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .errors import UserError

# ---------------------------------------------------------------- the competition and Kaggle
TRAIN_IMAGES = 6334
TRAIN_STUDIES = 6054
# Train images with at least one opacity box (train_image_level.csv: 2040 of 6334 are `none`): the
# detectors train on these only (siim.empty_rate 0).
BOXED_TRAIN_IMAGES = 4294
PUBLIC_TEST_IMAGES = 1263  # what a training kernel predicts as "test"
HIDDEN_TEST_IMAGES = 6334  # the hidden test set at submission time is about the size of train
HIDDEN_TEST_STUDIES = 6054
FOLDS = 5
SESSION_LIMIT_H = 12.0
INFERENCE_LIMIT_H = 9.0
INFERENCE_MARGIN = 0.30  # plan inference for 70 % of the 9 hours: machines vary, a timeout scores nothing
# A third-party figure (Kaggle's own page says "about 30 hours a week, sometimes more"): a setting.
WEEKLY_QUOTA_H = 30.0

# ---------------------------------------------------------------- the T4 model (assumptions)
T4_FP16_TFLOPS = 65.0  # tensor-core peak (NVIDIA T4 datasheet); fp32 peak is 8.1
# Fraction of that peak a kind of network reaches under mixed precision (training and inference
# alike; basis in docs/costs.md): EfficientNet-V2 from the EffNetV2 paper's V100 latency (~17 TFLOPS
# on a V100) x T4 ~ V100 / 4; B-series ~0.42 of that (the same table: B7 38 B FLOPs at 170 ms vs
# V2-L 53 B at 98 ms); the DCN two-stage detectors from mmdet's model-zoo fps (~7.4 TFLOPS on a
# V100 in fp32) x T4 ~ V100 / 2 in fp32-equivalent work, discounted for the deformable convs.
EFFICIENCY = {"efficientnet_v2": 0.065, "efficientnet_v1": 0.027, "two_stage_detector": 0.06}
UNCERTAINTY = 2.0  # each projection is good to about x/÷ 2 until calibrated on a GPU
TRAIN_FLOP_FACTOR = 3.0  # forward + backward (~2x forward) per training image
# 2 x T4 against one: MirroredStrategy all-reduces every step over PCIe (no NVLink on Kaggle);
# torchrun / DDP overlaps its all-reduce with the backward pass.
MULTI_GPU_SCALING = {"tf": 1.8, "torch": 1.85}
TRAIN_GPUS = 2  # the training kernels run on T4 x2 (kernel-metadata: NvidiaTeslaT4)
PREDICT_GPUS = 1  # predictions (OOF, test, the inference kernel) run on one GPU
TTA_PASSES = 2  # hflip TTA: every prediction runs twice
LOAD_S_PER_FOLD = 30.0  # build + load weights of one fold at prediction time
EPOCH_OVERHEAD_S = 20.0  # per epoch: validation set-up, checkpoint writing
# The test DICOMs -> PNG in the inference kernel: 10 images/s measured on 2 cores with 2 workers
# (docs/measurements.md, preprocess speed); a Kaggle GPU session has 4 vCPUs, taken as ~1.7x that.
TEST_PREPROCESS_IMAGES_PER_S = 17.0
# Non-model GPU kernels: the wheels kernel (mmcv built on the GPU image) is GPU time too.
FIXED_GPU_HOURS = {"wheels": 0.5}

# ---------------------------------------------------------------- members and recipes
# member -> (stage, config variant). The default recipe's study backbone is a TF Hub EfficientNetV2-L
# SavedModel; bench models measures tf_keras' EfficientNetV2L as its stand-in.
MEMBERS = {
    "study_effv2l_512": ("study", "effv2l_hub_512"),
    "binary_effb7_640": ("binary", "effb7_640"),
    "binary_effv2m_640": ("binary", "effv2m_640"),
    "binary_effb6_512": ("binary", "effb6_512"),
    "det_faster_rcnn_r50_dcn": ("det", "faster_rcnn_r50_dcn"),
    "det_faster_rcnn_r101_dcn": ("det", "faster_rcnn_r101_dcn"),
    "det_cascade_rcnn_r50_dcn": ("det", "cascade_rcnn_r50_dcn"),
    "study_effv2l_640": ("study", "effv2l_hub_640"),
    "det_yolox_l_1024": ("det", "yolox_l_1024"),
    "det_rtmdet_l_1024": ("det", "rtmdet_l_1024"),
}
TINY_MEMBERS = {"study_tiny": ("study", "tiny_cpu"), "binary_tiny": ("binary", "tiny_cpu"), "det_tiny": ("det", "tiny_cpu")}
# Which members one kernel of each stage trains, per recipe: configs/recipe/<name>.yaml (`members`),
# the one place a recipe is written (siimcovid.recipe).
def _recipes() -> dict[str, dict[str, list[str]]]:
    from . import recipe

    return {name: dict(recipe.load(name).members) for name in recipe.names()}


RECIPES = _recipes()
BENCH_MEMBERS = {name: sorted({m for ms in stages.values() for m in ms}) for name, stages in RECIPES.items()}
INFERENCE_STAGE = "inference"
PRETRAIN_PREFIX = "pretrain-"  # pretrain-det / pretrain-cls: trained, never predicted at inference
COLUMNS = ("member", "stage", "input_size", "params", "gflops", "cpu_images_per_s", "train_step_s", "peak_rss_mb")
MEASURED = Path(__file__).resolve().parent / "configs" / "costs" / "measured.json"


def read_measured(path: str | Path | None = None) -> dict[str, dict]:
    """member -> its row, from a ``bench models`` table (default: the committed one)."""
    path = Path(path) if path else MEASURED
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no measured cost table; write one with `python -m siimcovid bench models "
                        f"--recipe default --out DIR` and copy DIR/models.json there") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not JSON ({exc})") from None
    rows = data.get("members") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise UserError(f"{path}: no `members` list (a bench models table holds one row per member)")
    out = {}
    for i, row in enumerate(rows):
        missing = [c for c in COLUMNS + ("epochs",) if c not in row]
        if missing:
            raise UserError(f"{path}: members[{i}] lacks {missing}")
        out[row["member"]] = row
    for member, (base, side) in SCALED.items():
        if member not in out and base in out:
            out[member] = scaled_row(out[base], member, side)
    return out


# A member not measured yet, estimated from a measured one of the same network at another input size:
# FLOPs and step time grow with the pixel count (convolutional nets), images/s falls with it. The row
# says it was derived; `bench models --recipe gold` measures it for real.
SCALED = {"study_effv2l_640": ("study_effv2l_512", 640)}


def scaled_row(row: Mapping, member: str, side: int) -> dict:
    f = (side / float(row["input_size"])) ** 2
    return {**row, "member": member, "input_size": side, "gflops": row["gflops"] * f,
            "cpu_images_per_s": row["cpu_images_per_s"] / f, "train_step_s": row["train_step_s"] * f,
            "derived_from": f"{row['member']} x {f:.3g} (pixel count)"}


# ---------------------------------------------------------------- per image, per member
def kind(row: Mapping) -> str:
    """The kind of network of a row, the key of :data:`EFFICIENCY`."""
    if row["stage"] == "det":
        return "two_stage_detector"
    return "efficientnet_v2" if str(row.get("backbone", "")).lower().startswith("efficientnetv2") \
        else "efficientnet_v1"


def t4_images_per_s(row: Mapping, *, train: bool, gpus: int = 1, efficiency: Mapping[str, float] | None = None) -> float:
    """Projected images/s of a member on ``gpus`` T4s (1 or 2), training or predicting (one pass)."""
    eff = (efficiency or EFFICIENCY)[kind(row)]
    flops = float(row["gflops"]) * 1e9 * (TRAIN_FLOP_FACTOR if train else 1.0)
    one = T4_FP16_TFLOPS * 1e12 * eff / flops
    if gpus <= 1:
        return one
    return one * MULTI_GPU_SCALING["torch" if row["stage"] == "det" else "tf"] * gpus / 2


def member_seconds_per_image(row: Mapping, efficiency: Mapping[str, float] | None = None) -> float:
    """One fold's prediction cost per test image on one T4, TTA included (the budget probe's unit)."""
    return TTA_PASSES / t4_images_per_s(row, train=False, gpus=PREDICT_GPUS, efficiency=efficiency)


def train_images_per_fold(stage: str) -> float:
    """Images one training epoch of a fold sees: 4 folds' worth (detectors: their boxed images)."""
    total = BOXED_TRAIN_IMAGES if stage == "det" else TRAIN_IMAGES
    return total * (FOLDS - 1) / FOLDS


def fold_hours(row: Mapping, efficiency: Mapping[str, float] | None = None) -> dict[str, float]:
    """One training kernel's time for one member: {train_h, predict_h, total_h}."""
    epochs = float(row["epochs"])
    train_s = epochs * (train_images_per_fold(row["stage"]) / t4_images_per_s(row, train=True, gpus=TRAIN_GPUS,
                                                                               efficiency=efficiency)
                        + EPOCH_OVERHEAD_S)
    n_pred = TRAIN_IMAGES / FOLDS + PUBLIC_TEST_IMAGES  # its OOF and the public test
    predict_s = LOAD_S_PER_FOLD + n_pred * member_seconds_per_image(row, efficiency)
    return {"train_h": train_s / 3600, "predict_h": predict_s / 3600, "total_h": (train_s + predict_s) / 3600}


def calibrate(row: Mapping, measured_images_per_s: float, *, train: bool,
              efficiency: Mapping[str, float] | None = None) -> dict[str, float]:
    """The efficiency table with this row's kind set from a GPU measurement (1 T4, one pass)."""
    eff = dict(efficiency or EFFICIENCY)
    flops = float(row["gflops"]) * 1e9 * (TRAIN_FLOP_FACTOR if train else 1.0)
    eff[kind(row)] = measured_images_per_s * flops / (T4_FP16_TFLOPS * 1e12)
    return eff


# ---------------------------------------------------------------- the graph's plan
@dataclass
class KernelCost:
    slug: str
    stage: str
    session: str  # gpu | cpu | tpu
    hours: float
    members: dict[str, float] = field(default_factory=dict)  # member -> hours in this kernel

    @property
    def fits_session(self) -> bool:
        return self.hours <= SESSION_LIMIT_H

    @property
    def hours_high(self) -> float:
        return self.hours * UNCERTAINTY


@dataclass
class Plan:
    recipe: str
    quota_h: float
    kernels: list[KernelCost]
    inference_h: float
    inference_parts: dict[str, float]  # member (x folds) / preprocess -> hours on the hidden test
    unknown: list[str] = field(default_factory=list)  # recipe members with no measured row

    @property
    def gpu_hours(self) -> float:
        return sum(k.hours for k in self.kernels if k.session != "cpu")

    @property
    def fits_quota(self) -> bool:
        return self.gpu_hours <= self.quota_h

    @property
    def inference_fits(self) -> bool:
        return self.inference_h <= INFERENCE_LIMIT_H * (1 - INFERENCE_MARGIN)

    def lines(self) -> list[str]:
        out = [f"costs ({self.recipe} recipe; T4 projected from FLOPs, uncalibrated: x/÷ {UNCERTAINTY:g}, "
               "docs/costs.md):",
               f"  {'kernel':<40} {'session':<7} {'hours':>6} {'high':>6}  12 h?"]
        for k in self.kernels:
            if k.session == "cpu" and not k.hours:
                continue
            out.append(f"  {k.slug:<40} {k.session:<7} {k.hours:>6.2f} {k.hours_high:>6.2f}  "
                       f"{'fits' if k.fits_session else 'OVER'}"
                       + (f"  ({', '.join(f'{m} {h:.2f} h' for m, h in k.members.items())})" if len(k.members) > 1 else ""))
        out.append(f"  GPU total {self.gpu_hours:.1f} h (high {self.gpu_hours * UNCERTAINTY:.1f} h) against a weekly "
                   f"quota of {self.quota_h:g} h: {'fits' if self.fits_quota else 'OVER'}"
                   + ("" if self.fits_quota else f" ({self.gpu_hours / self.quota_h:.1f} weeks of quota)"))
        limit = INFERENCE_LIMIT_H * (1 - INFERENCE_MARGIN)
        out.append(f"  inference on the hidden test ({HIDDEN_TEST_IMAGES} images): {self.inference_h:.2f} h "
                   f"(high {self.inference_h * UNCERTAINTY:.2f} h) against {INFERENCE_LIMIT_H:g} h with a "
                   f"{INFERENCE_MARGIN:.0%} margin ({limit:.1f} h): {'fits' if self.inference_fits else 'OVER'}")
        for part, h in sorted(self.inference_parts.items(), key=lambda kv: -kv[1]):
            out.append(f"    {part:<38} {h:6.2f} h")
        if self.unknown:
            out.append(f"  not in the measured table (counted as 0): {', '.join(self.unknown)}")
        if not self.fits_quota or not self.inference_fits:
            out += ["  to fit:"] + [f"    {c}" for c in cuts(self)]
        return out


def plan(kernels: Iterable[tuple[str, str, str]], rows: Mapping[str, Mapping], recipe: str = "default",
         quota_h: float = WEEKLY_QUOTA_H, efficiency: Mapping[str, float] | None = None) -> Plan:
    """Hours of every kernel ``(slug, stage, session)`` of a graph under ``recipe``, its total, and the
    inference kernel's projection on the hidden test (every fold of every member the graph trains)."""
    if recipe not in RECIPES:
        raise UserError(f"recipe {recipe!r} unknown; valid: {', '.join(RECIPES)}")
    stages = RECIPES[recipe]
    kernels = list(kernels)
    unknown = sorted({m for ms in stages.values() for m in ms if m not in rows})
    out, folds = [], {}
    for slug, stage, session in kernels:
        members = {}
        for m in stages.get(stage, []):
            if m in rows:
                members[m] = fold_hours(rows[m], efficiency)["total_h"]
        if stage in stages and not stage.startswith(PRETRAIN_PREFIX):  # pre-training is no inference member
            folds[stage] = folds.get(stage, 0) + 1
        hours = sum(members.values()) + FIXED_GPU_HOURS.get(stage, 0.0)
        out.append(KernelCost(slug, stage, session, hours, members))
    parts = {}
    for stage, n in folds.items():
        for m in stages[stage]:
            if m in rows:
                s = n * (LOAD_S_PER_FOLD + HIDDEN_TEST_IMAGES * member_seconds_per_image(rows[m], efficiency))
                parts[f"{m} x {n} folds"] = s / 3600
    parts["test DICOMs -> PNG (CPU)"] = HIDDEN_TEST_IMAGES / TEST_PREPROCESS_IMAGES_PER_S / 3600
    inference_h = sum(parts.values())
    for k in out:
        if k.stage == INFERENCE_STAGE:
            k.hours = inference_h
    return Plan(recipe, quota_h, out, inference_h, parts, unknown)


def cuts(p: Plan) -> list[str]:
    """What to cut so the plan fits: members dropped (costliest first, keeping one per stage), then
    the epochs scaled, for the quota; TTA and members, for the 9 hours."""
    out = []
    over = p.gpu_hours - p.quota_h
    if over > 0:
        per_member: dict[str, tuple[str, float]] = {}
        for k in p.kernels:
            for m, h in k.members.items():
                stage, total = per_member.get(m, (k.stage, 0.0))
                per_member[m] = (stage, total + h)
        left = {s: [m for m, (st, _) in per_member.items() if st == s] for s in {st for st, _ in per_member.values()}}
        for m, (stage, h) in sorted(per_member.items(), key=lambda kv: -kv[1][1]):
            if over <= 0:
                break
            if len(left[stage]) > 1:
                left[stage].remove(m)
                over -= h
                out.append(f"drop {m} from {stage} (-{h:.1f} h over its {FOLDS} folds)")
        if over > 0:
            model_h = sum(sum(k.members.values()) for k in p.kernels if k.stage != INFERENCE_STAGE)
            keep = max(0.0, 1 - over / model_h) if model_h else 0.0
            out.append(f"then train every remaining member for {keep:.0%} of its epochs, or spread the graph over "
                       f"{p.gpu_hours / p.quota_h:.1f} weeks (`kaggle push --only` a stage a week)")
    if not p.inference_fits:
        limit = INFERENCE_LIMIT_H * (1 - INFERENCE_MARGIN)
        out.append(f"inference: turn TTA off (halves the model time) or drop members until it is under {limit:.1f} h")
    return out


def quota_error(p: Plan) -> str | None:
    """The refusal ``kaggle push`` gives before pushing a graph over the weekly quota, else None."""
    if p.fits_quota:
        return None
    return (f"the graph is projected at {p.gpu_hours:.1f} GPU hours, above the weekly quota of {p.quota_h:g} h "
            f"(--quota-hours); nothing pushed. To fit: " + "; ".join(cuts(p)))


def format_rows(rows: Sequence[Mapping]) -> list[str]:
    """The measured table with its T4 projections, for docs and the bench's report."""
    out = [f"{'member':<26} {'GFLOPs':>7} {'CPU img/s':>9} {'T4 train img/s':>14} {'T4 infer img/s':>14} "
           f"{'fold h (T4x2)':>13}"]
    for r in rows:
        out.append(f"{r['member']:<26} {r['gflops']:>7.1f} {r['cpu_images_per_s']:>9.3f} "
                   f"{t4_images_per_s(r, train=True):>14.1f} {t4_images_per_s(r, train=False):>14.1f} "
                   f"{fold_hours(r)['total_h']:>13.2f}")
    return out


def variant_seconds_per_image(variant: str, rows: Mapping[str, Mapping] | None = None) -> float | None:
    """The model's seconds per test image of one fold of a config variant on a T4 (TTA included),
    None when the variant is not in the measured table (the budget probe prints it beside its timing)."""
    if rows is None:
        try:
            rows = read_measured()
        except UserError:
            return None
    base = variant.rsplit("_r", 1)[0] if variant.rsplit("_r", 1)[-1].isdigit() else variant  # det rounds: _r2
    for member, (_, v) in MEMBERS.items():
        if v in (variant, base) and member in rows:
            return member_seconds_per_image(rows[member])
    return None
