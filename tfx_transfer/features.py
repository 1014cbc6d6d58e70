"""Pooled backbone features cached on disk: what makes feature extraction cost seconds.

The cache key holds everything the features depend on (backbone, weights source, image size,
grayscale, pooling, the files with their sizes and modification times, augmentation and view, and
the seed where it matters), so a changed file or setting never reuses stale features.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from tfx_transfer.augment import AugmentPolicy
from tfx_transfer.data import make_dataset
from tfx_transfer.model import feature_extractor, weights_info
from tfx_transfer.sources import ImageTable
from tfx_transfer.weights import cache_dir


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


def extract_features(
    classifier, table: ImageTable, indices: np.ndarray, config,
    augment: AugmentPolicy | None = None, view: int = 0, verbose: int = 1,
) -> np.ndarray:
    """Pooled backbone features of the rows `indices`, cached on disk by everything they depend
    on (backbone, weights source, image size, pooling, the files, augmentation and view, and the
    seed when the weights are random or the images augmented)."""
    source = weights_info(classifier).source
    key = hashlib.sha1(json.dumps({
        "backbone": config.backbone, "weights": source,
        "image_size": list(config.image_size), "data": data_key(table, indices),
        "augment": repr(augment), "view": view, "grayscale": config.grayscale,
        "pooling": config.pooling,
        # Pretrained and unaugmented, the seed changes nothing: seeds of a comparison share the
        # features. Random weights are drawn from the seed, and so are augmentations.
        "seed": config.seed if augment is not None or source == "random" else None,
    }, sort_keys=True).encode()).hexdigest()
    path = cache_dir() / "features" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    dataset = make_dataset(
        table, indices, config.image_size, batch_size=64, augment=augment, seed=config.seed * 7_919 + view
    )
    features = feature_extractor(classifier).predict(dataset, verbose=verbose)
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
