"""Backbone registry: one `BackboneSpec` per `keras.applications` family.

A spec is data: the Keras constructor, the default image size, the preprocessing its weights
expect, and the named blocks from stem to top. Blocks are declared as regular expressions over the
stable layer names Keras gives each family (`block_{id}_...`, `conv{stage}_block{n}_...`,
`mixed{n}`); a layer whose name matches no pattern (Keras numbers some layers globally, e.g.
`re_lu_7`) belongs to the next block that has a matching layer, and trailing ones to the last.
So a block ends at its last named layer, which is what "block" means in every family here.

The registry is plain data and imports neither Keras nor TensorFlow: constructors are named
(`keras.applications` attributes, or a function of this module) and resolved when a model is built,
so recipes are checked against it without loading TensorFlow. The layer that puts each family's
`preprocess_input` inside the model is `tfx_transfer.models.layers.ImagePreprocessing`.

Vocabulary: `name` is the registry key (snake case of the Keras module, e.g. `mobilenet_v2`),
`image_size` is `(height, width)`, `preprocessing` is one of `PREPROCESSING_MODES`.
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass

import numpy as np

#: Input conventions of keras.applications families (see `imagenet_utils.preprocess_input`):
#: "tf" scales to [-1, 1]; "torch" scales to [0, 1] then ImageNet mean/std; "caffe" flips RGB to
#: BGR and subtracts the ImageNet mean; "none" means the backbone rescales inside itself.
PREPROCESSING_MODES = ("tf", "torch", "caffe", "none")

@dataclass(frozen=True)
class BackboneSpec:
    """What the toolkit knows about one backbone family.

    Attributes:
        name: Registry key, also the name given to the Keras model so it can be found again
            inside a classifier (and after saving and loading).
        constructor: The `keras.applications` function's name (e.g. `"MobileNetV2"`), or
            `"tfx_transfer.config.backbones:<function>"` for a model defined here (`tiny_test`).
        image_size: Default `(height, width)`, the size the ImageNet weights were trained at.
        min_image_size: Smallest side Keras accepts with `include_top=False`.
        preprocessing: Mode of `ImagePreprocessing` for the family's own Keras weights.
        preprocess_module: `keras.applications` module whose `preprocess_input` defines the mode.
        blocks: `(block_name, layer_name_regex)` from stem to top.
        constructor_kwargs: Extra constructor arguments, e.g. `include_preprocessing=True`.
    """

    name: str
    constructor: str
    image_size: tuple[int, int]
    min_image_size: int
    preprocessing: str
    preprocess_module: str
    blocks: tuple[tuple[str, str], ...]
    constructor_kwargs: tuple[tuple[str, object], ...] = ()

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.blocks)

    def build(
        self,
        image_size: tuple[int, int] | None = None,
        include_top: bool = False,
        pooling: str | None = None,
    ):
        """Builds the bare Keras backbone with random weights (no preprocessing layer).

        Example:
            >>> spec = get_backbone_spec("vgg16")
            >>> spec.build((32, 32)).name
            'vgg16'
        """
        height, width = image_size or self.image_size
        model = self.keras_constructor()(
            include_top=include_top,
            weights=None,
            input_shape=(height, width, 3),
            pooling=pooling,
            **dict(self.constructor_kwargs),
        )
        # Some constructors use `name` as a lookup key (EfficientNetV2), so rename afterwards.
        model.name = self.name
        return model

    def keras_constructor(self):
        """The function that builds this family (imports Keras)."""
        if ":" in self.constructor:
            module, name = self.constructor.split(":")
            return getattr(importlib.import_module(module), name)
        import keras

        return getattr(keras.applications, self.constructor)

    def preprocess_input(self, images: np.ndarray) -> np.ndarray:
        """The family's own `keras.applications.<module>.preprocess_input`, on a copy."""
        import keras

        module = getattr(keras.applications, self.preprocess_module)
        # imagenet_utils.preprocess_input modifies float arrays in place.
        return np.asarray(module.preprocess_input(np.array(images, dtype="float32", copy=True)))


def _numbered(template: str, pattern: str, numbers) -> tuple[tuple[str, str], ...]:
    return tuple((template.format(n=n), pattern.format(n=n)) for n in numbers)


_SPECS = (
    BackboneSpec(
        name="mobilenet_v2",
        constructor="MobileNetV2",
        image_size=(224, 224),
        min_image_size=32,
        preprocessing="tf",
        preprocess_module="mobilenet_v2",
        blocks=(
            ("stem", r"^(Conv1|bn_Conv1|Conv1_relu|expanded_conv_.*)$"),
            *_numbered("block_{n}", r"^block_{n}_", range(1, 17)),
            ("top", r"^(Conv_1|Conv_1_bn|out_relu)$"),
        ),
    ),
    BackboneSpec(
        name="mobilenet_v3_small",
        constructor="MobileNetV3Small",
        image_size=(224, 224),
        min_image_size=32,
        preprocessing="none",
        preprocess_module="mobilenet_v3",
        blocks=(
            ("stem", r"^(conv|conv_bn|expanded_conv_[a-z].*)$"),
            *_numbered("expanded_conv_{n}", r"^expanded_conv_{n}_", range(1, 11)),
            ("top", r"^conv_1(_bn)?$"),
        ),
        constructor_kwargs=(("include_preprocessing", True),),
    ),
    BackboneSpec(
        name="mobilenet_v3_large",
        constructor="MobileNetV3Large",
        image_size=(224, 224),
        min_image_size=32,
        preprocessing="none",
        preprocess_module="mobilenet_v3",
        blocks=(
            ("stem", r"^(conv|conv_bn|expanded_conv_[a-z].*)$"),
            *_numbered("expanded_conv_{n}", r"^expanded_conv_{n}_", range(1, 15)),
            ("top", r"^conv_1(_bn)?$"),
        ),
        constructor_kwargs=(("include_preprocessing", True),),
    ),
    BackboneSpec(
        name="efficientnet_b0",
        constructor="EfficientNetB0",
        image_size=(224, 224),
        min_image_size=32,
        preprocessing="none",
        preprocess_module="efficientnet",
        blocks=(
            ("stem", r"^stem_"),
            *_numbered("block{n}", r"^block{n}[a-z]_", range(1, 8)),
            ("top", r"^top_"),
        ),
    ),
    BackboneSpec(
        name="efficientnet_v2_b0",
        constructor="EfficientNetV2B0",
        image_size=(224, 224),
        min_image_size=32,
        preprocessing="none",
        preprocess_module="efficientnet_v2",
        blocks=(
            ("stem", r"^stem_"),
            *_numbered("block{n}", r"^block{n}[a-z]_", range(1, 7)),
            ("top", r"^top_"),
        ),
        constructor_kwargs=(("include_preprocessing", True),),
    ),
    BackboneSpec(
        name="resnet50",
        constructor="ResNet50",
        image_size=(224, 224),
        min_image_size=32,
        preprocessing="caffe",
        preprocess_module="resnet50",
        blocks=(
            ("stem", r"^(conv1|pool1)_"),
            *_numbered("conv{n}", r"^conv{n}_block", range(2, 6)),
        ),
    ),
    BackboneSpec(
        name="resnet50_v2",
        constructor="ResNet50V2",
        image_size=(224, 224),
        min_image_size=32,
        preprocessing="tf",
        preprocess_module="resnet_v2",
        blocks=(
            ("stem", r"^(conv1|pool1)_"),
            *_numbered("conv{n}", r"^conv{n}_block", range(2, 5)),
            # The final BatchNorm has nothing that trains on its own, so it closes conv5.
            ("conv5", r"^(conv5_block|post_)"),
        ),
    ),
    BackboneSpec(
        name="densenet121",
        constructor="DenseNet121",
        image_size=(224, 224),
        min_image_size=32,
        preprocessing="torch",
        preprocess_module="densenet",
        blocks=(
            ("stem", r"^(conv1_|pool1$)"),
            # Each dense block ends with the transition (pool{n}_*) that halves its output.
            *_numbered("conv{n}", r"^(conv{n}_|pool{n}_)", range(2, 5)),
            # The final BatchNorm has nothing that trains on its own, so it closes conv5.
            ("conv5", r"^(conv5_|bn$|relu$)"),
        ),
    ),
    BackboneSpec(
        name="inception_v3",
        constructor="InceptionV3",
        image_size=(299, 299),
        min_image_size=75,
        preprocessing="tf",
        preprocess_module="inception_v3",
        # Inception names only its concatenations; every other layer is numbered globally, so a
        # block is "everything up to mixed{n}", and mixed0 includes the stem convolutions.
        blocks=(
            *_numbered("mixed{n}", r"^mixed{n}$", range(0, 9)),
            ("mixed9", r"^mixed9(_0)?$"),
            ("mixed10", r"^(mixed10|mixed9_1)$"),
        ),
    ),
    BackboneSpec(
        name="xception",
        constructor="Xception",
        image_size=(299, 299),
        min_image_size=71,
        preprocessing="tf",
        preprocess_module="xception",
        blocks=_numbered("block{n}", r"^block{n}_", range(1, 15)),
    ),
    BackboneSpec(
        name="vgg16",
        constructor="VGG16",
        image_size=(224, 224),
        min_image_size=32,
        preprocessing="caffe",
        preprocess_module="vgg16",
        blocks=_numbered("block{n}", r"^block{n}_", range(1, 6)),
    ),
    BackboneSpec(
        name="convnext_tiny",
        constructor="ConvNeXtTiny",
        image_size=(224, 224),
        min_image_size=32,
        preprocessing="none",
        preprocess_module="convnext",
        blocks=(
            ("stem", r"^convnext_tiny_(prestem|stem)"),
            ("stage_0", r"^convnext_tiny_stage_0_"),
            # The downsampling layer in front of a stage belongs to that stage.
            ("stage_1", r"^convnext_tiny_(stage_1_|downsampling_block_0)"),
            ("stage_2", r"^convnext_tiny_(stage_2_|downsampling_block_1)"),
            ("stage_3", r"^convnext_tiny_(stage_3_|downsampling_block_2)"),
        ),
        constructor_kwargs=(("include_preprocessing", True),),
    ),
    BackboneSpec(
        # Not a keras.applications family: a tiny model with the parts that matter to slicing
        # (BatchNorm, residual paths, named blocks), so engine tests train in seconds (KerasHub and
        # timm register tiny test models the same way).
        name="tiny_test",
        constructor="tfx_transfer.config.backbones:tiny_test_backbone",
        image_size=(32, 32),
        min_image_size=32,
        preprocessing="tf",
        preprocess_module="mobilenet_v2",
        blocks=(
            ("stem", r"^stem_"),
            *_numbered("block{n}", r"^block{n}_", range(1, 4)),
            ("top", r"^top_"),
        ),
    ),
)

BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}


def list_backbones() -> list[str]:
    """Names of every registered backbone, sorted.

    Example:
        >>> "mobilenet_v2" in list_backbones()
        True
    """
    return sorted(BACKBONES)


def get_backbone_spec(name: str) -> BackboneSpec:
    """Looks up a backbone by registry name.

    Raises:
        ValueError: if the name is unknown; the message lists the names and the closest one.

    Example:
        >>> get_backbone_spec("resnet50").image_size
        (224, 224)
    """
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        pass
    closest = difflib.get_close_matches(str(name).lower().replace("-", "_"), BACKBONES, n=1)
    hint = f" Did you mean {closest[0]!r}?" if closest else ""
    raise ValueError(
        f"Unknown backbone {name!r}. Available: {', '.join(list_backbones())}.{hint}"
    )


def assign_blocks(model, spec: BackboneSpec) -> dict[str, list]:
    """Splits the layers of a bare backbone into the spec's named blocks, in order.

    Input layers are left out. A layer whose name matches no block pattern joins the next block
    that has a matching layer; layers after the last match join the last block.

    Raises:
        ValueError: if a layer matches two blocks, blocks come out of order, or a block has no
            layer: the spec no longer fits the Keras version in use.

    Example:
        >>> spec = get_backbone_spec("vgg16")
        >>> list(assign_blocks(spec.build((32, 32)), spec))[:2]
        ['block1', 'block2']
    """
    patterns = [(name, re.compile(pattern)) for name, pattern in spec.blocks]
    index_of = {name: i for i, (name, _) in enumerate(spec.blocks)}
    import keras

    blocks: dict[str, list] = {name: [] for name, _ in spec.blocks}
    pending: list = []
    current = -1
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        matches = [name for name, regex in patterns if regex.search(layer.name)]
        if len(matches) > 1:
            raise ValueError(
                f"Layer {layer.name!r} of {spec.name} matches several blocks: {matches}. "
                "Block patterns must be disjoint; fix the spec in tfx_transfer/backbones.py."
            )
        if not matches:
            pending.append(layer)
            continue
        index = index_of[matches[0]]
        if index < current:
            raise ValueError(
                f"Layer {layer.name!r} of {spec.name} belongs to block {matches[0]!r}, which comes "
                f"before block {spec.blocks[current][0]!r} already seen. Blocks must be ordered "
                "from stem to top; fix the spec in tfx_transfer/backbones.py."
            )
        current = index
        blocks[matches[0]].extend(pending)
        blocks[matches[0]].append(layer)
        pending = []
    if current >= 0:
        blocks[spec.blocks[current][0]].extend(pending)
    empty = [name for name, layers in blocks.items() if not layers]
    if empty:
        raise ValueError(
            f"Blocks {empty} of {spec.name} match no layer of model {model.name!r}. The spec does "
            f"not fit this Keras version ({keras.__version__}); fix tfx_transfer/backbones.py."
        )
    return blocks


def tiny_test_backbone(include_top: bool = False, weights=None, input_shape=(32, 32, 3), pooling=None,
                       classes: int = 1000, **unused):
    """The `tiny_test` backbone: a stem, three residual blocks with BatchNorm, a top; ~12k parameters.

    It takes the arguments of a `keras.applications` constructor; it has no pretrained weights.

    Example:
        >>> get_backbone_spec("tiny_test").build().count_params() < 20_000
        True
    """
    import keras
    from keras import layers

    if weights is not None:
        raise ValueError(f"The tiny_test backbone has no pretrained weights. Received: weights={weights!r}")
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for number, (filters, stride) in enumerate(((16, 1), (24, 2), (32, 2)), start=1):
        name = f"block{number}"
        shortcut = x
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_shortcut_conv")(x)
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
        y = layers.BatchNormalization(name=f"{name}_bn1")(y)
        y = layers.ReLU(name=f"{name}_relu1")(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
        y = layers.BatchNormalization(name=f"{name}_bn2")(y)
        x = layers.Add(name=f"{name}_add")([shortcut, y])
        x = layers.ReLU(name=f"{name}_out")(x)
    x = layers.Conv2D(48, 1, use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(name="top_bn")(x)
    x = layers.ReLU(name="top_relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="top_pool")(x)
        x = layers.Dense(classes, activation="softmax", name="top_predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="top_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="top_pool")(x)
    return keras.Model(inputs, x, name="tiny_test")
