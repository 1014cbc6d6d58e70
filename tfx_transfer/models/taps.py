"""Outputs at named blocks: the model surgery that layer-wise probes, Grad-CAM and the anomaly
strategy share.

A classifier here is `raw pixels -> [Grayscale] -> ImagePreprocessing -> backbone (a nested
keras.applications model) -> pooling -> head`. Keras cannot give a layer inside the nested backbone
as an output of the classifier ("graph disconnected"), so the taps are a model of the backbone with
the wanted blocks' activations as outputs (`backbone_taps`), called after the layers before the
backbone (`tap_model`). A block's output is its last layer with a spatial (4-D) output.

Example:
    >>> taps = tap_model(classifier, ["block_5", "block_12"])  # doctest: +SKIP
    >>> [tuple(o.shape[1:3]) for o in taps.outputs]  # doctest: +SKIP
    [(28, 28), (14, 14)]
"""

from __future__ import annotations

import keras

from tfx_transfer.config.backbones import assign_blocks
from tfx_transfer.models.classifier import find_backbone


def block_outputs(backbone: keras.Model, spec) -> dict[str, keras.layers.Layer]:
    """Each named block's last layer with a spatial (4-D) output, from stem to top."""
    outputs = {}
    for name, layers in assign_blocks(backbone, spec).items():
        spatial = [layer for layer in layers if len(layer.output.shape) == 4]
        if spatial:
            outputs[name] = spatial[-1]
    return outputs


def layers_before_backbone(classifier: keras.Model) -> list:
    """The layers between a classifier's input and its backbone ([Grayscale,] ImagePreprocessing), in order."""
    layers = list(classifier.layers)
    return [layer for layer in layers[:layers.index(find_backbone(classifier)[0])]
            if not isinstance(layer, keras.layers.InputLayer)]


def check_blocks(classifier: keras.Model, blocks, what: str = "blocks") -> list[str]:
    """`blocks` in the backbone's order from stem to top, or a ValueError naming those it lacks."""
    backbone, spec = find_backbone(classifier)
    outputs = block_outputs(backbone, spec)
    unknown = [name for name in blocks if name not in outputs]
    if unknown:
        raise ValueError(f"{what} names {', '.join(map(repr, unknown))}, which {spec.name} does not have (with a "
                         f"spatial output). Its blocks, from stem to top: {', '.join(outputs)}.")
    return sorted(blocks, key=list(outputs).index)


def backbone_taps(classifier: keras.Model, blocks, with_output: bool = False, name: str = "taps") -> keras.Model:
    """A model of the classifier's backbone: its (preprocessed) input -> each block's activations,
    and the backbone's own output last when `with_output` (Grad-CAM differentiates through it)."""
    backbone, spec = find_backbone(classifier)
    outputs = block_outputs(backbone, spec)
    tensors = [outputs[block].output for block in blocks] + ([backbone.output] if with_output else [])
    return keras.Model(backbone.inputs, tensors, name=name)


def tap_model(classifier: keras.Model, blocks, name: str = "block_taps") -> keras.Model:
    """Raw pixels -> the activations of `blocks` (a list, one per block), through the classifier's
    own preprocessing and its backbone in inference mode."""
    taps = backbone_taps(classifier, blocks, name=f"{name}_backbone")
    inputs = keras.Input(classifier.input_shape[1:], dtype=classifier.inputs[0].dtype, name="image")
    x = inputs
    for layer in layers_before_backbone(classifier):
        x = layer(x)
    maps = taps(x, training=False)
    return keras.Model(inputs, list(maps) if isinstance(maps, (list, tuple)) else [maps], name=name)
