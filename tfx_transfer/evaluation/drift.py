"""Has the line changed? The scores and features of a batch against the run's validation split.

Two checks, each a test with its figure:
- scores: a two-sample Kolmogorov-Smirnov test between the batch's scores (the positive class's
  probability, or the top class's) and the validation split's, with the largest gap between the two
  distributions (the KS statistic);
- features: the distance of each image to its nearest training image (cosine distance of pooled
  features), the batch's against the validation images' (which the model never trained on either),
  by the same two-sample test; shown as the share of batch images farther from every training image
  than 95% of validation images are (about 5% without a change).
Drift is declared when a test is significant at `ALPHA` and its effect is large enough to matter
(`MIN_KS_STATISTIC`), so a big batch does not flag a trifle.

Example:
    >>> rng = np.random.default_rng(0)
    >>> train, val, same = rng.normal(size=(300, 8)), rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    >>> scores = rng.uniform(size=(200, 1))
    >>> check_drift(scores, scores[::-1], train, val, same).drifted
    False
    >>> check_drift(scores, scores ** 3, train, val, same + 3).drifted
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tfx_transfer.evaluation.label_review import unit_rows

ALPHA = 1e-3
MIN_KS_STATISTIC = 0.15
#: The validation quantile of nearest-training distance beyond which an image counts as far.
FAR_QUANTILE = 0.95
#: Fewer images than this are not tested (no test has the power to say anything).
MIN_IMAGES = 20


@dataclass(frozen=True)
class DriftCheck:
    """The outcome (`drifted`) and every figure behind it; `text` says it in a sentence."""

    drifted: bool | None
    images: int
    score_ks_statistic: float | None
    score_p_value: float | None
    far_share: float | None
    far_expected: float
    feature_ks_statistic: float | None
    feature_p_value: float | None
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


def _score_column(scores: np.ndarray, positive_index: int | None) -> np.ndarray:
    scores = np.asarray(scores, float)
    if scores.ndim == 1:
        return scores
    return scores[:, positive_index] if positive_index is not None else scores.max(axis=1)


def nearest_distances(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine distance of every row of `features` to its nearest row of `reference`."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=1, metric="cosine").fit(unit_rows(reference))
    return index.kneighbors(unit_rows(features))[0][:, 0]


def check_drift(reference_scores, batch_scores, training_features, reference_features, batch_features,
                positive_index: int | None = None) -> DriftCheck:
    """The batch against the reference (the run's validation split); see the module documentation."""
    from scipy.stats import ks_2samp

    images = len(batch_scores)
    expected = 1.0 - FAR_QUANTILE
    if images < MIN_IMAGES:
        return DriftCheck(None, images, None, None, None, expected, None, None,
                          f"Drift not tested: {images} images (at least {MIN_IMAGES} are needed).")
    ks = ks_2samp(_score_column(batch_scores, positive_index), _score_column(reference_scores, positive_index))
    far_share = feature_ks = None
    if training_features is not None and len(training_features) and batch_features is not None:
        reference_distance = nearest_distances(reference_features, training_features)
        batch_distance = nearest_distances(batch_features, training_features)
        far_share = float((batch_distance > np.quantile(reference_distance, FAR_QUANTILE)).mean())
        # One-sided: a batch nearer to the training images than validation is (the training images
        # themselves, scored again) is no drift.
        feature_ks = ks_2samp(batch_distance, reference_distance, alternative="less")
    score_drift = ks.pvalue < ALPHA and ks.statistic >= MIN_KS_STATISTIC
    feature_drift = feature_ks is not None and feature_ks.pvalue < ALPHA and feature_ks.statistic >= MIN_KS_STATISTIC
    drifted = bool(score_drift or feature_drift)
    figures = (f"scores: KS statistic {ks.statistic:.2f} (p = {ks.pvalue:.2g})"
               + ("" if far_share is None else f"; features: {far_share:.0%} of the images are far from every "
                  f"training image, about {expected:.0%} expected (KS statistic {feature_ks.statistic:.2f}, "
                  f"p = {feature_ks.pvalue:.2g})"))
    if drifted:
        what = " and ".join(part for part, flagged in (("scores", score_drift), ("image features", feature_drift))
                            if flagged)
        cause = ("The line may have changed (a new camera, lighting, product)" if feature_drift else
                 "Either the images changed or the share of each class did (a run of defects, a batch of one class)")
        text = (f"DRIFT: this batch differs from the run's validation images in its {what} ({figures}). {cause}: "
                "check a sample by eye, and recalibrate on a labelled sample from the line (tfx-transfer recalibrate "
                "RUN_DIR --data SAMPLE) before trusting the decisions.")
    else:
        text = f"No drift: this batch looks like the run's validation images ({figures})."
    return DriftCheck(drifted, images, float(ks.statistic), float(ks.pvalue), far_share, expected,
                      None if feature_ks is None else float(feature_ks.statistic),
                      None if feature_ks is None else float(feature_ks.pvalue), text)
