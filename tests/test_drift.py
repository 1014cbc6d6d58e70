"""Drift: a batch's scores and features against the run's validation split."""

from __future__ import annotations

import numpy as np
import pytest

from tfx_transfer.evaluation.drift import MIN_IMAGES, check_drift


def _world(seed: int):
    rng = np.random.default_rng(seed)
    centre = np.abs(rng.normal(size=32)) * 3
    make = lambda n, shift=0.0: centre + shift + rng.normal(size=(n, 32))  # noqa: E731
    scores = lambda n, a=2, b=5: rng.beta(a, b, size=(n, 1))  # noqa: E731
    return make, scores


@pytest.mark.parametrize("seed", range(8))
def test_a_batch_like_validation_is_not_flagged(seed):
    make, scores = _world(seed)
    check = check_drift(scores(300), scores(300), make(500), make(300), make(300), positive_index=0)
    assert check.drifted is False and check.text.startswith("No drift")
    assert 0 <= check.far_share < 0.12


@pytest.mark.parametrize("seed", range(3))
def test_changed_images_are_flagged_by_their_features(seed):
    make, scores = _world(seed)
    check = check_drift(scores(300), scores(300), make(500), make(300), make(300, shift=np.r_[np.ones(16) * 2,
                                                                                              np.zeros(16)]), 0)
    assert check.drifted is True and check.far_share > 0.15 and check.feature_p_value < 1e-3
    assert "image features" in check.text and "recalibrate" in check.text


def test_a_score_shift_alone_is_flagged_and_its_cause_left_open():
    make, scores = _world(0)
    check = check_drift(scores(300), scores(300, 5, 2), make(500), make(300), make(300), 0)
    assert check.drifted is True and check.score_ks_statistic > 0.5 and check.feature_p_value > 1e-3
    assert "in its scores (" in check.text and "share of each class" in check.text


def test_too_few_images_are_not_tested():
    make, scores = _world(0)
    check = check_drift(scores(300), scores(MIN_IMAGES - 1), make(50), make(30), make(MIN_IMAGES - 1), 0)
    assert check.drifted is None and f"at least {MIN_IMAGES}" in check.text
