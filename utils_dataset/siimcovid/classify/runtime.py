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


def setup(cfg: Any) -> tuple["tf.distribute.Strategy", str, str]:
    """Threads, strategy and the global precision policy for a run of ``cfg`` ->
    (strategy, device, policy)."""
    set_threads(getattr(cfg, "threads", 0))
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


def set_threads(n: int) -> None:
    import tensorflow as tf

    if n > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # already initialised in this process
            pass
