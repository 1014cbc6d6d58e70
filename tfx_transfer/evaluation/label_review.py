"""Reviewing the labels of a data set: likely label errors, near-duplicates and outliers.

The toolkit's part is what cleanlab needs and does not do: out-of-fold predicted probabilities for
every image, cross-fitted in folds that never split a group (a patient, a track, a module), so no
image is scored by a model that saw it or its twin. Label issues are cleanlab's (confident
learning: `cleanlab.filter.find_label_issues`, ranked by self-confidence), outliers are cleanlab's
feature-space out-of-distribution score; near-duplicates are pairs whose features are far closer
than images usually are to their nearest neighbour (byte-identical files are found earlier, by the
scan). Everything takes a features array: the frozen backbone's pooled features cost seconds.

Example:
    >>> rng = np.random.default_rng(0)
    >>> labels = np.arange(200) % 2
    >>> features = rng.normal(size=(200, 8)) + 3 * labels[:, None]
    >>> labels[:6] = 1 - labels[:6]  # six wrong labels
    >>> folds = review_folds(labels, folds=5, seed=0)
    >>> probabilities = out_of_fold_probabilities(features, labels, folds, seed=0)
    >>> issues = find_label_issues(labels, probabilities)
    >>> sorted(np.argsort(issues.label_quality)[:6].tolist())  # the six least likely given labels
    [0, 1, 2, 3, 4, 5]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A pair is a near-duplicate when its feature distance is below this share of the median distance of
#: an image to its nearest neighbour (cosine distance on L2-normalised features).
NEAR_DUPLICATE_SHARE = 0.1
#: An image is an outlier when its outlier score lies this many robust standard deviations (1.4826
#: median absolute deviations) below the median score.
OUTLIER_DEVIATIONS = 4.0


def _require_cleanlab():
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        raise ImportError("Reviewing labels needs cleanlab: pip install 'tfx_transfer[review]' (or cleanlab==2.9.0; "
                          "`make install` does it).") from None


def review_folds(labels: np.ndarray, groups: np.ndarray | None = None, folds: int = 5, seed: int = 0) -> np.ndarray:
    """The fold (0 to `folds` - 1) of every image: stratified by label, and by group when there are groups
    (every image of a group in one fold, as the splits keep groups whole).

    Raises:
        ValueError: when a class has fewer images (or groups) than folds, or `folds` is below 2.

    Example:
        >>> folds = review_folds(np.array([0, 1] * 5), folds=5, seed=0)
        >>> np.bincount(folds).tolist(), [sorted(np.array([0, 1] * 5)[folds == k].tolist()) for k in range(2)]
        ([2, 2, 2, 2, 2], [[0, 1], [0, 1]])
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    if int(folds) < 2:
        raise ValueError(f"Cross-fitting needs at least 2 folds; received folds={folds}. Use --folds 5 (the default).")
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise ValueError(f"Reviewing labels needs at least two classes among the images; received {len(present)} "
                         f"(class index {present.tolist()}).")
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        per_class = {int(c): len(np.unique(groups[labels == c])) for c in present}
    else:
        per_class = {int(c): int(counts[c]) for c in present}
    smallest = min(per_class, key=per_class.get)
    if per_class[smallest] < folds:
        unit = "groups" if groups is not None else "images"
        raise ValueError(f"{folds}-fold cross-fitting needs at least {folds} {unit} of every class; class index "
                         f"{smallest} has {per_class[smallest]}. Use --folds {max(2, per_class[smallest])} or fewer, "
                         "or add images of that class.")
    fold_of = np.empty(len(labels), int)
    if groups is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(labels, labels)
    else:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(labels, labels, groups)
    for fold, (_, held_out) in enumerate(splitter):
        fold_of[held_out] = fold
    return fold_of


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, seed: int = 0,
                              num_classes: int | None = None) -> np.ndarray:
    """`(n, num_classes)` probabilities of every image from a model fitted without its fold: a logistic
    regression on standardised features (the linear probe of `tfx_transfer.experiments.probe`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    num_classes = int(num_classes or labels.max() + 1)
    probabilities = np.zeros((len(labels), num_classes))
    for fold in np.unique(folds):
        held_out = folds == fold
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
        model.fit(features[~held_out], labels[~held_out])
        probabilities[np.ix_(held_out, model.classes_)] = model.predict_proba(features[held_out])
    return probabilities


@dataclass(frozen=True)
class LabelIssues:
    """cleanlab's verdict on every image.

    Attributes:
        is_issue: Whether the given label is likely wrong (confident learning, pruned by noise rate).
        label_quality: The out-of-fold probability of the given label (self-confidence; low = suspect).
        suggested: The most probable class out of fold.
        ranked: Indices of the issues, most likely wrong first.
    """

    is_issue: np.ndarray
    label_quality: np.ndarray
    suggested: np.ndarray
    ranked: np.ndarray


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> LabelIssues:
    """Likely label errors from out-of-fold probabilities, by cleanlab (see the module documentation)."""
    _require_cleanlab()
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels)
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    is_issue = cleanlab_issues(labels, probabilities, filter_by="prune_by_noise_rate")
    ranked = np.flatnonzero(is_issue)[np.argsort(quality[is_issue], kind="stable")]
    return LabelIssues(is_issue, quality, probabilities.argmax(axis=1), ranked)


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (float64): what cosine distances are computed on."""
    features = np.asarray(features, "float64")
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def near_duplicates(features: np.ndarray, share: float = NEAR_DUPLICATE_SHARE) -> list[tuple[int, int, float]]:
    """`(i, j, distance)` for pairs of images whose cosine feature distance is below `share` of the
    median nearest-neighbour distance, closest first (each pair once, `i < j`).

    Example:
        >>> rng = np.random.default_rng(0); features = rng.normal(size=(50, 16))
        >>> features[7] = features[3] + 1e-4
        >>> [(i, j) for i, j, _ in near_duplicates(features)]
        [(3, 7)]
    """
    from sklearn.neighbors import NearestNeighbors

    if len(features) < 3:
        return []
    unit = unit_rows(features)
    neighbours = min(6, len(unit))
    distances, indices = NearestNeighbors(n_neighbors=neighbours, metric="cosine").fit(unit).kneighbors(unit)
    # Row i's first neighbour is i itself, unless an exact twin shares its place.
    nearest = np.where(indices[:, 0] == np.arange(len(unit)), distances[:, 1], distances[:, 0])
    limit = share * float(np.median(nearest))
    pairs = {}
    for i in range(len(unit)):
        for distance, j in zip(distances[i], indices[i]):
            if j != i and distance <= limit:
                pairs[(int(min(i, j)), int(max(i, j)))] = max(float(distance), 0.0)
    return sorted(((i, j, d) for (i, j), d in pairs.items()), key=lambda item: (item[2], item[0], item[1]))


def outlier_scores(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(scores, is_outlier)`: cleanlab's feature-space outlier score of every image (in (0, 1]; low =
    atypical of the data set) and whether it lies `OUTLIER_DEVIATIONS` robust deviations below the median."""
    _require_cleanlab()
    from cleanlab.outlier import OutOfDistribution

    unit = unit_rows(features)
    scores = OutOfDistribution(params={"k": min(10, len(unit) - 1)}).fit_score(features=unit, verbose=False)
    median = float(np.median(scores))
    spread = 1.4826 * float(np.median(np.abs(scores - median)))
    return scores, scores < median - OUTLIER_DEVIATIONS * max(spread, 1e-12)
