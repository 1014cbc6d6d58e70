"""Where training runs: the default strategy on one CPU, and multi-worker training refused with its reason."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tfx_transfer.training.devices import configure_devices


def test_one_cpu_trains_in_float32_without_xla():
    setup = configure_devices()
    assert setup.strategy.num_replicas_in_sync == 1
    assert (setup.jit_compile, setup.mixed_precision) == (False, False)
    assert setup.description.startswith("CPU (")


def test_tf_config_is_refused_with_the_reason_and_the_way_out(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(RuntimeError, match=r"TF_CONFIG is set, asking for multi-worker training, but Keras 3's fit does "
                                           r"not run under .*keras-team/keras#20585.*Train on one machine .*or unset TF_CONFIG"):
        configure_devices()
    assert configure_devices(distribution="none").strategy.num_replicas_in_sync == 1  # a way to run anyway


_PLAIN_KERAS_WORKER = textwrap.dedent(
    """
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras, numpy as np
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, (x.sum(1) > 2).astype("int32"))).batch(8)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data, epochs=1, verbose=0)
    print("fitted")
    """
)


@pytest.mark.slow
def test_keras_still_cannot_fit_under_multi_worker_mirrored_strategy(tmp_path):
    """Two workers on localhost run the plainest Keras fit. While it fails, the refusal above is
    right; the day it passes, this test fails: enable multi-worker training in
    `configure_devices` and test that two workers equal one, with only the chief writing."""
    script = tmp_path / "worker.py"
    script.write_text(_PLAIN_KERAS_WORKER)
    sockets = [socket.socket() for _ in range(2)]
    for item in sockets:
        item.bind(("localhost", 0))
    cluster = {"worker": [f"localhost:{item.getsockname()[1]}" for item in sockets]}
    for item in sockets:
        item.close()
    workers = [subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})))
        for index in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode != 0 and "fitted" not in stdout, "Keras now fits under MultiWorkerMirroredStrategy"
        assert "Attempt to convert a value (PerReplica" in stderr, stderr[-2000:]
