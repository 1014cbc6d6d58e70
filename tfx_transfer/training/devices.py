"""Where training runs: the distribution strategy, XLA and the precision policy.

On a GPU, XLA (`jit_compile`) and mixed precision are on by default; on a CPU both are off (XLA is
about 10x slower here for depthwise convolutions, and `mixed_bfloat16` helps only some backbones).
Several GPUs use `MirroredStrategy`. Multi-worker training (`TF_CONFIG`) is refused with the
reason: Keras 3's `fit` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585), and a
test watches for the day it no longer does.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import keras
import tensorflow as tf


#: Why a TF_CONFIG (multi-worker) run is refused: Keras 3's `fit` fails under
#: MultiWorkerMirroredStrategy with this TensorFlow; tests/test_devices.py checks it still does.
MULTI_WORKER_UNSUPPORTED = (
    "TF_CONFIG is set, asking for multi-worker training, but Keras 3's fit does not run under "
    "tf.distribute.MultiWorkerMirroredStrategy with TensorFlow {tf_version} and Keras {keras_version}: the first "
    "step fails with \"Attempt to convert a value (PerReplica...) to a Tensor\" (keras-team/keras#20585, "
    "tensorflow/tensorflow#72388). Train on one machine (several GPUs are used with MirroredStrategy), "
    "or unset TF_CONFIG. Received TF_CONFIG: {tf_config}"
)


@dataclass(frozen=True)
class DeviceSetup:
    strategy: tf.distribute.Strategy
    jit_compile: bool | str
    mixed_precision: bool
    description: str


def configure_devices(
    jit_compile: str | bool = "auto", mixed_precision: str | bool = "auto", distribution: str = "auto"
) -> DeviceSetup:
    """Chooses the distribution strategy, XLA and the precision policy for this machine.

    With several GPUs: `MirroredStrategy`; otherwise the default strategy. With `TF_CONFIG` set
    (and `distribution="auto"`), a `RuntimeError` explains why multi-worker training is refused. XLA and mixed precision are on by default on a GPU and off on
    a CPU (XLA is ~10x slower there for depthwise convolutions). Explicit True/False override.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if distribution == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    elif distribution == "none":
        strategy = tf.distribute.get_strategy()
    elif os.environ.get("TF_CONFIG"):
        raise RuntimeError(MULTI_WORKER_UNSUPPORTED.format(
            tf_version=tf.__version__, keras_version=keras.__version__, tf_config=os.environ["TF_CONFIG"]))
    elif len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    use_mixed = bool(gpus) if mixed_precision == "auto" else bool(mixed_precision)
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    jit = bool(gpus) if jit_compile == "auto" else bool(jit_compile)
    if jit and not gpus:
        warnings.warn("jit_compile=True on a CPU: XLA is about 10x slower here for depthwise convolutions.", stacklevel=2)
    description = (
        f"{len(gpus)} GPU(s)" if gpus else f"CPU ({os.cpu_count()} cores)"
    ) + f", {type(strategy).__name__.lstrip('_')} ({strategy.num_replicas_in_sync} replica(s)), XLA {'on' if jit else 'off'}, {'mixed_float16' if use_mixed else 'float32'}"
    return DeviceSetup(strategy, jit, use_mixed, description)
