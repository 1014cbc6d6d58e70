"""Ensembles on tiny data: each member is exactly the single run with its seed, the ensemble
outputs their mean, survives saving, resumes inside the member it stopped in; feature
extraction stays one model."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest

from tiny_data import write_solid_folder
from tfx_transfer.data.pipeline import drop_unreadable, make_dataset
from tfx_transfer.training.ensemble import average_models, member_seeds, train_ensemble
from tfx_transfer.models.classifier import build_classifier
from tfx_transfer.data.sources import load_source
from tfx_transfer.data.splits import split_table
from tfx_transfer.training.train import TrainConfig, train

# As in test_train: ResNet50 keeps random-weight features alive at 32 px. Seed 1: the members
# train with seeds 2 and 3, not the run's own.
CONFIG = TrainConfig(strategy="fine_tune", backbone="tiny_test", weights=None, image_size=(32, 32), batch_size=6,
                     epochs=2, fine_tune_epochs=2, unfreeze_blocks=1, fine_tune_learning_rate=1e-5, patience=5,
                     warmup_epochs=0, seed=1)


def _without_timing(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def _equal_weights(first: keras.Model, second: keras.Model) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights()))


@pytest.fixture(autouse=True)
def isolated_feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFX_TRANSFER_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = write_solid_folder(tmp_path_factory.mktemp("solid") / "data", per_class=8)
    table = drop_unreadable(load_source(root))
    return table, split_table(table, 0.25, 0.25, seed=0)


@pytest.fixture(scope="module")
def whole_ensemble(tiny_data, tmp_path_factory):
    table, splits = tiny_data
    run_dir = tmp_path_factory.mktemp("whole") / "training"
    return train_ensemble(table, splits, CONFIG, 2, run_dir=run_dir, verbose=0), run_dir


def test_member_seeds_of_different_runs_never_overlap():
    for size in (1, 2, 3):
        seeds = [seed for run_seed in range(5) for seed in member_seeds(run_seed, size)]
        assert len(set(seeds)) == len(seeds) == 5 * size
    assert member_seeds(4, 1) == [4]  # a single model keeps the run's seed
    with pytest.raises(ValueError, match=r"ensemble_size must be at least 1. Received: ensemble_size=0"):
        member_seeds(0, 0)


def test_average_models_outputs_the_members_mean_and_survives_saving(tmp_path):
    members = []
    for index in range(2):  # ResNet50: random MobileNetV2 features vanish, every member would say 1/3
        model = build_classifier("tiny_test", 3, None, (32, 32), 0.2, seed=index)
        model.name = f"member_{index + 1}"
        members.append(model)
    ensemble = average_models(members)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3)).astype("float32")
    expected = np.mean([member.predict(images, verbose=0) for member in members], axis=0)
    assert not np.allclose(members[0].predict(images, verbose=0), members[1].predict(images, verbose=0))
    np.testing.assert_allclose(ensemble.predict(images, verbose=0), expected, atol=1e-6)
    ensemble.save(tmp_path / "ensemble.keras")
    loaded = keras.models.load_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    assert average_models(members[:1]) is members[0]


def test_average_models_rejects_members_that_cannot_be_averaged():
    first = build_classifier("mobilenet_v2", 3, None, (32, 32), 0.2)
    second = build_classifier("mobilenet_v2", 3, None, (32, 32), 0.2)
    with pytest.raises(ValueError, match=r"distinct names. Received: \['mobilenet_v2_classifier', 'mobilenet_v2_classifier'\]"):
        average_models([first, second])
    other = build_classifier("mobilenet_v2", 2, None, (32, 32), 0.2)
    other.name = "two_classes"
    with pytest.raises(ValueError, match=r"same input and output shapes. Received inputs \[\(32, 32, 3\)\] and outputs \[\(2,\), \(3,\)\]"):
        average_models([first, other])


@pytest.mark.slow
def test_each_member_is_the_single_run_with_its_seed(tiny_data, whole_ensemble):
    table, splits = tiny_data
    ensemble, run_dir = whole_ensemble
    single = train(table, splits, replace(CONFIG, seed=3), verbose=0)
    second = ensemble.model.get_layer("member_2")
    assert _equal_weights(second, single.model)
    assert _without_timing([r for r in ensemble.history if r["member"] == 2]) == \
        _without_timing([dict(r, member=2) for r in single.history])
    assert not _equal_weights(ensemble.model.get_layer("member_1"), second)
    assert [phase.member for phase in ensemble.phases] == [1, 1, 2, 2]
    assert ensemble.config["member_seeds"] == [2, 3] and ensemble.config["seed"] == 1
    assert all((run_dir / f"member-{i}" / "best.weights.h5").is_file() for i in (1, 2))
    images = next(iter(make_dataset(table, splits.test, (32, 32), 8)))[0].numpy()
    expected = (ensemble.model.get_layer("member_1").predict(images, verbose=0) + second.predict(images, verbose=0)) / 2
    np.testing.assert_allclose(ensemble.model.predict(images, verbose=0), expected, atol=1e-6)


@pytest.mark.slow
def test_a_crash_in_the_second_member_resumes_there(tiny_data, whole_ensemble, tmp_path, monkeypatch):
    import tfx_transfer.training.train as train_module

    table, splits = tiny_data
    uninterrupted, _ = whole_ensemble
    real_save = train_module.save_checkpoint
    calls = {"count": 0}

    def crash_in_second_member(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["count"] += 1
        if calls["count"] == 6:  # member 1 saved 4 epochs; this is member 2's second
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(train_module, "save_checkpoint", crash_in_second_member)
    run_dir = tmp_path / "training"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_ensemble(table, splits, CONFIG, 2, run_dir=run_dir, verbose=0)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    finished_member = (run_dir / "member-1" / "best.weights.h5").stat().st_mtime_ns
    resumed = train_ensemble(table, splits, CONFIG, 2, run_dir=run_dir, resume=True, verbose=0)
    assert (run_dir / "member-1" / "best.weights.h5").stat().st_mtime_ns == finished_member  # not trained again
    assert _without_timing(resumed.history) == _without_timing(uninterrupted.history)
    assert _equal_weights(resumed.model, uninterrupted.model)


def test_resuming_an_ensemble_that_never_started_is_explained(tiny_data, tmp_path):
    table, splits = tiny_data
    with pytest.raises(FileNotFoundError, match=r"Nothing to resume in .*no member has a complete checkpoint"):
        train_ensemble(table, splits, CONFIG, 2, run_dir=tmp_path, resume=True, verbose=0)


@pytest.mark.slow
def test_feature_extraction_trains_one_model_whatever_the_ensemble_size(tiny_data, capsys):
    table, splits = tiny_data
    config = replace(CONFIG, strategy="feature_extraction")
    requested = train_ensemble(table, splits, config, 2, verbose=1)
    single = train(table, splits, config, verbose=0)
    # A recipe's own settings must not warn: product_defects sets the ensemble for its fine-tune.
    assert "ensemble_size" not in capsys.readouterr().out
    assert "member_seeds" not in requested.config and requested.config["seed"] == 1
    assert _without_timing(requested.history) == _without_timing(single.history)
    assert _equal_weights(requested.model, single.model)
