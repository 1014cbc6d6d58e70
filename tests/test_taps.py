"""Outputs at named blocks (models/taps.py), which probes, Grad-CAM and the anomaly strategy share."""

from __future__ import annotations

import numpy as np
import pytest

from tfx_transfer.models.classifier import build_classifier, find_backbone
from tfx_transfer.models.taps import backbone_taps, block_outputs, check_blocks, layers_before_backbone, tap_model


@pytest.fixture(scope="module")
def classifier():
    return build_classifier("tiny_test", 2, None, (32, 32), grayscale=True, seed=0)


def test_tap_model_gives_each_blocks_activations_through_the_classifiers_own_preprocessing(classifier):
    backbone, spec = find_backbone(classifier)
    blocks = list(block_outputs(backbone, spec))
    taps = tap_model(classifier, blocks)
    assert [tuple(output.shape[1:3]) for output in taps.outputs] == \
        [tuple(block_outputs(backbone, spec)[name].output.shape[1:3]) for name in blocks]
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    x = images.astype("float32")
    for layer in layers_before_backbone(classifier):  # Grayscale, then ImagePreprocessing
        x = layer(x)
    expected = backbone_taps(classifier, blocks)(x, training=False)
    for got, want in zip(taps(images, training=False), expected):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert [type(layer).__name__ for layer in layers_before_backbone(classifier)] == ["Grayscale", "ImagePreprocessing"]


def test_backbone_taps_can_end_with_the_backbones_own_output(classifier):
    backbone, _ = find_backbone(classifier)
    taps = backbone_taps(classifier, ["block2"], with_output=True)
    assert len(taps.outputs) == 2 and tuple(taps.outputs[1].shape) == tuple(backbone.output.shape)


def test_unknown_blocks_are_named_with_the_ones_there_are(classifier):
    assert check_blocks(classifier, ["block3", "block1"]) == ["block1", "block3"]  # stem to top
    with pytest.raises(ValueError, match=r"anomaly.feature_blocks names 'block9', which tiny_test does not have .*"
                                         r"Its blocks, from stem to top: stem, block1, block2, block3"):
        check_blocks(classifier, ["block9"], "anomaly.feature_blocks")
