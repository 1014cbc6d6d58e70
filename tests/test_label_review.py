"""Label review on features: cross-fitting folds, cleanlab's label issues, near-duplicates, outliers."""

from __future__ import annotations

import numpy as np
import pytest

from tfx_transfer.evaluation.label_review import (find_label_issues, near_duplicates, out_of_fold_probabilities,
                                                  outlier_scores, review_folds)


def _noisy(seed: int = 0, per_class: int = 100, classes: int = 3, flips: int = 15):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    centres = rng.normal(0, 4, (classes, 16))
    features = centres[labels] + rng.normal(size=(len(labels), 16))
    flipped = rng.choice(len(labels), flips, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, flips)) % classes
    return features, labels, noisy, flipped


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_flips_are_found_and_the_true_label_is_suggested(seed):
    features, labels, noisy, flipped = _noisy(seed)
    probabilities = out_of_fold_probabilities(features, noisy, review_folds(noisy, folds=5, seed=seed), seed=seed)
    issues = find_label_issues(noisy, probabilities)
    flagged = set(np.flatnonzero(issues.is_issue).tolist())
    assert len(flagged & set(flipped.tolist())) >= 0.75 * len(flipped)  # recall
    assert len(flagged & set(flipped.tolist())) >= 0.9 * len(flagged)  # precision
    lowest = set(np.argsort(issues.label_quality)[:len(flipped)].tolist())
    assert len(lowest & set(flipped.tolist())) >= 0.9 * len(flipped)  # the flips have the least likely labels
    assert (issues.suggested[flipped] == labels[flipped]).mean() >= 0.9
    assert set(issues.ranked.tolist()) == flagged  # ranked: the flagged ones, least likely label first
    assert np.all(np.diff(issues.label_quality[issues.ranked]) >= 0)


def test_out_of_fold_probabilities_never_come_from_a_model_that_saw_the_image():
    # Pure noise features with random labels: a model that saw an image would score its label highly.
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(200, 60)), rng.integers(0, 2, 200)
    held_out = out_of_fold_probabilities(features, labels, review_folds(labels, folds=5, seed=0))
    assert abs(held_out[np.arange(200), labels].mean() - 0.5) < 0.08  # chance, not memorised
    assert np.allclose(held_out.sum(axis=1), 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_group_aware_folds_never_split_a_group(seed):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 40, 300).astype(str)
    labels = rng.integers(0, 2, 300)
    folds = review_folds(labels, groups, folds=5, seed=seed)
    for group in np.unique(groups):
        assert len(np.unique(folds[groups == group])) == 1
    assert sorted(np.unique(folds).tolist()) == [0, 1, 2, 3, 4]


def test_folds_are_stratified_by_label():
    labels = np.array([0] * 90 + [1] * 10)
    folds = review_folds(labels, folds=5, seed=0)
    assert [int((labels[folds == k] == 1).sum()) for k in range(5)] == [2, 2, 2, 2, 2]


@pytest.mark.parametrize(("labels", "groups", "folds", "match"), [
    ([0] * 20 + [1] * 3, None, 5, r"5-fold cross-fitting needs at least 5 images of every class; class index 1 has 3\. "
                                 r"Use --folds 3"),
    ([0, 1] * 10, ["a", "b"] * 10, 5, r"needs at least 5 groups of every class; class index 0 has 1"),
    ([0] * 10, None, 5, r"at least two classes"),
    ([0, 1] * 10, None, 1, r"at least 2 folds; received folds=1"),
])
def test_folds_refuse_what_cannot_be_cross_fitted(labels, groups, folds, match):
    with pytest.raises(ValueError, match=match):
        review_folds(np.array(labels), None if groups is None else np.array(groups), folds=folds)


def test_near_duplicates_are_pairs_much_closer_than_neighbours_are():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(80, 32))
    features[10] = features[3] * 1.01 + 1e-3      # the same image, re-encoded
    features[50] = features[20]                    # an exact copy
    pairs = near_duplicates(features)
    assert {(i, j) for i, j, _ in pairs} == {(3, 10), (20, 50)}
    assert pairs[0][:2] == (20, 50) and pairs[0][2] == pytest.approx(0.0, abs=1e-9)
    assert near_duplicates(rng.normal(size=(80, 32))) == []


def test_outliers_are_the_images_far_from_the_rest():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(150, 16)) + 5.0
    features[[7, 99]] = -rng.normal(size=(2, 16)) * 5 - 5  # another world
    scores, is_outlier = outlier_scores(features)
    assert np.flatnonzero(is_outlier).tolist() == [7, 99]
    assert set(np.argsort(scores)[:2].tolist()) == {7, 99}


def test_without_cleanlab_the_error_names_the_package_and_the_extra(monkeypatch):
    import sys

    for name in [name for name in sys.modules if name == "cleanlab" or name.startswith("cleanlab.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # what an environment without it gives
    with pytest.raises(ImportError, match=r"needs cleanlab: pip install 'tfx_transfer\[review\]' \(or cleanlab==2\.9\.0"):
        find_label_issues(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))
