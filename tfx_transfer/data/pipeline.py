"""tf.data input pipelines: from an `ImageTable` to batches of raw pixels, labels and sample weights.

A pipeline decodes and resizes in parallel (TensorFlow's own decoders for PNG/JPEG/BMP/GIF,
Pillow for the rest), optionally caches the decoded uint8 images (in memory or in a file; float32
would need 4x the memory), shuffles with a seed, augments per image outside the model, batches and
prefetches. It streams: without a memory cache, a data set larger than memory trains.

Bad files never stop a run: `drop_unreadable` decodes every file once before training (the result
is cached), leaves out the unusable ones with a warning naming each, and records them in
`ImageTable.skipped`.

Class imbalance: `fit(class_weight=...)` is unreliable with tf.data in several TF versions
(tensorflow #33550, #40457), so the pipeline emits a per-example sample weight instead, and can
oversample minority classes. Training data multiplies it by the table's per-image `weights` (how
sure the annotators were of each label); evaluation data stays unweighted.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfx_transfer.data.augment import AugmentPolicy, augment_image
from tfx_transfer.data.images import NATIVE_DECODER, read_image, scan_images, warn_skipped
from tfx_transfer.data.sources import ImageTable

AUTOTUNE = tf.data.AUTOTUNE


def drop_unreadable(table: ImageTable, scan_cache: str | os.PathLike | None = None) -> ImageTable:
    """Decodes every file once; returns the table without unusable files, listed in `skipped`.

    Args:
        table: Images from a source.
        scan_cache: Optional JSON file that remembers each file's result (path, size, mtime).

    Raises:
        ValueError: if no file at all can be read.

    Example:
        >>> clean = drop_unreadable(from_folder("data/line3"))  # doctest: +SKIP
        >>> clean.skipped  # doctest: +SKIP
        [('data/line3/good/broken.png', 'OSError: image file is truncated')]
    """
    if table.paths is None:
        return table
    result = scan_images(list(table.paths), cache_file=scan_cache)
    if not result.ok.any():
        raise ValueError(
            f"None of the {len(table)} files of {table.source} could be read as an image. First "
            f"problems: {result.problems[:3]}"
        )
    warn_skipped(result.problems, stacklevel=2)
    clean = table.subset(np.flatnonzero(result.ok))
    return replace(
        clean,
        skipped=list(table.skipped) + result.problems,
        decoders=result.decoders[result.ok],
        image_sizes=result.sizes[result.ok],
    )


def class_weights(labels: np.ndarray, num_classes: int, mode: str | dict | None, class_names: list[str] | None = None) -> np.ndarray:
    """Weight per class: `"balanced"` (n / (classes * count), as scikit-learn), a dict by class
    name or index, or None (all ones).

    Example:
        >>> class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
        array([0.66666667, 2.        ])
    """
    if mode is None:
        return np.ones(num_classes)
    if np.ndim(labels) == 2:
        raise ValueError(
            f"class_weight={mode!r} is for single-label data; this data is multi-label. Leave "
            "class_weight unset (a per-label pos_weight is not supported yet)."
        )
    if mode == "balanced":
        counts = np.bincount(labels, minlength=num_classes).astype(float)
        return np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    if isinstance(mode, dict):
        weights = np.ones(num_classes)
        for key, value in mode.items():
            index = class_names.index(key) if isinstance(key, str) and class_names and key in class_names else key
            if not isinstance(index, (int, np.integer)) or not 0 <= index < num_classes:
                raise ValueError(
                    f"class_weight key {key!r} is not a class. Expected one of {class_names or list(range(num_classes))}."
                )
            weights[index] = float(value)
        return weights
    raise ValueError(f"class_weight must be 'balanced', a dict or None. Received: {mode!r}")


def oversample_indices(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices that repeat minority-class rows (drawn with a seed) until every class has as many
    rows as the largest one.

    Example:
        >>> np.bincount(np.array([0, 0, 0, 1])[oversample_indices(np.array([0, 0, 0, 1]))])
        array([3, 3])
    """
    if np.ndim(labels) == 2:
        raise ValueError("oversample is for single-label data; this data is multi-label.")
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    target = counts.max()
    chosen = []
    for label, count in enumerate(counts):
        members = np.flatnonzero(labels == label)
        if count == 0:
            continue
        extra = rng.choice(members, size=target - count, replace=True) if target > count else []
        chosen.append(np.concatenate([members, np.asarray(extra, dtype=int)]))
    return np.sort(np.concatenate(chosen))


def _decode_with_pillow(path, roi):
    roi = tuple(int(v) for v in roi)
    return read_image(path.decode("utf-8"), None if roi[0] < 0 else roi)


def _decoder_fn(decoders: set[str], with_rois: bool, image_size, all_at_size: bool):
    """Builds the per-file decode function. Choices known in Python (all files native, no ROIs)
    are made here, not with `tf.cond` per image: tf.data's per-element overhead is the cost that
    matters for small images."""

    def native(path, roi):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        if not with_rois:
            return image
        # A box of -1s (an image without one, beside images with boxes) keeps the whole image, as Pillow's path does.
        return tf.cond(roi[0] >= 0, lambda: image[roi[1] : roi[3] + 1, roi[0] : roi[2] + 1], lambda: image)

    def pillow(path, roi):
        image = tf.numpy_function(_decode_with_pillow, [path, roi], tf.uint8, stateful=False)
        return tf.ensure_shape(image, [None, None, 3])

    def decode(path, decoder, roi, label, weight):
        if decoders == {NATIVE_DECODER}:
            image = native(path, roi)
        elif NATIVE_DECODER not in decoders:
            image = pillow(path, roi)
        else:
            image = tf.cond(tf.equal(decoder, NATIVE_DECODER), lambda: native(path, roi), lambda: pillow(path, roi))
        if all_at_size:  # known from the scan: no resize op at all
            return tf.ensure_shape(image, (*image_size, 3)), label, weight
        return resize_image(image, image_size), label, weight

    return decode


def resize_image(image, image_size):
    """Resizes to `image_size` as uint8; images already that size pass through untouched (an
    antialiased resize costs about 3x the PNG decode itself)."""

    def resize():
        resized = tf.image.resize(image, image_size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], image_size[0]), tf.equal(shape[1], image_size[1]))
    return tf.ensure_shape(tf.cond(same, lambda: tf.cast(image, tf.uint8), resize), (*image_size, 3))


def make_dataset(
    table: ImageTable,
    indices: np.ndarray | None = None,
    image_size: tuple[int, int] = (224, 224),
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    augment: AugmentPolicy | None = None,
    cache: str | os.PathLike | None = None,
    class_weight: str | dict | None = None,
    oversample: bool = False,
    drop_remainder: bool = False,
    image_weights: bool = False,
) -> tf.data.Dataset:
    """Builds the tf.data pipeline for the rows `indices` of `table`.

    Args:
        table: Images (paths or arrays), after `drop_unreadable`.
        indices: Rows to use (a split); all rows by default.
        image_size: `(height, width)` every image is resized to.
        batch_size: Images per batch.
        shuffle: Shuffle every epoch (seeded).
        seed: Seed for shuffling, oversampling and augmentation.
        augment: Policy applied per image after the cache; None for none.
        cache: `"memory"`, a file path for a disk cache, or None (stream from disk every epoch).
        class_weight: Emit per-example sample weights: `"balanced"`, a dict, or None.
        oversample: Repeat minority-class rows up to the largest class.
        drop_remainder: Drop the last incomplete batch.
        image_weights: Multiply the sample weights by the table's per-image `weights` (training
            data; evaluation data is usually left unweighted).

    Returns:
        A dataset of `(images, labels)` or `(images, labels, sample_weights)`; images are uint8
        raw pixels (every model the toolkit builds casts them itself), labels int32.

    Example:
        >>> dataset = make_dataset(table, splits.train, (96, 96), batch_size=32, shuffle=True,
        ...                        augment=make_policy("defects"), class_weight="balanced")  # doctest: +SKIP
    """
    indices = _check_indices(table, indices)
    if oversample:
        indices = indices[oversample_indices(table.labels[indices], seed)]
    image_size = tuple(int(side) for side in image_size)
    if shuffle and cache != "memory":
        # Without a memory cache, shuffle the cheap file names before decoding (a full shuffle).
        indices = indices[np.random.default_rng(seed).permutation(len(indices))]
    dataset = _decoded(table, indices, image_size, class_weight, cache, image_weights)
    if shuffle and cache == "memory":
        dataset = dataset.shuffle(min(len(indices), 8192), seed=seed, reshuffle_each_iteration=True)
    augment_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return _finish(dataset, augment, augment_seeds, image_size, batch_size, drop_remainder,
                   _weighted(table, class_weight, image_weights))


def _check_indices(table: ImageTable, indices) -> np.ndarray:
    indices = np.arange(len(table)) if indices is None else np.asarray(indices, dtype=int)
    if len(indices) == 0:
        raise ValueError("make_dataset got no rows: the split is empty. Check the split fractions.")
    return indices


def sample_weights(table: ImageTable, indices: np.ndarray, class_weight: str | dict | None = None,
                   image_weights: bool = True) -> np.ndarray:
    """The training weight of rows `indices`: their class weight times the table's per-image weight.

    Example:
        >>> sample_weights(table, splits.train, "balanced")  # doctest: +SKIP
        array([0.72, 1.63, ...], dtype=float32)
    """
    labels = table.labels[indices]
    if table.multi_label:
        class_weights(labels, table.num_classes, class_weight)  # refuses class weights for multi-label
        weights = np.ones(len(labels))
    else:
        weights = class_weights(labels, table.num_classes, class_weight, table.class_names)[labels]
    if image_weights and table.weights is not None:
        weights = weights * table.weights[indices]
    return weights.astype("float32")


def _weighted(table: ImageTable, class_weight, image_weights: bool) -> bool:
    return class_weight is not None or (image_weights and table.weights is not None)


def _decoded(table: ImageTable, indices: np.ndarray, image_size, class_weight, cache,
             image_weights: bool = False) -> tf.data.Dataset:
    """Rows `indices` decoded and resized to uint8, with labels and sample weights, cached."""
    labels = table.labels[indices].astype("float32" if table.multi_label else "int32")
    labels_and_weights = (labels, sample_weights(table, indices, class_weight, image_weights))
    if table.arrays is not None:
        arrays = table.arrays[indices]
        if arrays.shape[-1] == 1:
            arrays = np.repeat(arrays, 3, axis=-1)
        dataset = tf.data.Dataset.from_tensor_slices((arrays, *labels_and_weights)).map(
            lambda image, label, weight: (resize_image(image, image_size), label, weight),
            num_parallel_calls=AUTOTUNE,
        )
    else:
        # Unscanned tables go through Pillow, which reads every format.
        decoders = table.decoders if table.decoders is not None else np.full(len(table), "pil", dtype=object)
        rois = table.rois if table.rois is not None else np.full((len(table), 4), -1, dtype=int)
        slices = (
            [str(p) for p in table.paths[indices]],
            [str(d) for d in decoders[indices]],
            rois[indices].astype("int32"),
            *labels_and_weights,
        )
        all_at_size = (
            table.rois is None
            and table.image_sizes is not None
            and bool((table.image_sizes[indices] == np.array(image_size)).all())
        )
        decode = _decoder_fn(set(slices[1]), table.rois is not None, image_size, all_at_size)
        dataset = tf.data.Dataset.from_tensor_slices(slices).map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache == "memory":
        return dataset.cache()
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        return dataset.cache(str(cache))
    return dataset


def _finish(dataset, augment, augment_seeds, image_size, batch_size, drop_remainder, with_weights):
    if augment is not None and not augment.is_identity:
        dataset = tf.data.Dataset.zip((dataset, augment_seeds.batch(2))).map(
            lambda element, pair: _augment(element, pair, augment, image_size),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=True)
    if not with_weights:
        dataset = dataset.map(lambda images, labels, weights: (images, labels), num_parallel_calls=AUTOTUNE)
    # Batches stay uint8 (a quarter of float32's bytes in the prefetch buffer and on the way to
    # the GPU); the model's first layer, ImagePreprocessing, casts to float32.
    return dataset.prefetch(AUTOTUNE)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919) % (2**31 - 1)


class EpochStream:
    """Training data whose order and augmentation depend only on `(seed, epoch)`.

    `stream(epoch)` returns that epoch's dataset. The decoded images are cached once (when `cache`
    is set) and reused by every epoch, so a run resumed at epoch 7 sees exactly the batches an
    uninterrupted run sees at epoch 7.

    Example:
        >>> stream = EpochStream(table, splits.train, (96, 96), batch_size=32, seed=0, cache="memory")  # doctest: +SKIP
        >>> model.fit(stream(3), initial_epoch=3, epochs=4)  # doctest: +SKIP
    """

    def __init__(self, table: ImageTable, indices, image_size, batch_size: int = 32, seed: int = 0,
                 augment: AugmentPolicy | None = None, cache=None, class_weight=None, oversample: bool = False):
        self.table = table
        self.indices = _check_indices(table, indices)
        if oversample:
            self.indices = self.indices[oversample_indices(table.labels[self.indices], seed)]
        self.image_size = tuple(int(side) for side in image_size)
        self.batch_size, self.seed, self.augment = batch_size, seed, augment
        self.cache, self.class_weight = cache, class_weight
        self._cached = (_decoded(table, self.indices, self.image_size, class_weight, cache, image_weights=True)
                        if cache is not None else None)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def drop_remainder(self) -> bool:
        """A last, smaller batch would make Keras trace the training step a second time (tens of
        seconds for a large backbone on a CPU); with at least two full batches it is dropped. The
        order changes every epoch, so every image is still seen."""
        return len(self.indices) >= 2 * self.batch_size

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(len(self.indices), self.batch_size)
        return full if self.drop_remainder else full + (rest > 0)

    def __call__(self, epoch: int) -> tf.data.Dataset:
        seed = _epoch_seed(self.seed, epoch)
        if self._cached is None:
            order = self.indices[np.random.default_rng(seed).permutation(len(self.indices))]
            dataset = _decoded(self.table, order, self.image_size, self.class_weight, None, image_weights=True)
        else:
            dataset = self._cached.shuffle(min(len(self.indices), 8192), seed=seed, reshuffle_each_iteration=False)
        seeds = tf.data.Dataset.random(seed=seed)
        return _finish(dataset, self.augment, seeds, self.image_size, self.batch_size, self.drop_remainder,
                       _weighted(self.table, self.class_weight, image_weights=True))


def _augment(element, pair, policy, image_size):
    image, label, weight = element
    augmented, label = augment_image(image, label, policy, pair)
    augmented = tf.ensure_shape(augmented, (*image_size, 3))
    return tf.cast(tf.round(augmented), tf.uint8), label, weight
