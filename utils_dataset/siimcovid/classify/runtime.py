"""The classifier core's runtime: tf_keras, the distribution strategy, precision and threads.

Every call the core makes to strategy / precision goes through :func:`setup` and
:func:`set_policy`, which delegate to :mod:`siimcovid.accelerator` (the one place of those rules,
with its loud guard: a TPU session without TPU-capable TensorFlow, a GPU session whose TF sees no
GPU raise instead of training on the CPU).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

if TYPE_CHECKING:
    import tensorflow as tf


def keras():
    """tf_keras, checked to be what ``tf.keras`` (hence segmentation_models) resolves to."""
    import tensorflow as tf
    import tf_keras

    if tf.keras.layers.Layer is not tf_keras.layers.Layer:  # (tf.keras is a lazy module: compare classes)
        raise RuntimeError("tf.keras is Keras 3 here, not tf_keras: `import siimcovid` must come before the first "
                           "`import tensorflow` (it sets TF_USE_LEGACY_KERAS=1 for hub and segmentation_models)")
    return tf_keras


_PREPARED: dict = {}


def prepare(threads: int = 0, deterministic: bool | None = None, tf: Any = None) -> dict:
    """The process's TensorFlow runtime, the one call every TF entry point (training, the study
    and binary predictions) makes before its first op; idempotent (later calls return the first
    call's facts and only retry what the first could not set).

    - memory growth on every GPU: TF's default maps nearly all GPU memory at the first op, and
      the inference kernel's torch detectors run after the study folds in the same process;
    - thread counts (``threads`` > 0): fixed pools, also what op determinism needs on the CPU;
    - op determinism (``deterministic``; None = on when no GPU is visible: the CPU runs of the demo
      and the tests are then repeatable for a seed, while GPU training keeps its fast
      nondeterministic kernels, some of which have no deterministic GPU version).

    -> ``{"gpus", "memory_growth", "deterministic", "threads"}``."""
    if tf is None:
        import tensorflow as tf
    if not _PREPARED:
        gpus = tf.config.list_physical_devices("GPU")
        grown = []
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
                grown.append(gpu.name)
            except RuntimeError:  # devices initialised before this call: too late, say so once
                from ..log import get_logger

                get_logger().warning("TensorFlow initialised %s before memory growth could be set: it keeps "
                                     "the default (nearly all GPU memory)", gpu.name)
        det = (not gpus) if deterministic is None else bool(deterministic)
        if det:
            tf.config.experimental.enable_op_determinism()
        _PREPARED.update(gpus=len(gpus), memory_growth=grown, deterministic=det, threads=0)
    if threads and not _PREPARED["threads"]:
        set_threads(threads, tf)
        _PREPARED["threads"] = int(threads)
    return dict(_PREPARED)


def setup(cfg: Any) -> tuple["tf.distribute.Strategy", str, str]:
    """Runtime (:func:`prepare`), strategy and the global precision policy for a run of ``cfg``
    -> (strategy, device, policy)."""
    prepare(getattr(cfg, "threads", 0))
    from ..accelerator import get_strategy

    strategy, device = get_strategy()
    return strategy, device, set_policy(cfg.mixed_precision, device)


def set_policy(mixed: str, device: str) -> str:
    """The global Keras dtype policy for ``mixed`` (auto: mixed_bfloat16 on TPU, mixed_float16 on
    GPU, float32 on CPU; off: float32; or a policy name) -> the policy's name."""
    from ..accelerator import set_precision

    return set_precision(mixed, device)


def local_device() -> str:
    """gpu or cpu, for prediction (no strategy)."""
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def set_threads(n: int, tf: Any = None) -> None:
    if tf is None:
        import tensorflow as tf
    if n > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # already initialised in this process
            pass
