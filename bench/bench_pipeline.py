"""Measures the tf.data pipeline against a plain Pillow loop, and its cost in a training epoch.

Prints, measured in this one run:
  1. decode throughput: pipeline images/s vs a plain PIL loop over the same 2,000 PNG files (96 px,
     real ELPV solar-cell images);
  2. time of a MobileNetV2 training epoch fed by the pipeline from disk vs from in-memory tensors.

Usage: python bench/bench_pipeline.py [--images 2000] [--size 96]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from tfx_transfer.data.pipeline import drop_unreadable, make_dataset  # noqa: E402
from tfx_transfer.data.sources import load_source  # noqa: E402


def write_pngs(root: Path, count: int, size: int) -> None:
    """Real images: ELPV solar cells (grey, 300 px) resized to `size`, as 3-channel PNG files."""
    from elpv_dataset.utils import load_dataset

    images, probabilities, _ = load_dataset()
    for index in range(count):
        label = int(probabilities[index % len(images)] >= 0.5)
        folder = root / ("defective" if label else "functional")
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(images[index % len(images)]).resize((size, size), Image.BILINEAR).convert("RGB")
        image.save(folder / f"{index:05d}.png")


def pil_loop(paths, size, repeats=3):
    """Best of `repeats` passes (the first pass also warms the file cache)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in paths])
        rates.append(len(paths) / (time.perf_counter() - start))
    return max(rates)


def pipeline_throughput(table, size, repeats=3):
    """Best of `repeats` full passes, after the graph is built."""
    dataset = make_dataset(table, image_size=(size, size), batch_size=64)
    for _ in dataset.take(2):
        pass
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(int(images.shape[0]) for images, _ in dataset)
        rates.append(count / (time.perf_counter() - start))
    return max(rates)


def training_model(size, num_classes):
    """MobileNetV2 fully trainable, the toolkit's default backbone, with a new head."""
    from tfx_transfer.models.classifier import load_backbone

    keras.utils.set_random_seed(0)
    backbone = load_backbone("mobilenet_v2", weights=None, image_size=size, pooling="avg")
    inputs = keras.Input((size, size, 3))
    outputs = keras.layers.Dense(num_classes, activation="softmax")(backbone(inputs))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def epoch_seconds(model, data, repeats=1):
    model.fit(data, epochs=1, verbose=0)  # warm-up: tracing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pngs"
        write_pngs(root, args.images, args.size)
        table = drop_unreadable(load_source(root))
        paths = list(table.paths)
        pil_rate = pil_loop(paths, args.size)
        pipe_rate = pipeline_throughput(table, args.size)
        print(f"decode {len(paths)} PNG at {args.size} px: pipeline {pipe_rate:,.0f} img/s, "
              f"PIL loop {pil_rate:,.0f} img/s, ratio {pipe_rate / pil_rate:.2f}x (target >= 2x)")

        images = np.concatenate([x.numpy() for x, _ in make_dataset(table, image_size=(args.size,) * 2, batch_size=256)])
        labels = table.labels.astype("int32")
        in_memory = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(labels), seed=0).batch(32).prefetch(tf.data.AUTOTUNE)
        streamed = make_dataset(table, image_size=(args.size,) * 2, batch_size=32, shuffle=True, seed=0)
        memory_time = epoch_seconds(training_model(args.size, table.num_classes), in_memory)
        stream_time = epoch_seconds(training_model(args.size, table.num_classes), streamed)
        print(f"training epoch: pipeline from disk {stream_time:.2f} s, in-memory tensors {memory_time:.2f} s, "
              f"ratio {stream_time / memory_time:.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
