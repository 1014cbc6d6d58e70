"""TensorFlow started quietly: the command line and the Python API capture its native start-up lines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: Lines TensorFlow's C++ runtime writes on import on a CPU-only machine (absl, before any log level is read).
NOISE = ("cuda drivers", "cuInit", "cpu_feature_guard", "oneDNN")


def _user_environment() -> dict:
    return {key: value for key, value in os.environ.items()
            if key not in ("TF_CPP_MIN_LOG_LEVEL", "TFX_TRANSFER_VERBOSE")}


def test_the_python_api_starts_tensorflow_without_its_native_noise():
    code = ("import tfx_transfer as tt\n"
            "model = tt.load_backbone('mobilenet_v2', weights=None, image_size=32)\n"
            "print(model.name)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                            env=_user_environment())
    assert result.returncode == 0, result.stderr[-2000:]
    assert not [word for word in NOISE if word in result.stderr], result.stderr[-2000:]


@pytest.mark.slow
def test_verbose_shows_the_native_lines_again():
    code = "import tfx_transfer as tt\ntt.load_backbone('mobilenet_v2', weights=None, image_size=32)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                            env=dict(_user_environment(), TFX_TRANSFER_VERBOSE="1"))
    assert result.returncode == 0 and [word for word in NOISE if word in result.stderr], result.stderr[-2000:]
