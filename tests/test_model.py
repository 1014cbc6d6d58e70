from __future__ import annotations

import keras
import numpy as np
import pytest

from conftest import small_image_size
from tfx_transfer.config.backbones import assign_blocks, get_backbone_spec, list_backbones
from tfx_transfer.models.classifier import (
    CLASSIFIER_POOLINGS,
    audit_frozen_weights,
    build_classifier,
    feature_extractor,
    find_backbone,
    format_trainable_summary,
    freeze_backbone,
    load_backbone,
    snapshot_frozen_weights,
    trainable_summary,
    unfreeze_fraction,
    unfreeze_from_block,
    unfreeze_top_blocks,
    weights_info,
)


def _trainable_layer_names(model):
    backbone, _ = find_backbone(model)
    trainable = {id(w) for w in backbone.trainable_weights}
    return {layer.name for layer in backbone.layers if any(id(w) in trainable for w in layer.weights)}


def _expected_trainable(model, blocks):
    backbone, spec = find_backbone(model)
    return {
        layer.name
        for block, layers in assign_blocks(backbone, spec).items()
        if block in blocks
        for layer in layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    }


@pytest.mark.parametrize("name", list_backbones())
def test_unfreeze_top_blocks_trains_exactly_those_blocks_and_no_batchnorm(name):
    model = load_backbone(name, weights=None, image_size=small_image_size(name))
    blocks = unfreeze_top_blocks(model, 2)
    assert blocks == list(get_backbone_spec(name).block_names[-2:])
    assert _trainable_layer_names(model) == _expected_trainable(model, blocks)
    backbone, _ = find_backbone(model)
    assert not any(
        layer.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    rows = trainable_summary(model)
    assert [row.block for row in rows if row.trains] == blocks
    assert sum(r.trainable_params + r.frozen_params for r in rows) == backbone.count_params()


def test_load_backbone_takes_raw_pixels_and_records_random_source():
    model = load_backbone("mobilenet_v2", weights=None, image_size=64, pooling="avg")
    assert model.input_shape == (None, 64, 64, 3)
    assert model.output_shape == (None, 1280)
    assert weights_info(model).source == "random"
    assert not weights_info(model).pretrained


def test_load_backbone_include_top_gives_imagenet_probabilities():
    model = load_backbone("mobilenet_v3_small", weights=None, include_top=True, image_size=64)
    probabilities = model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)
    assert probabilities.shape == (1, 1000)
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-4)


def test_freeze_backbone_leaves_nothing_trainable():
    model = load_backbone("resnet50", weights=None, image_size=32)
    assert freeze_backbone(model) == []
    assert find_backbone(model)[0].trainable_weights == []
    assert not any(row.trains for row in trainable_summary(model))


def test_unfreeze_from_block_and_fraction():
    model = load_backbone("mobilenet_v2", weights=None, image_size=64)
    assert unfreeze_from_block(model, "block_15") == ["block_15", "block_16", "top"]
    assert _trainable_layer_names(model) == _expected_trainable(model, ["block_15", "block_16", "top"])
    assert unfreeze_fraction(model, 0.0) == []
    assert len(unfreeze_fraction(model, 1.0)) == 18
    assert unfreeze_fraction(model, 0.1) == ["block_16", "top"]  # 1.8 blocks round up to 2


def test_unknown_block_lists_valid_blocks():
    model = load_backbone("vgg16", weights=None, image_size=32)
    with pytest.raises(ValueError, match=r"Unknown block 'block9' for backbone vgg16\. Valid blocks, from stem to top: block1, block2, block3, block4, block5"):
        unfreeze_from_block(model, "block9")


@pytest.mark.parametrize("num_blocks", [6, -1, 1.5, True])
def test_unfreeze_top_blocks_rejects_bad_counts(num_blocks):
    model = load_backbone("vgg16", weights=None, image_size=32)
    with pytest.raises(ValueError, match=r"num_blocks must be an int between 0 and 5, the number of blocks of vgg16"):
        unfreeze_top_blocks(model, num_blocks)


def test_unfreeze_fraction_rejects_out_of_range():
    model = load_backbone("vgg16", weights=None, image_size=32)
    with pytest.raises(ValueError, match=r"fraction must be a number in \[0, 1\]\. Received: fraction=1\.5"):
        unfreeze_fraction(model, 1.5)


def test_find_backbone_explains_foreign_models():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match=r"contains no registered backbone"):
        find_backbone(keras.Model(inputs, keras.layers.Dense(1)(inputs)))


@pytest.mark.parametrize(
    "image_size, match",
    [(16, r"vgg16 needs images of at least 32 px per side"), ("big", r"image_size must be an int or \(height, width\)")],
)
def test_load_backbone_rejects_bad_image_size(image_size, match):
    with pytest.raises(ValueError, match=match):
        load_backbone("vgg16", weights=None, image_size=image_size)


@pytest.mark.parametrize("pooling", CLASSIFIER_POOLINGS)
def test_classifier_pooling_reduces_the_backbone_feature_map(pooling):
    classifier = build_classifier("tiny_test", 2, weights=None, image_size=64, pooling=pooling)
    images = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    backbone, _ = find_backbone(classifier)
    first_pooling = classifier.get_layer("pool_avg" if pooling == "avg_max" else "pool")
    feature_map = keras.Model(classifier.input, first_pooling.input).predict(images, verbose=0)
    expected = {
        "avg": feature_map.mean(axis=(1, 2)),
        "max": feature_map.max(axis=(1, 2)),
        "avg_max": np.concatenate([feature_map.mean(axis=(1, 2)), feature_map.max(axis=(1, 2))], axis=-1),
    }[pooling]
    pooled = feature_extractor(classifier).predict(images, verbose=0)
    assert pooled.shape == (3, backbone.output_shape[-1] * (2 if pooling == "avg_max" else 1))
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)
    assert classifier.get_layer("head").input_shape[-1] == pooled.shape[-1]


def test_classifier_rejects_an_unknown_pooling():
    with pytest.raises(ValueError, match=r"pooling must be one of avg, max, avg_max. Received: pooling='gem'"):
        build_classifier("resnet50", 2, weights=None, image_size=32, pooling="gem")


def _classifier(model):
    inputs = keras.Input(model.input_shape[1:])
    x = keras.layers.GlobalAveragePooling2D()(model(inputs))
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    classifier = keras.Model(inputs, outputs)
    classifier.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return classifier


@pytest.mark.slow
def test_training_after_slicing_keeps_frozen_weights_and_batchnorm_bit_identical():
    keras.utils.set_random_seed(0)
    # ResNet50, not MobileNetV2: with random weights and BatchNorm in inference mode MobileNetV2's
    # activations vanish (~1e-12), so its gradients are too small to change any weight.
    model = load_backbone("resnet50", weights=None, image_size=32)
    unfreeze_top_blocks(model, 1)
    snapshot = snapshot_frozen_weights(model)
    trainable_before = [keras.ops.convert_to_numpy(w).copy() for w in find_backbone(model)[0].trainable_weights]
    images = np.random.RandomState(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    labels = np.arange(16) % 2
    _classifier(model).fit(images, labels, epochs=2, batch_size=8, verbose=0)
    report = audit_frozen_weights(model, snapshot)
    assert report.ok and report.checked > 100
    trainable_after = find_backbone(model)[0].trainable_weights
    assert any(not np.array_equal(b, keras.ops.convert_to_numpy(a)) for b, a in zip(trainable_before, trainable_after))


def test_audit_catches_a_planted_change_in_a_frozen_weight_and_a_batchnorm_statistic():
    model = load_backbone("mobilenet_v2", weights=None, image_size=32)
    unfreeze_top_blocks(model, 1)
    snapshot = snapshot_frozen_weights(model)
    backbone, _ = find_backbone(model)
    kernel = backbone.get_layer("block_3_project").kernel
    kernel.assign(kernel + 1e-7)
    moving_mean = backbone.get_layer("Conv_1_bn").moving_mean  # in the trainable block, still frozen
    moving_mean.assign(moving_mean + 1.0)
    report = audit_frozen_weights(model, snapshot)
    assert not report.ok
    assert set(report.changed) == {kernel.path, moving_mean.path}


def test_format_trainable_summary_lists_every_block_and_totals():
    model = load_backbone("vgg16", weights=None, image_size=32)
    unfreeze_top_blocks(model, 1)
    text = format_trainable_summary(model)
    lines = text.splitlines()
    assert lines[0].split() == ["block", "trains", "layers", "trainable_params", "frozen_params"]
    assert [line.split()[0] for line in lines[1:]] == ["block1", "block2", "block3", "block4", "block5", "total"]
    assert lines[5].split()[1] == "yes" and lines[4].split()[1] == "no"
