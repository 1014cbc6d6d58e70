"""Metrics on hand-made y_true / y_score with known answers, checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from tfx_transfer.evaluation.metrics import (
    OperatingPoint,
    bootstrap_interval,
    choose_operating_point,
    classification_metrics,
    expected_calibration_error,
    most_confused,
)

BINARY_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 0])
BINARY_POSITIVE = np.array([0.1, 0.3, 0.35, 0.8, 0.4, 0.9, 0.65, 0.2, 0.55, 0.05])
BINARY_SCORE = np.stack([1 - BINARY_POSITIVE, BINARY_POSITIVE], axis=1)


def test_binary_metrics_match_scikit_learn():
    result = classification_metrics(BINARY_TRUE, BINARY_SCORE, ["good", "defect"], bootstrap=0)
    y_pred = BINARY_SCORE.argmax(1)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(BINARY_TRUE, y_pred)) == 0.8
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(BINARY_TRUE, y_pred))
    assert result["macro_f1"] == pytest.approx(skm.f1_score(BINARY_TRUE, y_pred, average="macro"))
    assert result["weighted_f1"] == pytest.approx(skm.f1_score(BINARY_TRUE, y_pred, average="weighted"))
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(BINARY_TRUE, BINARY_POSITIVE))
    assert result["average_precision"] == pytest.approx(skm.average_precision_score(BINARY_TRUE, BINARY_POSITIVE))
    assert result["brier"] == pytest.approx(skm.brier_score_loss(BINARY_TRUE, BINARY_POSITIVE))
    assert result["confusion_matrix"] == skm.confusion_matrix(BINARY_TRUE, y_pred).tolist() == [[5, 1], [1, 3]]
    assert (result["sensitivity"], result["specificity"]) == (0.75, 5 / 6)
    report = skm.classification_report(BINARY_TRUE, y_pred, target_names=["good", "defect"], output_dict=True)
    assert result["per_class"]["defect"]["recall"] == pytest.approx(report["defect"]["recall"])


def test_multiclass_with_a_class_never_predicted():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_score = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.3, .6, .1], [.1, .6, .3], [.5, .2, .3], [.1, .8, .1]])
    result = classification_metrics(y_true, y_score, ["a", "b", "c"], bootstrap=0)
    y_pred = y_score.argmax(1)
    assert result["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, y_score, multi_class="ovr"))
    assert result["brier"] == pytest.approx(skm.brier_score_loss(y_true, y_score, labels=[0, 1, 2]))
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 3.0}
    assert "never predicted: ['c']" in result["notes"]
    assert result["most_confused"][0] == {"true": "c", "predicted": "b", "count": 2}
    assert "sensitivity" not in result


def test_single_class_test_split_gives_none_not_a_crash():
    y_true = np.array([1, 1, 1])
    y_score = np.array([[.2, .8], [.6, .4], [.1, .9]])
    result = classification_metrics(y_true, y_score, ["normal", "pneumonia"], primary_metric="roc_auc", bootstrap=50)
    assert result["roc_auc"] is None and result["specificity"] is None
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert any("one class only" in note for note in result["notes"])
    assert result["primary"] == {"name": "roc_auc", "value": None, "low": None, "high": None}


@pytest.mark.parametrize("scores, auc", [
    ([0.1, 0.2, 0.8, 0.9], 1.0),  # perfect
    ([0.5, 0.5, 0.5, 0.5], 0.5),  # constant
    ([0.9, 0.8, 0.2, 0.1], 0.0),  # perfectly wrong
])
def test_perfect_constant_and_inverted_scores(scores, auc):
    y_true = np.array([0, 0, 1, 1])
    positive = np.array(scores)
    result = classification_metrics(y_true, np.stack([1 - positive, positive], 1), ["n", "p"], bootstrap=0)
    assert result["roc_auc"] == pytest.approx(auc)
    assert result["ece"] >= 0.0 and np.isfinite(result["brier"])


def test_expected_calibration_error_by_hand():
    # Two bins used: confidence 0.9 (2 images, 1 right) and 0.6 (2 images, both right).
    y_true = np.array([0, 1, 0, 0])
    y_score = np.array([[.9, .1], [.9, .1], [.6, .4], [.6, .4]])
    assert expected_calibration_error(y_true, y_score, bins=10) == pytest.approx(0.5 * abs(0.9 - 0.5) + 0.5 * abs(0.6 - 1.0))


def test_operating_point_is_chosen_on_validation_and_applied_unchanged_to_test():
    val_true = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    val_positive = np.array([0.9, 0.7, 0.45, 0.3, 0.5, 0.2, 0.1, 0.05])
    point = choose_operating_point(val_true, np.stack([1 - val_positive, val_positive], 1), "target_recall", 1, 0.75)
    # Three of four positives must be caught: the third highest positive score is the threshold.
    assert point.threshold == 0.45 and point.validation_recall == 0.75
    test_positive = np.array([0.46, 0.44, 0.9, 0.1])
    test_true = np.array([1, 1, 0, 0])
    result = classification_metrics(test_true, np.stack([1 - test_positive, test_positive], 1), ["n", "p"], point, bootstrap=0)
    assert result["operating_point"]["threshold"] == 0.45
    assert result["confusion_matrix"] == [[1, 1], [1, 1]]  # 0.46 and 0.9 called positive, 0.44 not
    assert result["sensitivity"] == 0.5
    assert result["argmax"]["accuracy"] == skm.accuracy_score(test_true, (test_positive >= 0.5).astype(int)) == 0.25
    refit = choose_operating_point(test_true, np.stack([1 - test_positive, test_positive], 1), "target_recall", 1, 0.75)
    assert refit.threshold != point.threshold  # test would have chosen otherwise: it was not consulted


def test_target_recall_with_positive_class_zero_and_without_positives():
    y_true = np.array([0, 0, 1, 1])
    y_score = np.array([[.9, .1], [.4, .6], [.3, .7], [.2, .8]])
    point = choose_operating_point(y_true, y_score, "target_recall", 0, 1.0)
    assert point.threshold == 0.4 and point.predict(y_score).tolist() == [0, 0, 1, 1]
    with pytest.warns(UserWarning, match="No positive image in the validation split"):
        fallback = choose_operating_point(np.array([1, 1]), y_score[:2], "target_recall", 0, 0.9)
    assert fallback.kind == "argmax"
    with pytest.raises(ValueError, match="target_recall needs two classes"):
        choose_operating_point(np.array([0, 1, 2]), np.eye(3), "target_recall", 1)


def test_bootstrap_interval_brackets_the_value_and_is_reproducible():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 200)
    positive = np.clip(y_true * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    y_score = np.stack([1 - positive, positive], 1)
    value = skm.roc_auc_score(y_true, positive)
    low, high = bootstrap_interval("roc_auc", y_true, y_score, OperatingPoint(), 300, seed=1)
    assert low < value < high and high - low < 0.2
    assert bootstrap_interval("roc_auc", y_true, y_score, OperatingPoint(), 300, seed=1) == (low, high)


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match=r"Expected y_score of shape \(n, num_classes\) = \(2, 3\)"):
        classification_metrics([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["a", "b", "c"])


def test_most_confused_orders_by_count():
    matrix = np.array([[5, 2, 0], [4, 3, 1], [0, 0, 9]])
    assert [(p["true"], p["predicted"], p["count"]) for p in most_confused(matrix, ["a", "b", "c"])] == [
        ("b", "a", 4), ("a", "b", 2), ("b", "c", 1)]


def test_multilabel_metrics_match_scikit_learn_per_label():
    from tfx_transfer.evaluation.metrics import multilabel_metrics

    y_true = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 0]])
    y_score = np.array([[.9, .2], [.3, .7], [.6, .4], [.2, .1], [.4, .3], [.1, .8]])
    result = multilabel_metrics(y_true, y_score, ["effusion", "pneumonia"], bootstrap=0)
    per_label = [skm.roc_auc_score(y_true[:, k], y_score[:, k]) for k in range(2)]
    assert [result["per_label"][n]["roc_auc"] for n in ("effusion", "pneumonia")] == pytest.approx(per_label)
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, y_score, average="macro"))
    assert result["accuracy"] == skm.accuracy_score(y_true, (y_score >= 0.5).astype(int))
    assert result["confusion_matrix"] == skm.multilabel_confusion_matrix(y_true, (y_score >= 0.5).astype(int)).tolist()
    one_class = multilabel_metrics(np.array([[1, 0], [1, 1]]), np.array([[.9, .1], [.8, .7]]), ["a", "b"], bootstrap=0)
    assert one_class["per_label"]["a"]["roc_auc"] is None and one_class["roc_auc"] == 1.0
    assert "labels with one class only: ['a']" in one_class["notes"][0]
