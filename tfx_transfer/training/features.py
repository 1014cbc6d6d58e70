"""Pooled backbone features cached on disk: what makes feature extraction cost seconds.

The cache key is built from what computes the features and what they are computed on: the feature
extractor's own Keras config (backbone architecture, input size, grayscale, preprocessing mode and
weights source, pooling, dtype policy) with a fingerprint of its weights, the files with their sizes
and modification times, and the augmentation, view and seed of augmented views. Nothing is a
hand-picked list of settings, so a new model option can never be left out of the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import keras
import numpy as np

from tfx_transfer.console import keras_verbose
from tfx_transfer.data.augment import AugmentPolicy
from tfx_transfer.data.pipeline import make_dataset
from tfx_transfer.models.classifier import feature_extractor
from tfx_transfer.data.sources import ImageTable
from tfx_transfer.config.paths import cache_dir


def data_key(table: ImageTable, indices: np.ndarray) -> str:
    """A digest of the rows: labels, files (path, size, modification time) or pixels, and ROIs."""
    digest = hashlib.sha1()
    digest.update(np.asarray(table.labels[indices]).tobytes())
    if table.paths is not None:
        for path in table.paths[indices]:
            stat = os.stat(path)
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    else:
        digest.update(np.ascontiguousarray(table.arrays[indices]).tobytes())
    if table.rois is not None:
        digest.update(np.asarray(table.rois[indices]).tobytes())
    return digest.hexdigest()


def model_key(extractor: keras.Model) -> str:
    """A digest of a feature extractor: its config and every weight's bytes.

    Two extractors share a key exactly when they compute the same function: the same architecture
    and settings (including the dtype policy and the preprocessing) with the same weights.
    """
    text = json.dumps(extractor.get_config(), sort_keys=True, default=str)
    # Keras numbers unnamed inputs per session (input_layer, input_layer_1, ...), and whether a
    # layer trains does not change what it computes in inference.
    text = re.sub(r'"input_layer_\d+"', '"input_layer"', text)
    text = re.sub(r'"trainable": (true|false)', '"trainable": null', text)
    digest = hashlib.sha1(text.encode())
    for weight in extractor.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def extract_features(
    classifier, table: ImageTable, indices: np.ndarray, config,
    augment: AugmentPolicy | None = None, view: int = 0, verbose: int = 1,
) -> np.ndarray:
    """Pooled backbone features of the rows `indices`, cached on disk by everything they depend
    on (see the module documentation)."""
    extractor = feature_extractor(classifier)
    key = hashlib.sha1(json.dumps({
        "model": model_key(extractor), "data": data_key(table, indices), "augment": repr(augment), "view": view,
        # Augmented views are drawn from the seed; unaugmented features do not depend on it (random
        # weights drawn from the seed are in the model's fingerprint).
        "seed": config.seed if augment is not None else None,
    }, sort_keys=True).encode()).hexdigest()
    path = cache_dir() / "features" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    dataset = make_dataset(
        table, indices, config.image_size, batch_size=64, augment=augment, seed=config.seed * 7_919 + view
    )
    features = extractor.predict(dataset, verbose=keras_verbose(verbose))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(temporary, features)
    os.replace(temporary, path)
    return features


def feature_data(classifier, table, splits, config, verbose):
    """Training features (one set per augmented view) with their row indices, and validation features."""
    views = []
    augment = config.augment if config.augmented_views > 0 else None
    for view in range(max(config.augmented_views, 1)):
        views.append(extract_features(classifier, table, splits.train, config, augment, view, verbose))
    train_features = np.concatenate(views)
    train_indices = np.tile(splits.train, len(views))
    val_features = extract_features(classifier, table, splits.val, config, None, 0, verbose)
    return train_features, train_indices, val_features
