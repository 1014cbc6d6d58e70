"""Classification metrics, computed with scikit-learn, and operating points chosen on validation.

Inputs follow scikit-learn: `y_true` (integer classes) and `y_score` (`(n, num_classes)`
probabilities). No TensorFlow here: reports are rebuilt from saved predictions without it.

Operating points turn scores into decisions. They are chosen on the validation split and applied
unchanged to test, so the test numbers are what a deployed model would do:

    argmax          the most probable class
    target_recall   two classes: the highest threshold on the positive class's probability whose
                    validation recall (sensitivity, defect recall) reaches the target
    good_quantile   two classes, no positive image in validation (a line that has only good parts
                    yet): a quantile of the negative (good) validation images' positive-class
                    scores, so about 1 - quantile of good parts are flagged

Metrics that are undefined on the data at hand (ROC-AUC with one class in `y_true`) are None,
with the reason in `notes`, never a crash or a silent 0.5.

Example:
    >>> point = choose_operating_point([0, 1, 1, 0], [[.9, .1], [.4, .6], [.7, .3], [.6, .4]],
    ...                                kind="target_recall", positive_index=1, target_recall=1.0)
    >>> point.threshold
    0.3
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from sklearn import metrics as skm


@dataclass(frozen=True)
class OperatingPoint:
    """How scores become class decisions.

    Attributes:
        kind: `argmax`, `target_recall` or `good_quantile`.
        threshold: For `target_recall`, the positive-class probability at or above which an
            image is called positive; None for argmax.
        positive_index: The positive class for `target_recall` (and for sensitivity/specificity).
        target_recall: The recall asked for.
        validation_recall: The recall the threshold gave on validation.
        quantile: For `good_quantile`, the quantile of the good validation scores.
    """

    kind: str = "argmax"
    threshold: float | None = None
    positive_index: int | None = None
    target_recall: float | None = None
    validation_recall: float | None = None
    quantile: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def predict(self, y_score) -> np.ndarray:
        """Class decisions for `(n, num_classes)` scores."""
        y_score = np.asarray(y_score, float)
        if self.kind == "argmax" or self.threshold is None:
            return y_score.argmax(axis=1)
        negative = 1 - self.positive_index
        return np.where(y_score[:, self.positive_index] >= self.threshold, self.positive_index, negative)


def choose_operating_point(y_true, y_score, kind: str = "argmax", positive_index: int | None = None,
                           target_recall: float = 0.9, good_quantile: float | None = None) -> OperatingPoint:
    """Chooses the operating point on validation data.

    For `target_recall`, among the thresholds that reach the target recall of the positive class,
    the highest (fewest false positives) is taken. With no positive image in `y_true`, the
    threshold is the `good_quantile` quantile of the negative images' positive-class scores
    (`good_quantile` point) when one is given, else the point falls back to argmax, with a warning.
    """
    if kind == "argmax":
        return OperatingPoint("argmax", positive_index=positive_index)
    if kind != "target_recall":
        raise ValueError(f"Unknown operating point {kind!r}. Available: argmax, target_recall")
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, float)
    if y_score.shape[1] != 2 or positive_index not in (0, 1):
        raise ValueError(
            f"target_recall needs two classes and a positive class index 0 or 1. Received: "
            f"{y_score.shape[1]} classes, positive_index={positive_index!r}"
        )
    positive_scores = np.sort(y_score[y_true == positive_index, positive_index])[::-1]
    if len(positive_scores) == 0 and good_quantile is not None:
        negatives = y_score[y_true != positive_index, positive_index]
        if len(negatives) == 0:
            raise ValueError("The validation split holds no image at all: no operating point can be chosen. "
                             "Give data.validation_split a share above 0.")
        threshold = float(np.quantile(negatives, good_quantile, method="higher"))
        return OperatingPoint("good_quantile", threshold, positive_index, target_recall, None, good_quantile)
    if len(positive_scores) == 0:
        warnings.warn("No positive image in the validation split: operating point falls back to argmax.", stacklevel=2)
        return OperatingPoint("argmax", positive_index=positive_index, target_recall=target_recall)
    # The k-th highest positive score is the highest threshold that keeps k positives above it.
    needed = max(1, int(np.ceil(target_recall * len(positive_scores) - 1e-9)))
    threshold = float(positive_scores[needed - 1])
    recall = float((positive_scores >= threshold).mean())
    return OperatingPoint("target_recall", threshold, positive_index, target_recall, recall)


def threshold_band(y_true, y_score, positive_index: int, target_recall: float, resamples: int = 200,
                   seed: int = 0) -> list[float] | None:
    """The 95% range of the `target_recall` threshold over bootstrap resamples of validation.

    A score inside it gets a different decision under a slightly different validation sample: the
    images worth a second look. None when validation holds no positive image.

    Example:
        >>> threshold_band([0, 1, 1, 0, 1], [[.9, .1], [.2, .8], [.4, .6], [.7, .3], [.1, .9]], 1, 0.9)
        [0.6, 0.9]
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, float)
    if not (y_true == positive_index).any():
        return None
    rng = np.random.default_rng(seed)
    thresholds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample without positives falls back to argmax: left out
        for _ in range(resamples):
            sample = rng.integers(0, len(y_true), len(y_true))
            point = choose_operating_point(y_true[sample], y_score[sample], "target_recall", positive_index, target_recall)
            if point.threshold is not None:
                thresholds.append(point.threshold)
    low, high = np.percentile(thresholds, [2.5, 97.5])
    return [float(low), float(high)]


def expected_calibration_error(y_true, y_score, bins: int = 15) -> float:
    """Mean |confidence - accuracy| over equal-width confidence bins, weighted by bin size."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, float)
    confidence = y_score.max(axis=1)
    correct = (y_score.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(error)


def roc_auc(y_true, y_score, notes: list[str] | None = None) -> float | None:
    """Binary ROC-AUC, or one-vs-rest macro ROC-AUC over the classes present; None if undefined."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, float)
    present = np.unique(y_true)
    if len(present) < 2:
        if notes is not None:
            notes.append(f"roc_auc undefined: the split holds one class only ({present.tolist()}).")
        return None
    if y_score.shape[1] == 2:
        return float(skm.roc_auc_score(y_true == 1, y_score[:, 1]))
    if len(present) == y_score.shape[1]:
        return float(skm.roc_auc_score(y_true, y_score, multi_class="ovr", average="macro",
                                       labels=list(range(y_score.shape[1]))))
    if notes is not None:
        notes.append(f"roc_auc averaged over the {len(present)} classes present of {y_score.shape[1]}.")
    return float(np.mean([skm.roc_auc_score(y_true == k, y_score[:, k]) for k in present]))


def average_precision(y_true, y_score, positive_index: int | None = None) -> float | None:
    """Average precision of the positive class (binary) or macro over the classes present."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, float)
    if y_score.shape[1] == 2:
        positive = 1 if positive_index is None else positive_index
        if not (y_true == positive).any():
            return None
        return float(skm.average_precision_score(y_true == positive, y_score[:, positive]))
    present = np.unique(y_true)
    return float(np.mean([skm.average_precision_score(y_true == k, y_score[:, k]) for k in present]))


def score(name: str, y_true, y_score, y_pred, positive_index: int | None = None) -> float | None:
    """One named metric (`PRIMARY_METRICS` of the recipe module)."""
    if name == "roc_auc":
        if y_score.shape[1] == 2 and positive_index == 0:
            return roc_auc(1 - np.asarray(y_true), y_score[:, ::-1])
        return roc_auc(y_true, y_score)
    if name == "average_precision":
        return average_precision(y_true, y_score, positive_index)
    if name == "accuracy":
        return float(skm.accuracy_score(y_true, y_pred))
    if name == "balanced_accuracy":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a class absent from y_true is a known, reported case
            return float(skm.balanced_accuracy_score(y_true, y_pred))
    if name == "macro_f1":
        labels = list(range(y_score.shape[1]))
        return float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    raise ValueError(f"Unknown metric {name!r}")


def bootstrap_interval(name: str, y_true, y_score, point: OperatingPoint, resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of metric `name` over resampled test images.

    Resamples on which the metric is undefined (one class drawn) are skipped; None if fewer than
    half are usable.
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, float)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, len(y_true), len(y_true))
        value = score(name, y_true[pick], y_score[pick], point.predict(y_score[pick]), point.positive_index)
        if value is not None:
            values.append(value)
    if len(values) < resamples / 2:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def brier_score(y_true, y_score) -> float:
    """Mean squared error of the probabilities (scikit-learn's `brier_score_loss`; multi-class: over all classes)."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, float)
    if y_score.shape[1] == 2:
        return float(skm.brier_score_loss(y_true == 1, y_score[:, 1]))
    sums = y_score.sum(axis=1, keepdims=True)
    # float32 softmax rows sum to 1 only within rounding, which scikit-learn's check rejects.
    normalised = np.divide(y_score, sums, out=np.full_like(y_score, 1.0 / y_score.shape[1]), where=sums > 0)
    return float(skm.brier_score_loss(y_true, normalised, labels=list(range(y_score.shape[1]))))


def most_confused(matrix: np.ndarray, class_names: list[str], top: int = 5) -> list[dict]:
    """The largest off-diagonal cells: `[{"true": a, "predicted": b, "count": n}, ...]`."""
    matrix = np.asarray(matrix)
    pairs = [(int(matrix[i, j]), i, j) for i in range(len(matrix)) for j in range(len(matrix)) if i != j and matrix[i, j] > 0]
    pairs.sort(key=lambda item: (-item[0], item[1], item[2]))
    return [{"true": class_names[i], "predicted": class_names[j], "count": n} for n, i, j in pairs[:top]]


def classification_metrics(y_true, y_score, class_names: list[str], point: OperatingPoint | None = None,
                           primary_metric: str = "accuracy", bootstrap: int = 1000, seed: int = 0) -> dict:
    """Every metric of a report, for one split.

    Args:
        y_true: Integer classes, shape `(n,)`.
        y_score: Probabilities, shape `(n, num_classes)`.
        class_names: Names in label order.
        point: The operating point (chosen on validation); argmax by default.
        primary_metric: The metric that gets a bootstrap interval.
        bootstrap: Resamples for the interval (0: none).

    Returns:
        A JSON-ready dict: `accuracy`, `balanced_accuracy`, `macro_f1`, `weighted_f1`, `roc_auc`,
        `average_precision`, `brier`, `ece`, `sensitivity`/`specificity` (two classes),
        `argmax` (accuracy, balanced accuracy and macro-F1 of the most probable class, when the
        operating point is a threshold),
        `primary` (`name`, `value`, `low`, `high`), `per_class`, `confusion_matrix`,
        `most_confused`, `n`, `notes`.

    Example:
        >>> classification_metrics([0, 1], [[.8, .2], [.3, .7]], ["good", "bad"], bootstrap=0)["accuracy"]
        1.0
    """
    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, float)
    if y_score.ndim != 2 or y_score.shape != (len(y_true), len(class_names)):
        raise ValueError(
            f"Expected y_score of shape (n, num_classes) = ({len(y_true)}, {len(class_names)}). "
            f"Received: {y_score.shape}"
        )
    point = point or OperatingPoint()
    y_pred = point.predict(y_score)
    labels = list(range(len(class_names)))
    notes: list[str] = []
    result = {
        "n": int(len(y_true)),
        "accuracy": score("accuracy", y_true, y_score, y_pred),
        "balanced_accuracy": score("balanced_accuracy", y_true, y_score, y_pred),
        "macro_f1": score("macro_f1", y_true, y_score, y_pred),
        "weighted_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "roc_auc": score("roc_auc", y_true, y_score, y_pred, point.positive_index),
        "average_precision": average_precision(y_true, y_score, point.positive_index),
        "brier": brier_score(y_true, y_score),
        "ece": expected_calibration_error(y_true, y_score),
        "operating_point": point.to_dict(),
    }
    if point.kind != "argmax":
        # The usual decision (most probable class), for comparison with published accuracies.
        argmax = y_score.argmax(axis=1)
        result["argmax"] = {name: score(name, y_true, y_score, argmax) for name in ("accuracy", "balanced_accuracy", "macro_f1")}
    if result["roc_auc"] is None:
        roc_auc(y_true, y_score, notes)
    if len(class_names) == 2:
        positive = 1 if point.positive_index is None else point.positive_index
        positives, negatives = y_true == positive, y_true != positive
        result["sensitivity"] = float((y_pred[positives] == positive).mean()) if positives.any() else None
        result["specificity"] = float((y_pred[negatives] != positive).mean()) if negatives.any() else None
        result["positive_class"] = class_names[positive]
    report = skm.classification_report(y_true, y_pred, labels=labels, target_names=class_names,
                                       output_dict=True, zero_division=0)
    result["per_class"] = {name: {k: float(v) for k, v in report[name].items()} for name in class_names}
    never = [name for k, name in enumerate(class_names) if not (y_pred == k).any()]
    if never:
        notes.append(f"never predicted: {never}")
    matrix = skm.confusion_matrix(y_true, y_pred, labels=labels)
    result["confusion_matrix"] = matrix.tolist()
    result["most_confused"] = most_confused(matrix, class_names)
    value = result[primary_metric]
    interval = bootstrap_interval(primary_metric, y_true, y_score, point, bootstrap, seed) if bootstrap and value is not None else None
    result["primary"] = {"name": primary_metric, "value": value,
                         "low": None if interval is None else interval[0],
                         "high": None if interval is None else interval[1]}
    result["notes"] = notes
    return result


def multilabel_metrics(y_true, y_score, class_names: list[str], threshold: float = 0.5,
                       primary_metric: str = "roc_auc", bootstrap: int = 1000, seed: int = 0) -> dict:
    """Metrics of a multi-label split (one sigmoid per label; an all-zero row: no label).

    `accuracy` is scikit-learn's subset accuracy (every label right); `balanced_accuracy` is the
    mean over labels; ROC-AUC and average precision are per label (`per_label`) and their macro
    mean over the labels with both classes present. The confusion matrix is one 2x2 per label.

    Example:
        >>> multilabel_metrics([[1, 0], [0, 1]], [[.9, .2], [.3, .7]], ["a", "b"], bootstrap=0)["roc_auc"]
        1.0
    """
    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, float)
    if y_true.ndim != 2 or y_score.shape != y_true.shape or y_true.shape[1] != len(class_names):
        raise ValueError(
            f"Expected multi-label y_true and y_score of shape (n, {len(class_names)}). Received: "
            f"{y_true.shape} and {y_score.shape}"
        )
    y_pred = (y_score >= threshold).astype(int)
    notes: list[str] = []
    per_label = {}
    for k, name in enumerate(class_names):
        both = 0 < y_true[:, k].sum() < len(y_true)
        per_label[name] = {
            "roc_auc": float(skm.roc_auc_score(y_true[:, k], y_score[:, k])) if both else None,
            "average_precision": float(skm.average_precision_score(y_true[:, k], y_score[:, k])) if y_true[:, k].any() else None,
            "balanced_accuracy": float(skm.balanced_accuracy_score(y_true[:, k], y_pred[:, k])) if both else None,
        }
    undefined = [name for name, row in per_label.items() if row["roc_auc"] is None]
    if undefined:
        notes.append(f"roc_auc undefined for labels with one class only: {undefined}")

    def mean(key):
        values = [row[key] for row in per_label.values() if row[key] is not None]
        return float(np.mean(values)) if values else None

    def primary_of(t, s):
        if primary_metric == "roc_auc":
            values = [skm.roc_auc_score(t[:, k], s[:, k]) for k in range(t.shape[1]) if 0 < t[:, k].sum() < len(t)]
            return float(np.mean(values)) if values else None
        predicted = (s >= threshold).astype(int)
        if primary_metric == "accuracy":
            return float(skm.accuracy_score(t, predicted))
        if primary_metric == "macro_f1":
            return float(skm.f1_score(t, predicted, average="macro", zero_division=0))
        raise ValueError(f"{primary_metric!r} is not available for multi-label data; use roc_auc, accuracy or macro_f1")

    report = skm.classification_report(y_true, y_pred, target_names=class_names, output_dict=True, zero_division=0)
    result = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": mean("balanced_accuracy"),
        "macro_f1": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "roc_auc": mean("roc_auc"),
        "average_precision": mean("average_precision"),
        "brier": float(np.mean((y_score - y_true) ** 2)),
        "ece": float(np.mean([expected_calibration_error(y_true[:, k], np.stack([1 - y_score[:, k], y_score[:, k]], 1))
                              for k in range(len(class_names))])),
        "operating_point": {"kind": "threshold_per_label", "threshold": threshold},
        "per_label": per_label,
        "per_class": {name: {k: float(v) for k, v in report[name].items()} for name in class_names},
        "confusion_matrix": skm.multilabel_confusion_matrix(y_true, y_pred).tolist(),
        "most_confused": [],
    }
    value = primary_of(y_true, y_score)
    interval = None
    if bootstrap and value is not None:
        rng = np.random.default_rng(seed)
        values = [v for v in (primary_of(y_true[pick], y_score[pick])
                              for pick in (rng.integers(0, len(y_true), len(y_true)) for _ in range(bootstrap)))
                  if v is not None]
        if len(values) >= bootstrap / 2:
            interval = tuple(float(v) for v in np.percentile(values, [2.5, 97.5]))
    result["primary"] = {"name": primary_metric, "value": value, "low": None if interval is None else interval[0],
                         "high": None if interval is None else interval[1]}
    result["notes"] = notes
    return result
