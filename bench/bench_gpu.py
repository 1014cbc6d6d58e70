"""GPU check: fine-tuning images/s for MobileNetV2 and ResNet50 at 224 px, XLA on/off x precision.

Run on a machine with a GPU (the numbers go into the issue note). Random weights and random
pixels: throughput does not depend on them. Each configuration runs in a fresh subprocess, since
the Keras precision policy is global.

Usage: python bench/bench_gpu.py [--steps 30] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_ONE = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras, numpy as np, tensorflow as tf
from tfx_transfer.models.classifier import build_classifier, unfreeze_top_blocks
backbone, jit, precision, steps, batch = sys.argv[1], sys.argv[2] == "1", sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
keras.mixed_precision.set_global_policy(precision)
model = build_classifier(backbone, 10, weights=None, image_size=224)
unfreeze_top_blocks(model, 3)
model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", jit_compile=jit)
images = tf.random.uniform((batch, 224, 224, 3), 0, 255)
labels = tf.random.uniform((batch,), 0, 10, dtype=tf.int32)
data = tf.data.Dataset.from_tensors((images, labels)).repeat(steps).prefetch(2)
model.fit(data.take(5), verbose=0)  # compile
start = time.perf_counter()
model.fit(data, verbose=0)
print(json.dumps({"images_per_second": steps * batch / (time.perf_counter() - start)}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    print(f"GPUs: {[g.name for g in gpus] or 'none (numbers below are CPU numbers)'}")
    print(f"{'backbone':<14}{'XLA':<6}{'precision':<16}{'img/s':>10}")
    for backbone in ("mobilenet_v2", "resnet50"):
        for precision in ("float32", "mixed_float16", "mixed_bfloat16"):
            for jit in (False, True):
                command = [sys.executable, "-c", _ONE, backbone, "1" if jit else "0", precision, str(args.steps), str(args.batch_size)]
                done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
                try:
                    rate = f"{json.loads(done.stdout.strip().splitlines()[-1])['images_per_second']:,.0f}"
                except (IndexError, ValueError, KeyError):
                    rate = "failed: " + done.stderr.strip().splitlines()[-1][:60] if done.stderr.strip() else "failed"
                print(f"{backbone:<14}{'on' if jit else 'off':<6}{precision:<16}{rate:>10}", flush=True)


if __name__ == "__main__":
    main()
