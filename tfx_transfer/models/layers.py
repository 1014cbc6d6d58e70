"""Keras layers the toolkit puts into every model it builds (serializable, so saved models load).

`ImagePreprocessing` is each family's `preprocess_input` as the model's first layer, so every
model takes raw RGB pixels in [0, 255] and records where its weights came from.
"""

from __future__ import annotations

import keras
import numpy as np  # noqa: F401  (used in the docstring example)

from tfx_transfer.config.backbones import PREPROCESSING_MODES

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="tfx_transfer")
class ImagePreprocessing(keras.layers.Layer):
    """Maps raw RGB pixels in [0, 255] to what a backbone's weights expect.

    The layer also carries `weights_source`, a one-line description of where the backbone's
    weights came from, so a saved model says what it is without any side file.

    Args:
        mode: One of `PREPROCESSING_MODES`.
        weights_source: Free text recorded with the model, e.g. `"random"`.

    Example:
        >>> layer = ImagePreprocessing("tf")
        >>> float(layer(np.full((1, 2, 2, 3), 255.0))[0, 0, 0, 0])
        1.0
    """

    def __init__(self, mode: str, weights_source: str = "random", **kwargs):
        # Preprocessing runs in float32 even under mixed precision: 255 - 123.68 in float16 loses
        # about 0.1 per pixel, and the cost of this layer is negligible.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"Unknown preprocessing mode {mode!r}. Expected one of {PREPROCESSING_MODES}. "
                f"Received: mode={mode!r}"
            )
        self.mode = mode
        self.weights_source = weights_source

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = keras.ops.convert_to_tensor(_IMAGENET_MEAN, "float32")
            std = keras.ops.convert_to_tensor(_IMAGENET_STD, "float32")
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            mean = keras.ops.convert_to_tensor(_CAFFE_MEAN_BGR, "float32")
            return keras.ops.flip(x, axis=-1) - mean
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "weights_source": self.weights_source})
        return config
