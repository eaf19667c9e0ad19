"""Which accelerator a stage trains on, and a loud failure when one is attached but unusable.

Kaggle's TPU image ships ``tensorflow-cpu``: a TensorFlow kernel with ``enable_tpu`` gets a TPU
it cannot use, and code that falls back to the default strategy then trains on the host CPU for
hours without a word. So the rule here is: an accelerator the session HAS but the framework
CANNOT use is an :class:`AcceleratorError`, never a fallback. TensorFlow training defaults to
the GPU (Kaggle's T4 x2: MirroredStrategy, mixed_float16); TPU is an explicit choice.

Detection is injectable (``hardware=``, ``tf=``, ``torch=``) so tests can fake every case.
"""
from __future__ import annotations

import glob
import importlib.metadata as md
import os
from dataclasses import dataclass
from typing import Any, Callable

from .errors import UserError
from .log import get_logger

TPU_ENV = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR", "TPU_WORKER_ID")
TPU_DEVICES = ("/dev/accel*", "/dev/vfio/[0-9]*")
# An attached NVIDIA GPU shows up as a device node and in the driver's proc tree. The
# NVIDIA_VISIBLE_DEVICES variable is NOT evidence: CUDA base images set it in CPU sessions too.
GPU_DEVICES = ("/dev/nvidia[0-9]*", "/proc/driver/nvidia/gpus/*")
DEVICES = ("auto", "gpu", "tpu", "cpu")


class AcceleratorError(UserError):
    """An accelerator is attached (or required) but the framework cannot use it. Fixed by the
    user (the kernel's accelerator or image), so the CLI prints it as one line."""


@dataclass(frozen=True)
class Hardware:
    """What the session has attached, each as the evidence found (None: not attached)."""

    tpu: str | None = None
    gpu: str | None = None


def detect_hardware(env: dict[str, str] | None = None,
                    glob_: Callable[[str], list[str]] = glob.glob) -> Hardware:
    """Attached accelerators from device nodes and the TPU variables (no framework import)."""
    env = os.environ if env is None else env
    tpu = next((f"${k}" for k in TPU_ENV if env.get(k)), None)
    if tpu is None:
        tpu = next((hits[0] for pat in TPU_DEVICES if (hits := sorted(glob_(pat)))), None)
    gpu = next((hits[0] for pat in GPU_DEVICES if (hits := sorted(glob_(pat)))), None)
    return Hardware(tpu=tpu, gpu=gpu)


def tpu_present(hardware: Hardware | None = None) -> bool:
    """Cheap check before touching the TPU resolver (which may wait on a metadata server)."""
    return (hardware or detect_hardware()).tpu is not None


def tf_distribution(dists: Callable[[str], str] = md.version) -> str | None:
    """The installed TensorFlow distribution name (tensorflow, tensorflow-cpu, tensorflow-tpu, ...)."""
    for name in ("tensorflow-tpu", "tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"):
        try:
            dists(name)
            return name
        except md.PackageNotFoundError:
            continue
    return None


_TPU_FIX = ("train the TensorFlow kernels on GPU (the default in kernel-metadata/: enable_gpu) or render them "
            "with an image whose TensorFlow supports TPU "
            "(`kaggle render|push --accelerator TpuV5E8 --docker-image IMAGE`)")


def _connect_tpu(tf: Any, hw: Hardware, dist: str | None):
    if dist == "tensorflow-cpu":
        raise AcceleratorError(f"a TPU is attached ({hw.tpu}) but this image's TensorFlow is tensorflow-cpu "
                               f"{getattr(tf, '__version__', '?')}, which cannot use it: {_TPU_FIX}")
    errors = []
    for tpu in ("local", None):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(**({"tpu": tpu} if tpu else {}))
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except Exception as exc:  # noqa: BLE001 - collected, then raised as ONE clear error below
            errors.append(f"{tpu or 'default'}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise AcceleratorError(f"a TPU is attached ({hw.tpu or 'required'}) but TensorFlow "
                           f"{getattr(tf, '__version__', '?')} cannot connect to it ({'; '.join(errors)}): {_TPU_FIX}")


def get_strategy(require: str | None = None, *, hardware: Hardware | None = None,
                 tf: Any = None) -> tuple[Any, str]:
    """-> (tf.distribute strategy, device) with device in gpu | tpu | cpu.

    ``require``: None/"auto" picks what is attached (TPU, else GPU, else CPU); "gpu"/"tpu" fail
    when that device is not usable; "cpu" trains on the CPU on purpose (no guard). An attached
    accelerator TensorFlow cannot use raises :class:`AcceleratorError` instead of a CPU fallback.
    """
    require = (require or "auto").lower()
    if require not in DEVICES:
        raise UserError(f"accelerator {require!r} is not one of {', '.join(DEVICES)}")
    if tf is None:
        import tensorflow as tf
    hw = hardware or detect_hardware()
    log = get_logger()
    if require == "cpu":
        return tf.distribute.get_strategy(), "cpu"
    if require == "tpu" or (require == "auto" and hw.tpu):
        if require == "tpu" and not hw.tpu:
            raise AcceleratorError(f"a TPU was required but none is attached ({', '.join(TPU_ENV)} unset, "
                                   f"no {' or '.join(TPU_DEVICES)}): set the kernel's accelerator to a TPU")
        strategy = _connect_tpu(tf, hw, tf_distribution())
        log.info("TPU (%s): %d replicas", hw.tpu, strategy.num_replicas_in_sync)
        return strategy, "tpu"
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and (hw.gpu or require == "gpu"):
        cuda = getattr(getattr(tf, "test", None), "is_built_with_cuda", lambda: None)()
        what = f"a GPU is attached ({hw.gpu})" if hw.gpu else "a GPU was required"
        raise AcceleratorError(
            f"{what} but TensorFlow {getattr(tf, '__version__', '?')} sees no GPU (built with CUDA: {cuda}); "
            "on Kaggle use the GPU image's own TensorFlow (do not install another tensorflow from the wheels), "
            "locally install a CUDA build of TensorFlow")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        log.info("GPU: MirroredStrategy over %d GPUs", len(gpus))
        return strategy, "gpu"
    if gpus:
        return tf.distribute.get_strategy(), "gpu"
    log.warning("no accelerator attached: training on the CPU")
    return tf.distribute.get_strategy(), "cpu"


def precision_policy(mixed: bool | str, device: str) -> str:
    """The Keras dtype policy for ``mixed`` (True/"auto": the device's mixed policy; False/"off":
    float32; or a policy name) on ``device``. mixed_float16 on CPU only slows training down."""
    if isinstance(mixed, str) and mixed not in ("auto", "on", "off"):
        if mixed not in ("float32", "mixed_float16", "mixed_bfloat16"):
            raise UserError(f"mixed precision {mixed!r}: use auto, off, mixed_float16 or mixed_bfloat16")
        return mixed
    if mixed in (False, "off"):
        return "float32"
    return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}.get(device, "float32")


def set_precision(mixed: bool | str | Any, device: str, *, keras: Any = None) -> str:
    """Set the global Keras (tf_keras: the package runs with TF_USE_LEGACY_KERAS=1) dtype policy
    and return its name. ``mixed`` may also be a config with a ``mixed_precision`` field."""
    mixed = getattr(mixed, "mixed_precision", mixed)
    policy = precision_policy(mixed, device)
    if keras is None:
        import tf_keras as keras
    keras.mixed_precision.set_global_policy(policy)
    return policy


def torch_device(require: str | None = None, *, hardware: Hardware | None = None, torch: Any = None) -> str:
    """"cuda" or "cpu" for the torch stages (detection). A GPU session whose torch sees no CUDA,
    a TPU-only session (torch would train on the host CPU) or ``require="gpu"`` without CUDA
    raise :class:`AcceleratorError`."""
    require = (require or "auto").lower()
    if require not in DEVICES or require == "tpu":
        raise UserError(f"torch accelerator {require!r} is not one of auto, gpu, cpu")
    if require == "cpu":
        return "cpu"
    if torch is None:
        import torch
    hw = hardware or detect_hardware()
    if torch.cuda.is_available():
        return "cuda"
    version = getattr(torch, "__version__", "?")
    if hw.gpu or require == "gpu":
        what = f"a GPU is attached ({hw.gpu})" if hw.gpu else "a GPU was required"
        raise AcceleratorError(f"{what} but torch {version} sees no CUDA device (a CPU build of torch?): "
                               "use the GPU image's own torch")
    if hw.tpu:
        raise AcceleratorError(f"this session has a TPU ({hw.tpu}) and no GPU; the torch stages run on GPU "
                               "(set the kernel's accelerator to NvidiaTeslaT4)")
    return "cpu"
