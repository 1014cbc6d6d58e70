"""Building models on raw pixels, and choosing which named blocks of the backbone train.

Every model built here is `raw RGB [0, 255] -> ImagePreprocessing -> backbone(training=False) ->
...`, with the bare `keras.applications` backbone nested under its registry name, so the blocks can
be found again in any model the toolkit built, also after saving and loading.

Slicing rules, as in the Keras transfer-learning guide: BatchNormalization layers never train
(their statistics came from ImageNet and a small batch would wreck them), and the backbone is
always called with `training=False`. After any change of `trainable`, compile the model again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
import numpy as np

from tfx_transfer.config.backbones import (
    BACKBONES,
    BackboneSpec,
    assign_blocks,
    get_backbone_spec,
)
from tfx_transfer.models.layers import ImagePreprocessing
from tfx_transfer.config.settings import CLASSIFIER_POOLINGS
from tfx_transfer.models.weights import WeightsInfo, load_weights_file, resolve_weights

_POOLING = (None, "avg", "max")
# The classifier's global pooling (`CLASSIFIER_POOLINGS`). `avg_max` concatenates both (fastai's
# concat pooling): the average says how much of the image looks like a class, the maximum whether
# any place does, which is what a small local defect (a crack in one corner) leaves in the map.


def load_backbone(
    name: str,
    weights: str | None = "imagenet",
    include_top: bool = False,
    image_size: int | tuple[int, int] | None = None,
    pooling: str | None = None,
) -> keras.Model:
    """Builds a `keras.applications` backbone that takes raw RGB pixels in [0, 255].

    Mirrors `keras.applications`: with `include_top=True` the output is the 1000 ImageNet class
    probabilities, otherwise the last feature map (or pooled features with `pooling`). The
    family's preprocessing is inside the model, and `weights_info(model)` tells where the weights
    came from.

    Args:
        name: Registry name, see `list_backbones()`.
        weights: `"imagenet"`, `None` for random initialisation, or a path to a Keras weights file.
        include_top: Whether to include the ImageNet classifier.
        image_size: Side or `(height, width)`; defaults to the family's ImageNet size.
        pooling: `None`, `"avg"` or `"max"` (only without the top).

    Returns:
        A `keras.Model` named `<name>_on_raw_pixels`.

    Raises:
        ValueError: for an unknown name (the closest is suggested), a bad size or pooling, or a
            weights file of another architecture.
        FileNotFoundError: if ImageNet weights are not available offline (the message says which
            package to install).

    Example:
        >>> model = load_backbone("mobilenet_v2", weights=None, image_size=64, pooling="avg")
        >>> model.output_shape
        (None, 1280)
    """
    spec = get_backbone_spec(name)
    size = _check_image_size(spec, image_size)
    if pooling not in _POOLING:
        raise ValueError(f"pooling must be one of {_POOLING}. Received: pooling={pooling!r}")
    if include_top and pooling is not None:
        raise ValueError("pooling applies only with include_top=False. Received: pooling=" + repr(pooling))
    inputs, outputs = _backbone_on_raw_pixels(spec, weights, size, include_top, pooling, training=False)
    return keras.Model(inputs, outputs, name=f"{spec.name}_on_raw_pixels")


@keras.saving.register_keras_serializable(package="tfx_transfer")
class Grayscale(keras.layers.Layer):
    """RGB -> luma (ITU-R BT.601), repeated on 3 channels so ImageNet backbones take it.

    For domains that are grey by nature (radiographs): colour channels there only carry scanner
    and compression noise, and a colour image sent to the model at inference is treated the same.
    """

    def call(self, inputs):
        inputs = keras.ops.cast(inputs, self.compute_dtype)
        luma = inputs[..., :1] * 0.299 + inputs[..., 1:2] * 0.587 + inputs[..., 2:3] * 0.114
        return keras.ops.concatenate([luma, luma, luma], axis=-1)


def _backbone_on_raw_pixels(spec, weights, size, include_top, pooling, training, grayscale=False):
    """Input -> [Grayscale] -> ImagePreprocessing -> backbone; returns the input and output tensors."""
    resolved = resolve_weights(spec, weights, include_top)
    backbone = spec.build(size, include_top=include_top, pooling=pooling)
    if resolved.adapt is not None:
        backbone = resolved.adapt(backbone)
    if resolved.convert is not None:
        resolved.convert(backbone)
    elif resolved.info.path is not None:
        load_weights_file(backbone, resolved.info.path, spec)
    inputs = keras.Input((*size, 3), name="image")
    x = Grayscale(name="grayscale")(inputs) if grayscale else inputs
    x = ImagePreprocessing(resolved.info.preprocessing, resolved.info.source, name="preprocessing")(x)
    return inputs, backbone(x, training=training)


TASKS = ("multiclass", "multilabel")


def build_head(num_features: int, num_classes: int, dropout: float = 0.2, task: str = "multiclass", seed: int | None = None) -> keras.Model:
    """The new classifier head, `pooled features -> dropout -> dense`, as its own small model so
    it can be trained on cached features and then sit unchanged inside the full classifier.

    The output layer is float32 even under mixed precision, so probabilities stay exact.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}. Received: task={task!r}")
    inputs = keras.Input((num_features,), name="features")
    x = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(inputs)
    activation = "softmax" if task == "multiclass" else "sigmoid"
    outputs = keras.layers.Dense(num_classes, activation=activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="head")


def build_classifier(
    backbone: str,
    num_classes: int,
    weights: str | None = "imagenet",
    image_size: int | tuple[int, int] | None = None,
    dropout: float = 0.2,
    task: str = "multiclass",
    train_batchnorm: bool = False,
    seed: int | None = None,
    grayscale: bool = False,
    pooling: str = "avg",
) -> keras.Model:
    """Builds `raw pixels -> preprocessing -> backbone -> global pooling -> head`.

    The backbone comes frozen (`freeze_backbone`); choose what trains with the slicing functions.

    Args:
        backbone: Registry name.
        num_classes: Outputs of the head.
        weights: As in `load_backbone`.
        image_size: Side or `(height, width)`; defaults to the family's size.
        dropout: Dropout rate before the last layer.
        task: `"multiclass"` (softmax; binary too) or `"multilabel"` (sigmoid per class).
        train_batchnorm: Call the backbone in training mode so BatchNorm learns its statistics;
            only for training from scratch, where there are no ImageNet statistics to keep.
        seed: Seed of the dropout layer.
        grayscale: Convert images to grey inside the model (`Grayscale` layer) before preprocessing.
        pooling: One of `CLASSIFIER_POOLINGS`: `"avg"` (as in the Keras transfer-learning guide), `"max"`, or
            `"avg_max"` (both concatenated: twice the features).

    Example:
        >>> model = build_classifier("mobilenet_v2", 3, weights=None, image_size=64)
        >>> model.output_shape
        (None, 3)
    """
    spec = get_backbone_spec(backbone)
    size = _check_image_size(spec, image_size)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int. Received: num_classes={num_classes!r}")
    if pooling not in CLASSIFIER_POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(CLASSIFIER_POOLINGS)}. Received: pooling={pooling!r}")
    inputs, features = _backbone_on_raw_pixels(
        spec, weights, size, include_top=False, pooling=None, training=None if train_batchnorm else False,
        grayscale=grayscale,
    )
    if pooling == "avg_max":
        pooled = keras.layers.Concatenate(name="pool")([
            keras.layers.GlobalAveragePooling2D(name="pool_avg")(features),
            keras.layers.GlobalMaxPooling2D(name="pool_max")(features),
        ])
    elif pooling == "max":
        pooled = keras.layers.GlobalMaxPooling2D(name="pool")(features)
    else:
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    head = build_head(int(pooled.shape[-1]), num_classes, dropout, task, seed)
    model = keras.Model(inputs, head(pooled), name=f"{spec.name}_classifier")
    if train_batchnorm:
        # Keras' momentum 0.99 leaves the moving statistics mostly at their initial values after
        # a few hundred steps, so a network trained from scratch on a small data set predicts a
        # constant at inference. 0.9 tracks the batch statistics within a few dozen steps.
        for layer in find_backbone(model)[0].layers:
            if _is_batchnorm(layer):
                layer.momentum = min(layer.momentum, 0.9)
    freeze_backbone(model)
    return model


def feature_extractor(classifier: keras.Model) -> keras.Model:
    """The part of a classifier before its head: raw pixels -> pooled features (shared layers)."""
    return keras.Model(classifier.input, classifier.get_layer("pool").output, name="feature_extractor")


def pooled_feature_model(model: keras.Model) -> keras.Model | None:
    """Raw pixels -> the pooled features a trained model (a classifier, or an ensemble: its first member)
    decides on; None for a model without them (an anomaly run's patch extractor)."""
    names = {layer.name for layer in model.layers}
    if "pool" in names:
        return feature_extractor(model)
    members = [layer for layer in model.layers if isinstance(layer, keras.Model) and
               "pool" in {inner.name for inner in layer.layers}]
    return feature_extractor(members[0]) if members else None


def _check_image_size(spec: BackboneSpec, image_size) -> tuple[int, int]:
    if image_size is None:
        return spec.image_size
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(side, int) for side in size):
        raise ValueError(
            f"image_size must be an int or (height, width). Received: image_size={image_size!r}"
        )
    if min(size) < spec.min_image_size:
        raise ValueError(
            f"{spec.name} needs images of at least {spec.min_image_size} px per side. "
            f"Received: image_size={image_size!r}. Use a larger image_size."
        )
    return size


def weights_info(model: keras.Model) -> WeightsInfo:
    """Where the weights of a model built by the toolkit came from, read from the model itself.

    Example:
        >>> weights_info(load_backbone("vgg16", weights=None, image_size=32)).source
        'random'
    """
    for layer in model.layers:
        if isinstance(layer, ImagePreprocessing):
            return WeightsInfo(layer.weights_source, layer.weights_source != "random", layer.mode)
    raise ValueError(f"Model {model.name!r} has no ImagePreprocessing layer; was it built by tfx_transfer?")


def find_backbone(model: keras.Model) -> tuple[keras.Model, BackboneSpec]:
    """Returns the nested bare backbone of a model built by the toolkit, and its spec."""
    if model.name in BACKBONES:
        return model, BACKBONES[model.name]
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name in BACKBONES:
            return layer, BACKBONES[layer.name]
    raise ValueError(
        f"Model {model.name!r} contains no registered backbone (a nested model named one of "
        f"{', '.join(sorted(BACKBONES))}). Build it with tfx_transfer.load_backbone."
    )


def _is_batchnorm(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def _set_trainable_blocks(model: keras.Model, blocks_to_train: list[str]) -> list[str]:
    backbone, spec = find_backbone(model)
    # Container first: setting `trainable` on a model also sets it on every layer inside.
    backbone.trainable = True
    chosen = set(blocks_to_train)
    for block, layers in assign_blocks(backbone, spec).items():
        for layer in layers:
            layer.trainable = block in chosen and not _is_batchnorm(layer)
    return [block for block in spec.block_names if block in chosen]


def freeze_backbone(model: keras.Model) -> list[str]:
    """Freezes every layer of the backbone (feature extraction). Returns `[]`, the blocks that train.

    Example:
        >>> model = load_backbone("vgg16", weights=None, image_size=32)
        >>> freeze_backbone(model)
        []
    """
    return _set_trainable_blocks(model, [])


def unfreeze_top_blocks(model: keras.Model, num_blocks: int) -> list[str]:
    """Lets the top `num_blocks` named blocks train; everything below and every BatchNorm stays frozen.

    Returns:
        The names of the blocks that train, from bottom to top.

    Raises:
        ValueError: if `num_blocks` is negative or larger than the number of blocks.

    Example:
        >>> model = load_backbone("vgg16", weights=None, image_size=32)
        >>> unfreeze_top_blocks(model, 2)
        ['block4', 'block5']
    """
    _, spec = find_backbone(model)
    total = len(spec.blocks)
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or not 0 <= num_blocks <= total:
        raise ValueError(
            f"num_blocks must be an int between 0 and {total}, the number of blocks of "
            f"{spec.name} ({', '.join(spec.block_names)}). Received: num_blocks={num_blocks!r}"
        )
    return _set_trainable_blocks(model, list(spec.block_names[total - num_blocks :]))


def unfreeze_from_block(model: keras.Model, block_name: str) -> list[str]:
    """Lets `block_name` and every block above it train.

    Raises:
        ValueError: if the block is unknown; the message lists the valid names.

    Example:
        >>> model = load_backbone("vgg16", weights=None, image_size=32)
        >>> unfreeze_from_block(model, "block4")
        ['block4', 'block5']
    """
    _, spec = find_backbone(model)
    if block_name not in spec.block_names:
        raise ValueError(
            f"Unknown block {block_name!r} for backbone {spec.name}. Valid blocks, from stem to "
            f"top: {', '.join(spec.block_names)}"
        )
    return _set_trainable_blocks(model, list(spec.block_names[spec.block_names.index(block_name) :]))


def unfreeze_fraction(model: keras.Model, fraction: float) -> list[str]:
    """Lets the top `fraction` of blocks train, rounded up (0.0 freezes all, 1.0 unfreezes all).

    Example:
        >>> model = load_backbone("vgg16", weights=None, image_size=32)
        >>> unfreeze_fraction(model, 0.5)
        ['block3', 'block4', 'block5']
    """
    _, spec = find_backbone(model)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be a number in [0, 1]. Received: fraction={fraction!r}")
    return unfreeze_top_blocks(model, math.ceil(round(fraction * len(spec.blocks), 9)))


@dataclass(frozen=True)
class BlockSummary:
    """One row of `trainable_summary`."""

    block: str
    trains: bool
    num_layers: int
    trainable_params: int
    frozen_params: int


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def trainable_summary(model: keras.Model) -> list[BlockSummary]:
    """Per block of the backbone: whether it trains, its layers, trainable and frozen parameters.

    Example:
        >>> model = load_backbone("vgg16", weights=None, image_size=32)
        >>> _ = unfreeze_top_blocks(model, 1)
        >>> [row.block for row in trainable_summary(model) if row.trains]
        ['block5']
    """
    backbone, spec = find_backbone(model)
    rows = []
    for block, layers in assign_blocks(backbone, spec).items():
        trainable = sum(_count(layer.trainable_weights) for layer in layers if backbone.trainable)
        frozen = sum(_count(layer.weights) for layer in layers) - trainable
        rows.append(BlockSummary(block, trainable > 0, len(layers), trainable, frozen))
    return rows


def format_trainable_summary(model: keras.Model) -> str:
    """`trainable_summary` as a text table, with totals (BatchNorm counts as frozen)."""
    rows = trainable_summary(model)
    width = max(len("block"), *(len(row.block) for row in rows))
    lines = [f"{'block':<{width}}  trains  layers  trainable_params  frozen_params"]
    for row in rows:
        lines.append(
            f"{row.block:<{width}}  {'yes' if row.trains else 'no':<6}  {row.num_layers:>6}  "
            f"{row.trainable_params:>16,}  {row.frozen_params:>13,}"
        )
    lines.append(
        f"{'total':<{width}}  {'':<6}  {sum(r.num_layers for r in rows):>6}  "
        f"{sum(r.trainable_params for r in rows):>16,}  {sum(r.frozen_params for r in rows):>13,}"
    )
    return "\n".join(lines)


@dataclass(frozen=True)
class WeightSnapshot:
    """Copies of every frozen backbone weight (BatchNorm statistics included), by variable path."""

    values: dict[str, np.ndarray] = field(repr=False)


def snapshot_frozen_weights(model: keras.Model) -> WeightSnapshot:
    """Records every backbone weight that must not change: non-trainable ones (which include all
    BatchNorm gammas, betas and moving statistics) and those of frozen layers.

    Example:
        >>> model = load_backbone("vgg16", weights=None, image_size=32)
        >>> _ = unfreeze_top_blocks(model, 1)
        >>> snapshot = snapshot_frozen_weights(model)
        >>> audit_frozen_weights(model, snapshot).ok
        True
    """
    backbone, _ = find_backbone(model)
    trainable = {id(w) for w in backbone.trainable_weights}
    values = {}
    for layer in backbone.layers:
        for weight in layer.weights:
            if id(weight) not in trainable or _is_batchnorm(layer):
                values[weight.path] = np.array(keras.ops.convert_to_numpy(weight), copy=True)
    return WeightSnapshot(values)


@dataclass(frozen=True)
class AuditReport:
    """Result of `audit_frozen_weights`: `changed` lists the weights that differ."""

    checked: int
    changed: list[str]

    @property
    def ok(self) -> bool:
        return not self.changed


def audit_frozen_weights(model: keras.Model, snapshot: WeightSnapshot) -> AuditReport:
    """Checks that every weight in the snapshot is still bit-identical (after training, say).

    Raises:
        ValueError: if a snapshot weight no longer exists in the model.
    """
    backbone, _ = find_backbone(model)
    current = {w.path: w for w in backbone.weights}
    changed = []
    for path, before in snapshot.values.items():
        if path not in current:
            raise ValueError(f"Weight {path!r} of the snapshot is not in model {model.name!r}.")
        after = keras.ops.convert_to_numpy(current[path])
        if after.shape != before.shape or after.tobytes() != before.tobytes():
            changed.append(path)
    return AuditReport(checked=len(snapshot.values), changed=changed)
