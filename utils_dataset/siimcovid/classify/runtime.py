"""The classifier core's runtime: tf_keras, the distribution strategy, precision and threads.

Every call the core makes to strategy / precision goes through :func:`setup` and
:func:`set_policy`, so moving to ``siimcovid.accelerator`` (its loud guard: a TPU session without
TPU-capable TensorFlow, a GPU session whose TF sees no GPU) changes only the two marked lines.
"""
from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING, Any

import siimcovid  # noqa: F401  (sets SM_FRAMEWORK / TF_USE_LEGACY_KERAS before TF loads)

from ..log import get_logger

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


def setup(cfg: Any) -> tuple["tf.distribute.Strategy", str, str]:
    """Threads, strategy and the global precision policy for a run of ``cfg`` ->
    (strategy, device, policy)."""
    set_threads(getattr(cfg, "threads", 0))
    strategy, device = get_strategy()  # switch: `from ..accelerator import get_strategy`
    return strategy, device, set_policy(cfg.mixed_precision, device)


def set_policy(mixed: str, device: str) -> str:
    """The Keras dtype policy for ``mixed`` (auto: mixed_bfloat16 on TPU, mixed_float16 on GPU,
    float32 on CPU; off: float32) -> the policy's name ("off" for float32)."""
    import tf_keras

    policy = mixed  # switch: `return accelerator.set_precision(mixed, device)`
    if policy == "auto":
        policy = {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}.get(device, "off")
    tf_keras.mixed_precision.set_global_policy("float32" if policy == "off" else policy)
    return policy


def local_device() -> str:
    """gpu or cpu, for prediction (no strategy)."""
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def tpu_present() -> bool:
    """Cheap check before touching the TPU resolver (which may wait on a metadata server)."""
    env = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR", "TPU_WORKER_ID")
    return any(os.environ.get(k) for k in env) or bool(glob.glob("/dev/accel*")) or bool(glob.glob("/dev/vfio/[0-9]*"))


def get_strategy() -> tuple["tf.distribute.Strategy", str]:
    """TPUStrategy when a TPU is found, MirroredStrategy on several GPUs, else the default."""
    import tensorflow as tf

    log = get_logger()
    if tpu_present():
        for tpu in ("local", None):
            try:
                resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu) if tpu else \
                    tf.distribute.cluster_resolver.TPUClusterResolver()
                tf.config.experimental_connect_to_cluster(resolver)
                tf.tpu.experimental.initialize_tpu_system(resolver)
                strategy = tf.distribute.TPUStrategy(resolver)
                log.info("TPU: %d replicas", strategy.num_replicas_in_sync)
                return strategy, "tpu"
            except Exception as exc:  # noqa: BLE001 - any failure means "no usable TPU"
                log.info("no TPU via %r: %s", tpu, exc)
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), "gpu"
    return tf.distribute.get_strategy(), ("gpu" if gpus else "cpu")


def set_threads(n: int) -> None:
    import tensorflow as tf

    if n > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # already initialised in this process
            pass
