"""Measures the training engine: the cached-feature fast path and the toolkit's own overhead.

Prints, measured in this one run (real ELPV images, offline ImageNet MobileNetV2, 96 px):
  1. images/s of a head epoch on cached pooled features vs an epoch with the frozen backbone in
     the graph (same head, same images);
  2. images/s of toolkit fine-tuning (per-epoch fit, seeded data stream) vs a plain `model.fit`
     of the same Keras model, same unfrozen blocks, same data.

Usage: python bench/bench_training.py [--images 2624]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TFX_TRANSFER_OFFLINE", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfx_transfer.data.pipeline import make_dataset  # noqa: E402
from tfx_transfer.models.classifier import build_classifier, feature_extractor, unfreeze_top_blocks  # noqa: E402
from tfx_transfer.data.sources import from_arrays  # noqa: E402
from tfx_transfer.data.splits import Splits  # noqa: E402
from tfx_transfer.training.train import TrainConfig, train  # noqa: E402

SIZE = (96, 96)


def timed_epoch(model, data, count, epochs=2):
    model.fit(data, epochs=1, verbose=0)  # tracing and warm-up
    start = time.perf_counter()
    model.fit(data, epochs=epochs, verbose=0)
    return count * epochs / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2624)
    args = parser.parse_args()
    from elpv_dataset.utils import load_dataset

    images, probabilities, _ = load_dataset()
    count = min(args.images, len(images))
    table = from_arrays(images[:count, ..., None], (probabilities[:count] >= 0.5).astype(int), ["functional", "defective"])
    indices = np.arange(count)
    data = make_dataset(table, indices, SIZE, batch_size=32, cache="memory")
    for _ in data:  # fill the decode cache so both sides start from memory
        pass

    keras.utils.set_random_seed(0)
    classifier = build_classifier("mobilenet_v2", 2, "imagenet", SIZE)
    head = classifier.get_layer("head")
    features = feature_extractor(classifier).predict(data, verbose=0)
    head.compile("adam", "sparse_categorical_crossentropy")
    # As the toolkit feeds it: one tf.data pipeline over the cached arrays.
    cached = tf.data.Dataset.from_tensor_slices((features, table.labels)).batch(32).prefetch(tf.data.AUTOTUNE)
    cached_rate = timed_epoch(head, cached, count, epochs=5)
    classifier.compile("adam", "sparse_categorical_crossentropy")
    in_graph_rate = timed_epoch(classifier, data, count, epochs=1)
    print(f"head epoch: cached features {cached_rate:,.0f} img/s, frozen backbone in graph "
          f"{in_graph_rate:,.0f} img/s, ratio {cached_rate / in_graph_rate:.0f}x (target >= 20x)")

    keras.utils.set_random_seed(0)
    plain = build_classifier("mobilenet_v2", 2, "imagenet", SIZE)
    unfreeze_top_blocks(plain, 3)
    plain.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    train_data = make_dataset(table, indices, SIZE, batch_size=32, shuffle=True, cache="memory")
    validation = make_dataset(table, indices[:64], SIZE, batch_size=32, cache="memory")
    plain.fit(train_data, validation_data=validation, epochs=1, verbose=0)  # tracing, cache fill
    start = time.perf_counter()
    plain.fit(train_data, validation_data=validation, epochs=2, verbose=0)
    plain_rate = count * 2 / (time.perf_counter() - start)

    splits = Splits(train=indices, val=indices[:64], test=indices[:64])
    config = TrainConfig(strategy="fine_tune", image_size=SIZE, batch_size=32, epochs=1, fine_tune_epochs=3,
                         unfreeze_blocks=3, patience=10, warmup_epochs=0)
    result = train(table, splits, config, verbose=0)
    # The first fine-tune epoch traces the train function and fills the cache, like the plain
    # run's warm-up epoch; the two after it are timed.
    seconds = [h["seconds"] for h in result.history if h["phase"] == "fine_tune"][1:]
    toolkit_rate = count * len(seconds) / sum(seconds)
    print(f"fine-tune (validation on 64 images each epoch): toolkit {toolkit_rate:,.0f} img/s, plain "
          f"model.fit {plain_rate:,.0f} img/s, ratio {toolkit_rate / plain_rate:.2f} (target >= 0.90)")


if __name__ == "__main__":
    main()
