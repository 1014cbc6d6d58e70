"""Temperature scaling: fitted on validation, it recovers a known over-confidence and changes no decision."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as skm

from tfx_transfer.evaluation.calibration import (
    apply_temperature,
    calibrate,
    fit_temperature,
    negative_log_likelihood,
    reliability_curve,
)


def _calibrated_sample(n=4000, classes=3, seed=0):
    """Probabilities and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (n, classes))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in probabilities])
    return labels, probabilities


@pytest.mark.parametrize("true_temperature", [3.0, 1.0, 0.5])
def test_the_fitted_temperature_undoes_a_known_one(true_temperature):
    labels, probabilities = _calibrated_sample()
    distorted = apply_temperature(probabilities, 1.0 / true_temperature)  # logits x (1/T): T undoes it
    assert fit_temperature(labels[:2000], distorted[:2000]) == pytest.approx(true_temperature, rel=0.1)


def test_calibration_lowers_held_out_error_and_keeps_every_decision_and_ranking():
    labels, probabilities = _calibrated_sample(classes=2)
    overconfident = apply_temperature(probabilities, 1 / 3)
    record, val_score, test_score = calibrate(labels[:2000], overconfident[:2000], labels[2000:], overconfident[2000:])
    assert record["temperature"] == pytest.approx(3.0, rel=0.1) and record["note"] is None
    assert record["test"]["ece_after"] < record["test"]["ece_before"] / 3
    assert record["test"]["brier_after"] < record["test"]["brier_before"]
    assert record["validation"]["nll_after"] < record["validation"]["nll_before"]
    np.testing.assert_array_equal(test_score.argmax(1), overconfident[2000:].argmax(1))
    assert skm.roc_auc_score(labels[2000:], test_score[:, 1]) == pytest.approx(
        skm.roc_auc_score(labels[2000:], overconfident[2000:, 1]), abs=1e-12)
    np.testing.assert_allclose(test_score.sum(1), 1.0)
    assert sum(b["count"] for b in record["reliability"]["after"]) == 2000


def test_one_class_in_validation_fits_nothing_and_says_so():
    labels, probabilities = _calibrated_sample(n=20)
    record, val_score, _ = calibrate(np.zeros(10, int), probabilities[:10], labels[10:], probabilities[10:])
    assert record["temperature"] == 1.0 and "fewer than two classes" in record["note"]
    np.testing.assert_allclose(val_score, probabilities[:10] / probabilities[:10].sum(1, keepdims=True))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"temperature must be positive\. Received: temperature=0"):
        apply_temperature([[0.5, 0.5]], 0)
    with pytest.raises(ValueError, match=r"Expected scores of shape \(n, num_classes\) for n > 0 labels\. Received: 0 labels"):
        fit_temperature([], np.zeros((0, 2)))


def test_reliability_curve_and_likelihood_on_a_hand_made_case():
    y_true = [0, 0, 1, 1]
    y_score = [[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.3, 0.7]]
    curve = reliability_curve(y_true, y_score, bins=10)
    assert curve == [{"confidence": 0.6, "accuracy": 0.0, "count": 1}, {"confidence": 0.7, "accuracy": 1.0, "count": 1},
                     {"confidence": 0.95, "accuracy": 1.0, "count": 2}]
    assert negative_log_likelihood(y_true, y_score) == pytest.approx(skm.log_loss(y_true, np.asarray(y_score)))


@pytest.mark.parametrize("positive_index", [0, 1])
def test_two_class_scores_keep_the_positive_columns_exact_order(positive_index):
    # A near-constant model: float32 columns that do not sum to one, differing below that rounding.
    rng = np.random.default_rng(1)
    positive = (0.5 + rng.normal(0, 1e-6, 500)).astype("float32")
    other = (1.0 - positive + rng.normal(0, 1e-7, 500)).astype("float32")
    scores = np.stack([positive, other] if positive_index == 0 else [other, positive], axis=1)
    calibrated = apply_temperature(scores, 20.0, positive_index)
    np.testing.assert_array_equal(np.argsort(calibrated[:, positive_index], kind="stable"),
                                  np.argsort(scores[:, positive_index].astype(float), kind="stable"))


def test_a_validation_split_without_a_single_error_is_not_calibrated():
    # Every image right: the likelihood would keep improving as T -> 0, a fit on no evidence.
    record, val_calibrated, test_calibrated = calibrate([0, 1, 1, 0], [[.7, .3], [.4, .6], [.2, .8], [.9, .1]],
                                                        [0, 1], [[.6, .4], [.45, .55]], 1)
    assert record["temperature"] == 1.0 and "every validation image is classified correctly" in record["note"]
    np.testing.assert_allclose(test_calibrated, [[.6, .4], [.45, .55]])
