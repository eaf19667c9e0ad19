"""SIIM-FISABIO-RSNA COVID-19 Detection pipeline utilities (the ``siimcovid`` package).

Importing the package first sets the two variables that segmentation-models and
tensorflow-hub need before TensorFlow is imported anywhere (see README, "Gotchas").
"""
import logging as _logging
import os as _os
import warnings as _warnings

_os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The competition's ids are 12-hex-character hashes used as UIDs, which pydicom flags on every
# file it touches (a warning plus a log line); they are expected here, so only that one is muted.
_UI_MSG = "Invalid value for VR UI"
_warnings.filterwarnings("ignore", message=_UI_MSG)
_logging.getLogger("pydicom").addFilter(lambda record: not str(record.msg).startswith(_UI_MSG))

__version__ = "0.1.0"
