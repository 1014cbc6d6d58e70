"""The feature cache key is made from the feature extractor itself: its config and its weights."""

from __future__ import annotations

import keras
import pytest

from tfx_transfer.training.features import model_key
from tfx_transfer.models.classifier import build_classifier, feature_extractor


def _key(**options):
    arguments = dict(backbone="tiny_test", num_classes=3, weights=None, image_size=32, dropout=0.2, seed=0)
    arguments.update(options)
    keras.utils.set_random_seed(arguments["seed"])  # as `train` does: random backbone weights come from the seed
    return model_key(feature_extractor(build_classifier(**arguments)))


def test_the_same_model_built_twice_has_one_key():
    # Keras numbers the unnamed inputs of the second build differently; that changes nothing.
    assert _key() == _key()
    assert _key(dropout=0.5, num_classes=2) == _key()  # the head is not part of the features


@pytest.mark.parametrize("change", [dict(seed=1), dict(pooling="avg_max"), dict(image_size=48), dict(grayscale=True)])
def test_anything_that_changes_the_features_changes_the_key(change):
    assert _key(**change) != _key()


def test_a_changed_weight_or_dtype_policy_changes_the_key():
    classifier = build_classifier("tiny_test", 3, None, 32, 0.2, seed=0)
    extractor = feature_extractor(classifier)
    before = model_key(extractor)
    weights = extractor.get_weights()
    weights[0] = weights[0] + 1e-3
    extractor.set_weights(weights)
    assert model_key(extractor) != before
    # A setting no hand-picked list had: mixed precision computes other features.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = _key()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed != _key()
