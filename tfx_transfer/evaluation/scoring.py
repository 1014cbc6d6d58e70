"""Scoring images with a model as a run's evaluation does: batch by batch, optionally averaged over
test-time views (`tfx_transfer.data.augment.symmetric_view`).

Example:
    >>> scores = score_images(model, table, splits.test, (96, 96), views=4)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from tfx_transfer.console import Progress
from tfx_transfer.data.sources import ImageTable


def score_images(model, table: ImageTable, indices: np.ndarray, image_size, views: int = 1, verbose: int = 0) -> np.ndarray:
    """Scores `(len(indices), num_outputs)` of the images at `indices`: the mean over `views`
    symmetric views of each (`tfx_transfer.data.augment.symmetric_view`), batch by batch.

    With `verbose`, progress goes to standard error: Keras' bar on a terminal, elsewhere a plain line
    per tenth of the images (`tfx_transfer.console.Progress`)."""
    import tensorflow as tf

    from tfx_transfer.data.augment import symmetric_view
    from tfx_transfer.data.pipeline import make_dataset

    if len(indices) == 0:
        return np.zeros((0, int(model.output_shape[-1])), "float32")
    # All views of a batch go through the model in one call, so a batch holds 64 // views images:
    # with 64 images x 4 views of 300 px per call, a two-model ensemble's run peaked at 8.0 GB instead of 3.6.
    batch_size = max(1, 64 // views)
    dataset = make_dataset(table, indices, image_size, batch_size)
    progress = Progress(len(indices)) if verbose else None
    if views == 1:
        if progress is None or progress.interactive:
            return model.predict(dataset, verbose=1 if progress else 0)
        return model.predict(dataset, verbose=0, callbacks=[progress.keras_callback(batch_size)])
    scores, done = [], 0
    for images, _labels in dataset:
        # One batch holds every view of these images: [view 0 of all, view 1 of all, ...].
        stacked = tf.concat([symmetric_view(images, view) for view in range(views)], axis=0)
        viewed = np.asarray(model.predict_on_batch(stacked))
        scores.append(viewed.reshape(views, len(images), -1).mean(axis=0))
        done += len(images)
        if progress:
            progress.update(done)
    if progress:
        progress.close()
    return np.concatenate(scores).astype("float32")


def pooled_features(feature_model, table: ImageTable, indices: np.ndarray, image_size) -> np.ndarray:
    """`(len(indices), channels)` float16 pooled features of the images at `indices` (one view each):
    what drift and labelling selection measure distances on."""
    from tfx_transfer.data.pipeline import make_dataset

    if len(indices) == 0:
        return np.zeros((0, int(feature_model.output_shape[-1])), "float16")
    return np.asarray(feature_model.predict(make_dataset(table, indices, image_size, 64), verbose=0), "float16")
