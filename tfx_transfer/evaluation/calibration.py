"""Calibrated probabilities: temperature scaling fitted on the validation split.

A fine-tuned network's probabilities are usually over-confident: of the images it calls 95% sure,
fewer than 95% are right. Temperature scaling divides the logits by one scalar `T` (T > 1 softens,
T < 1 sharpens), chosen on validation by minimising the negative log-likelihood and applied
unchanged to test (Guo et al., 2017). Because `log p = z - logsumexp(z)`, dividing the saved
log-probabilities by T gives exactly `softmax(z / T)`: no model or logits are needed. The order of
the scores within an image never changes, so the most probable class stays; with two classes the
ranking of images (ROC-AUC, average precision, a threshold's decisions) stays too. With more classes
the one-vs-rest ranking of images can move a little. Calibration error (ECE), the Brier score and
the likelihood are what it improves, on validation by construction and usually on test.

This module imports neither TensorFlow nor Keras (reports are rebuilt without them).

Example:
    >>> scores = [[0.99, 0.01], [0.02, 0.98], [0.9, 0.1], [0.97, 0.03]]
    >>> temperature = fit_temperature([0, 1, 1, 0], scores)
    >>> bool(temperature > 1.0)  # over-confident and once wrong: softened
    True
"""

from __future__ import annotations

import math

import numpy as np

from tfx_transfer.evaluation.metrics import brier_score, expected_calibration_error

#: The temperatures searched (a wider range only fits noise on a small validation split).
TEMPERATURE_RANGE = (0.05, 20.0)


def apply_temperature(y_score, temperature: float, positive_index: int = 1) -> np.ndarray:
    """Probabilities `(n, num_classes)` as the same logits divided by `temperature` would give them.

    With two classes only the `positive_index` column is read (`sigmoid(logit(p) / T)`): saved
    float32 columns need not sum to one exactly, and reading both could reorder images whose scores
    differ by less than that rounding (a near-constant model's ROC-AUC would move).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive. Received: temperature={temperature!r}")
    y_score = np.asarray(y_score, float)
    tiny = np.finfo(float).tiny
    if y_score.ndim == 2 and y_score.shape[1] == 2:
        positive = np.clip(y_score[:, positive_index], tiny, 1.0 - np.finfo(float).eps)
        logit = (np.log(positive) - np.log1p(-positive)) / temperature
        calibrated = 1.0 / (1.0 + np.exp(-logit))
        columns = [1.0 - calibrated, calibrated]
        return np.stack(columns if positive_index == 1 else columns[::-1], axis=1)
    logits = np.log(np.clip(y_score, tiny, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def negative_log_likelihood(y_true, y_score) -> float:
    """Mean `-log p(true class)` (scikit-learn's `log_loss` for integer classes)."""
    y_score = np.clip(np.asarray(y_score, float), 1e-12, 1.0)
    return float(-np.log(y_score[np.arange(len(y_score)), np.asarray(y_true, int)]).mean())


def fit_temperature(y_true, y_score, positive_index: int = 1) -> float:
    """The temperature in `TEMPERATURE_RANGE` that minimises validation negative log-likelihood.

    Args:
        y_true: Integer classes, shape `(n,)`.
        y_score: Probabilities, shape `(n, num_classes)`.

    Raises:
        ValueError: for empty or mismatched inputs.
    """
    from scipy.optimize import minimize_scalar

    y_true = np.asarray(y_true, int)
    y_score = np.asarray(y_score, float)
    if len(y_true) == 0 or y_score.shape[0] != len(y_true):
        raise ValueError(f"Expected scores of shape (n, num_classes) for n > 0 labels. Received: {len(y_true)} labels, "
                         f"scores of shape {y_score.shape}")
    low, high = (math.log(bound) for bound in TEMPERATURE_RANGE)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(
                                 y_true, apply_temperature(y_score, math.exp(log_t), positive_index)),
                             bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(result.x))


def reliability_curve(y_true, y_score, bins: int = 10) -> list[dict]:
    """Per confidence bin of the most probable class: mean confidence, accuracy and count (empty bins left out)."""
    y_score = np.asarray(y_score, float)
    confidence = y_score.max(axis=1)
    correct = y_score.argmax(axis=1) == np.asarray(y_true, int)
    edges = np.linspace(0.0, 1.0, bins + 1)
    curve = []
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (confidence > low) & (confidence <= high) if index else (confidence >= low) & (confidence <= high)
        if inside.any():
            curve.append({"confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean()),
                          "count": int(inside.sum())})
    return curve


def calibrate(val_true, val_score, test_true, test_score, positive_index: int | None = None
              ) -> tuple[dict, np.ndarray, np.ndarray]:
    """Fits the temperature on validation and applies it to both splits.

    `positive_index`: with two classes, the class whose score order is kept exactly (default 1).

    Returns:
        `(record, val_score, test_score)`: the calibrated scores, and a JSON-ready record with
        `temperature`, `method`, the validation negative log-likelihood and ECE before and after,
        the test ECE and Brier score before and after, and reliability curves of test before and
        after. With fewer than two classes in validation nothing is fitted (`temperature` 1.0 and
        a `note` saying why).
    """
    val_true, test_true = np.asarray(val_true, int), np.asarray(test_true, int)
    val_score, test_score = np.asarray(val_score, float), np.asarray(test_score, float)
    note = None
    positive = 1 if positive_index is None else positive_index
    if len(np.unique(val_true)) < 2:
        temperature, note = 1.0, "not calibrated: the validation split holds fewer than two classes"
    elif (val_score.argmax(axis=1) == val_true).all():
        # The likelihood then improves without limit as T goes to 0 (a step function): the fit
        # would stop at the range's edge and make every score 0 or 1, on no evidence.
        temperature, note = 1.0, ("not calibrated: every validation image is classified correctly, so validation "
                                  "gives no evidence of over- or under-confidence")
    else:
        temperature = fit_temperature(val_true, val_score, positive)
    val_calibrated = apply_temperature(val_score, temperature, positive)
    test_calibrated = apply_temperature(test_score, temperature, positive)
    record = {
        "method": "temperature scaling, fitted on validation (negative log-likelihood), applied to test",
        "temperature": temperature,
        "validation": {
            "nll_before": negative_log_likelihood(val_true, val_score) if len(val_true) else None,
            "nll_after": negative_log_likelihood(val_true, val_calibrated) if len(val_true) else None,
            "ece_before": expected_calibration_error(val_true, val_score),
            "ece_after": expected_calibration_error(val_true, val_calibrated),
        },
        "test": {
            "ece_before": expected_calibration_error(test_true, test_score),
            "ece_after": expected_calibration_error(test_true, test_calibrated),
            "brier_before": brier_score(test_true, test_score) if len(test_true) else None,
            "brier_after": brier_score(test_true, test_calibrated) if len(test_true) else None,
        },
        "reliability": {"before": reliability_curve(test_true, test_score),
                        "after": reliability_curve(test_true, test_calibrated)},
        "note": note,
    }
    return record, val_calibrated, test_calibrated
