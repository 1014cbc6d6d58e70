"""What to label next: uncertainty at the operating point, times distance to what is chosen or known."""

from __future__ import annotations

import numpy as np
import pytest

from tfx_transfer.evaluation.metrics import OperatingPoint
from tfx_transfer.evaluation.selection import select_for_labelling, uncertainty


def test_uncertainty_is_measured_at_the_run_threshold_not_at_one_half():
    probabilities = np.array([[0.8, 0.2], [0.5, 0.5], [0.0, 1.0]])
    point = OperatingPoint("target_recall", threshold=0.2, positive_index=1)
    assert uncertainty(probabilities, point).tolist() == pytest.approx([1.0, 1 - 0.3 / 0.8, 0.0])
    assert uncertainty(probabilities).tolist() == pytest.approx([0.4, 1.0, 0.0])  # argmax: the margin


def test_selection_spreads_over_clusters_where_top_uncertainty_picks_one():
    rng = np.random.default_rng(0)
    # One tight cluster of 40 very uncertain near-copies, and four other clusters a little less uncertain.
    centres = rng.normal(size=(5, 32)) * 5
    cluster = np.repeat(np.arange(5), 40)
    features = centres[cluster] + rng.normal(size=(200, 32)) * 0.05
    positive = np.where(cluster == 0, 0.5, 0.4) + rng.uniform(-0.01, 0.01, 200)
    probabilities = np.stack([1 - positive, positive], axis=1)
    chosen = select_for_labelling(probabilities, features, 5)
    top_uncertain = np.argsort(-uncertainty(probabilities))[:5]
    assert len(set(cluster[top_uncertain])) == 1
    assert sorted(set(cluster[chosen].tolist())) == [0, 1, 2, 3, 4]
    assert cluster[chosen[0]] == 0  # the most uncertain comes first


def test_images_like_the_training_images_are_chosen_last():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(20, 16))
    probabilities = np.full((20, 2), 0.5)
    chosen = select_for_labelling(probabilities, features, 20, labelled_features=features[:10] + 1e-4)
    assert set(chosen[:10].tolist()) == set(range(10, 20))
    assert len(set(chosen.tolist())) == 20


def test_selection_refuses_a_count_below_one():
    with pytest.raises(ValueError, match=r"positive number of images to choose; received 0"):
        select_for_labelling(np.full((3, 2), 0.5), np.eye(3), 0)
