from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from conftest import small_image_size
from tfx_transfer.config.backbones import (
    PREPROCESSING_MODES,
    assign_blocks,
    get_backbone_spec,
    list_backbones,
)
from tfx_transfer.models.layers import ImagePreprocessing

REQUIRED = {
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
    "efficientnet_v2_b0", "resnet50", "resnet50_v2", "densenet121", "inception_v3", "xception",
    "vgg16", "convnext_tiny",
}


def test_registry_has_every_required_family():
    assert REQUIRED <= set(list_backbones())


@pytest.mark.parametrize("name", list_backbones())
def test_backbone_builds_with_random_weights_at_small_size(name):
    spec = get_backbone_spec(name)
    size = small_image_size(name)
    model = spec.build((size, size))
    assert model.name == name
    features = model(np.zeros((1, size, size, 3), "float32"))
    assert features.shape[0] == 1 and len(features.shape) == 4


@pytest.mark.parametrize("name", list_backbones())
def test_blocks_cover_every_layer_once_in_order(name):
    spec = get_backbone_spec(name)
    model = spec.build((small_image_size(name),) * 2)
    blocks = assign_blocks(model, spec)
    assert list(blocks) == list(spec.block_names)
    position = {id(layer): i for i, layer in enumerate(model.layers)}
    assigned = [id(layer) for layers in blocks.values() for layer in layers]
    non_input = [id(l) for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    assert sorted(assigned) == sorted(non_input), "every layer in exactly one block"
    last = -1
    for block, layers in blocks.items():
        indices = [position[id(layer)] for layer in layers]
        assert min(indices) > last, f"block {block} starts before the previous block ends"
        last = max(indices)
        trainable = [l for l in layers if l.weights and not isinstance(l, keras.layers.BatchNormalization)]
        assert trainable, f"block {block} has no weights that can train (BatchNorm never does)"


@pytest.mark.parametrize("name", list_backbones())
def test_in_model_preprocessing_equals_family_preprocess_input(name):
    spec = get_backbone_spec(name)
    images = np.random.RandomState(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(ImagePreprocessing(spec.preprocessing)(images))
    np.testing.assert_allclose(ours, spec.preprocess_input(images), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mode", PREPROCESSING_MODES)
def test_image_preprocessing_survives_save_and_load(mode, tmp_path):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, ImagePreprocessing(mode, "test source")(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    layer = loaded.layers[-1]
    assert (layer.mode, layer.weights_source) == (mode, "test source")
    images = np.full((1, 4, 4, 3), 200.0, "float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0))


def test_image_preprocessing_rejects_unknown_mode():
    with pytest.raises(ValueError, match=r"Unknown preprocessing mode 'inception'\. Expected one of"):
        ImagePreprocessing("inception")


def test_get_backbone_spec_suggests_the_closest_name():
    with pytest.raises(ValueError, match=r"Unknown backbone 'efficientnet_b9'\. Available: .*Did you mean 'efficientnet_b0'\?"):
        get_backbone_spec("efficientnet_b9")
    with pytest.raises(ValueError, match=r"Did you mean 'mobilenet_v2'\?"):
        get_backbone_spec("MobileNet-V2")


def test_assign_blocks_rejects_a_spec_that_no_longer_fits():
    spec = get_backbone_spec("vgg16")
    model = spec.build((32, 32))
    missing = dataclasses.replace(spec, blocks=spec.blocks + (("block6", r"^block6_"),))
    with pytest.raises(ValueError, match=r"Blocks \['block6'\] of vgg16 match no layer"):
        assign_blocks(model, missing)
    overlapping = dataclasses.replace(spec, blocks=(("all", r"^block"),) + spec.blocks[1:])
    with pytest.raises(ValueError, match=r"matches several blocks"):
        assign_blocks(model, overlapping)
    reversed_spec = dataclasses.replace(spec, blocks=tuple(reversed(spec.blocks)))
    with pytest.raises(ValueError, match=r"Blocks must be ordered from stem to top"):
        assign_blocks(model, reversed_spec)
