"""Which unlabelled images to label next: uncertain at the run's operating point, and unlike each other.

The top-N most uncertain images are often near-copies of one another (a batch of one part under one
light), and labelling ten of them teaches what one would. `select_for_labelling` picks greedily the
image with the highest uncertainty times distance (in feature space) to everything already chosen
or labelled, so each pick is both doubtful and new (a weighted k-centre greedy).

Example:
    >>> from tfx_transfer.evaluation.metrics import OperatingPoint
    >>> probabilities = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.45, 0.55]])
    >>> features = np.array([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0], [0.0, 1.0]])
    >>> select_for_labelling(probabilities, features, 2).tolist()  # image 1 is image 0 again
    [0, 3]
"""

from __future__ import annotations

import numpy as np

from tfx_transfer.evaluation.label_review import unit_rows


def uncertainty(probabilities: np.ndarray, point=None) -> np.ndarray:
    """How close each image is to the decision, in [0, 1] (1 = on it): for a threshold on the positive
    class, the distance of its probability to the threshold; for argmax, one minus the margin of the
    two most probable classes.

    Example:
        >>> uncertainty(np.array([[0.5, 0.5], [1.0, 0.0]])).tolist()
        [1.0, 0.0]
    """
    probabilities = np.asarray(probabilities, float)
    if point is not None and getattr(point, "threshold", None) is not None and point.kind != "argmax":
        threshold = float(point.threshold)
        positive = probabilities[:, point.positive_index]
        return 1.0 - np.abs(positive - threshold) / max(threshold, 1.0 - threshold)
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def _cosine_distance_to(features: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - features @ chosen.T, 0.0, 2.0).min(axis=1)


def select_for_labelling(probabilities: np.ndarray, features: np.ndarray, count: int, point=None,
                         labelled_features: np.ndarray | None = None) -> np.ndarray:
    """Indices of the `count` images to label first, in order (see the module documentation).

    Args:
        probabilities: `(n, classes)` calibrated probabilities of the unlabelled images.
        features: `(n, d)` their pooled backbone features.
        count: How many to choose (all of them at most).
        point: The run's `OperatingPoint` (its threshold defines uncertainty); None: argmax.
        labelled_features: Features of images already labelled (the run's training sample): images
            like them count as known.
    """
    if count < 1:
        raise ValueError(f"--select needs a positive number of images to choose; received {count}.")
    weight = np.clip(uncertainty(probabilities, point), 0.0, 1.0) + 1e-6  # a sure image can still be picked last
    unit = unit_rows(features)
    if labelled_features is not None and len(labelled_features):
        distance = _cosine_distance_to(unit, unit_rows(labelled_features))
    else:
        distance = np.ones(len(unit))
    chosen: list[int] = []
    available = np.ones(len(unit), bool)
    for _ in range(min(int(count), len(unit))):
        priority = np.where(available, weight * distance, -np.inf)
        pick = int(np.argmax(priority))
        chosen.append(pick)
        available[pick] = False
        distance = np.minimum(distance, _cosine_distance_to(unit, unit[pick:pick + 1]))
    return np.array(chosen, int)
