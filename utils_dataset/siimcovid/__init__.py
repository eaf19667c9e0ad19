"""SIIM-FISABIO-RSNA COVID-19 Detection pipeline utilities (the ``siimcovid`` package).

Importing the package first sets the two variables that segmentation-models and
tensorflow-hub need before TensorFlow is imported anywhere (see README, "Gotchas").
"""
import os as _os

_os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
