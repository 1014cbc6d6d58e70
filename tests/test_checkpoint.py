"""Checkpoint files: weights without optimizer state, written atomically, read back without
touching the optimizer the model has now."""

from __future__ import annotations

import h5py
import keras
import numpy as np

from tfx_transfer.training.checkpoint import has_checkpoint, latest_checkpoint, load_model_weights, save_checkpoint, save_model_weights
from tfx_transfer.models.classifier import build_classifier


def _trained_classifier(seed: int) -> keras.Model:
    model = build_classifier("tiny_test", 3, weights=None, image_size=32, seed=seed)
    model.get_layer("head").trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(seed).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    model.fit(images, np.array([0, 1, 2, 0, 1, 2]), epochs=1, verbose=0)
    return model


def test_weights_file_of_a_compiled_model_holds_its_layers_only(tmp_path):
    model = _trained_classifier(seed=0)
    assert model.optimizer.variables  # Keras would have written these into the file
    save_model_weights(model, tmp_path / "run" / "best.weights.h5")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.weights.h5"]  # no staging file left
    with h5py.File(tmp_path / "run" / "best.weights.h5") as saved:
        assert "optimizer" not in saved and "layers" in saved
    fresh = build_classifier("tiny_test", 3, weights=None, image_size=32, seed=1)
    load_model_weights(fresh, tmp_path / "run" / "best.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), model.get_weights()))


def test_reading_weights_leaves_the_models_optimizer_as_it_is(tmp_path):
    model = _trained_classifier(seed=0)
    model.save_weights(tmp_path / "keras.weights.h5")  # Keras' own file, optimizer state included
    save_model_weights(model, tmp_path / "lean.weights.h5")
    model.fit(np.zeros((3, 32, 32, 3), "float32"), np.array([0, 1, 2]), epochs=2, verbose=0)
    optimizer_state = [np.array(v) for v in model.optimizer.variables]
    for path in (tmp_path / "keras.weights.h5", tmp_path / "lean.weights.h5"):
        load_model_weights(model, path)
        assert all(np.array_equal(a, np.array(v)) for a, v in zip(optimizer_state, model.optimizer.variables)), path


def test_only_a_complete_checkpoint_counts_as_one_to_resume(tmp_path):
    (tmp_path / "checkpoints" / ".epoch-0001-k2").mkdir(parents=True)  # killed while writing the first
    assert not has_checkpoint(tmp_path)
    member = tmp_path / "member-2" / "checkpoints" / "epoch-0003"
    member.mkdir(parents=True)
    (member / "state.json").write_text("{}")
    assert not has_checkpoint(tmp_path)  # no `latest` names it yet
    (member.parent / "latest").write_text("epoch-0003")
    assert has_checkpoint(tmp_path)  # an ensemble member's checkpoint is the run's


def test_checkpoints_keep_the_newest_two_and_point_at_the_latest(tmp_path):
    model = _trained_classifier(seed=0)
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, model, model.optimizer, {"global_epoch": epoch})
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch-*")) == ["epoch-0002", "epoch-0003"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "epoch-0003"
    with h5py.File(tmp_path / "checkpoints" / "epoch-0003" / "model.weights.h5") as saved:
        assert "optimizer" not in saved
    with np.load(tmp_path / "checkpoints" / "epoch-0003" / "optimizer.npz") as optimizer:
        assert len(optimizer.files) == len(model.optimizer.variables)
