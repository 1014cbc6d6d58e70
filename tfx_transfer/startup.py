"""Starting TensorFlow for the command line without its native start-up noise.

On import, TensorFlow's C++ runtime writes absl log lines straight to the process's stderr, before
`TF_CPP_MIN_LOG_LEVEL` is read: oneDNN notices, "Could not find cuda drivers", and on a machine
without a GPU `E0000 ... failed call to cuInit: CUDA error`, which reads as a failure to a CPU user.
`start_tensorflow` imports TensorFlow and lists the devices with stderr's file descriptor pointed at
a temporary file; what was written there is shown only if the import fails. Later lines (tf.data's
"NodeDef mentions attribute ...") are silenced by `TF_CPP_MIN_LOG_LEVEL=3`. `--verbose`
(`TFX_TRANSFER_VERBOSE=1`, which spawned worker processes inherit) shows all of it.

This module imports TensorFlow only inside `start_tensorflow`.

Example:
    >>> start_tensorflow()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import tempfile

#: Set to 1 (by `tfx-transfer --verbose`) to see TensorFlow's native logs.
VERBOSE_VARIABLE = "TFX_TRANSFER_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_VARIABLE, "") not in ("", "0")


def start_tensorflow() -> None:
    """Imports TensorFlow and Keras and finds the devices, quietly unless verbose (see the module)."""
    if verbose() or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        return
    # Level 3 also silences TensorFlow's errors that are not ours to fix ("NodeDef mentions
    # attribute use_unbounded_threadpool ..." on every tf.data map); level 2, which the Makefile
    # exports for the tests, lets them through. --verbose leaves the level as the user set it.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery is where cuInit complains
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
