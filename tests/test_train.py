"""The training engine on tiny data: the registered `tiny_test` backbone at 32 px, random weights.

A residual backbone, because with random weights and BatchNorm in inference mode MobileNetV2's
features vanish (~1e-12) and nothing could be learnt; residual paths keep them alive. `tiny_test`
has them, with BatchNorm and named blocks, at 12k parameters instead of ResNet50's 23 million.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from tiny_data import write_solid_folder
from tfx_transfer.data.pipeline import drop_unreadable, make_dataset
from tfx_transfer.models.classifier import build_classifier, feature_extractor, find_backbone
from tfx_transfer.data.sources import load_source
from tfx_transfer.data.splits import split_table
from tfx_transfer.training.train import STRATEGIES, PhaseSummary, TrainConfig, epochs_to_best, plan_phases, train

TINY = dict(backbone="tiny_test", weights=None, image_size=(32, 32), batch_size=6, epochs=3,
            fine_tune_epochs=2, unfreeze_blocks=1, learning_rate=1e-3, fine_tune_learning_rate=1e-5,
            patience=5, warmup_epochs=0)


def _without_timing(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = write_solid_folder(tmp_path_factory.mktemp("solid") / "data", per_class=8)
    table = drop_unreadable(load_source(root))
    return table, split_table(table, 0.25, 0.25, seed=0)


@pytest.fixture(autouse=True)
def isolated_feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFX_TRANSFER_CACHE", str(tmp_path / "cache"))


# The strategies that train a network (anomaly keeps a patch memory bank instead: tests/test_anomaly.py).
NETWORK_STRATEGIES = [strategy for strategy in STRATEGIES if strategy != "anomaly"]


# One strategy in the fast tier; the others train the backbone too and take seconds each.
@pytest.mark.parametrize("strategy", [s if s == "feature_extraction" else pytest.param(s, marks=pytest.mark.slow) for s in NETWORK_STRATEGIES])
def test_each_strategy_trains_and_the_loss_goes_down(strategy, tiny_data):
    table, splits = tiny_data
    options = TINY
    result = train(table, splits, TrainConfig(strategy=strategy, **options), verbose=0)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0], losses
    assert [p.name for p in result.phases] == [p.name for p in plan_phases(TrainConfig(strategy=strategy, **options))]
    assert result.model.output_shape == (None, 3)
    assert result.model.input_shape == (None, 32, 32, 3)


@pytest.mark.slow
def test_per_image_weights_reach_the_loss_of_both_phases(tiny_data):
    from dataclasses import replace

    table, splits = tiny_data
    # The cached-feature head phase and the fine-tuning phase read weights by different paths.
    weights = np.ones(len(table))
    weights[splits.train] = 0.0
    result = train(replace(table, weights=weights), splits, TrainConfig(strategy="fine_tune", **TINY), verbose=0)
    assert [h["phase"] for h in result.history] == ["head"] * 3 + ["fine_tune"] * 2
    assert all(h["loss"] == 0.0 for h in result.history), [h["loss"] for h in result.history]
    assert all(h["val_loss"] > 0.0 for h in result.history)  # validation stays unweighted


def test_feature_extraction_leaves_every_backbone_weight_bit_identical(tiny_data):
    table, splits = tiny_data
    keras.utils.set_random_seed(0)
    reference = build_classifier("tiny_test", 3, weights=None, image_size=32, seed=0)
    result = train(table, splits, TrainConfig(strategy="feature_extraction", **TINY), verbose=0)
    before = find_backbone(reference)[0].get_weights()
    after = find_backbone(result.model)[0].get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    head_before = reference.get_layer("head").get_weights()[-1]
    assert not np.array_equal(head_before, result.model.get_layer("head").get_weights()[-1])


@pytest.mark.slow
def test_fine_tune_changes_exactly_the_unfrozen_blocks_and_no_batchnorm_statistic(tiny_data):
    table, splits = tiny_data
    keras.utils.set_random_seed(0)
    reference = build_classifier("tiny_test", 3, weights=None, image_size=32, seed=0)
    result = train(table, splits, TrainConfig(strategy="fine_tune", **TINY), verbose=0)
    backbone_before, spec = find_backbone(reference)
    backbone_after, _ = find_backbone(result.model)
    for before, after in zip(backbone_before.layers, backbone_after.layers):
        if not before.weights:
            continue
        changed = any(not np.array_equal(a, b) for a, b in zip(before.get_weights(), after.get_weights()))
        in_top = after.name.startswith("top_")
        if isinstance(after, keras.layers.BatchNormalization) or not in_top:
            assert not changed, after.name
    top_convs = [l for l in backbone_after.layers if l.name.startswith("top_") and isinstance(l, keras.layers.Conv2D)]
    reference_layers = {l.name: l for l in backbone_before.layers}
    assert any(not np.array_equal(l.get_weights()[0], reference_layers[l.name].get_weights()[0]) for l in top_convs)


@pytest.mark.parametrize("pooling", ["avg", "avg_max"])
def test_cached_feature_head_equals_in_graph_frozen_head(tiny_data, pooling):
    table, splits = tiny_data
    keras.utils.set_random_seed(0)
    classifier = build_classifier("tiny_test", 3, weights=None, image_size=32, dropout=0.0, seed=0, pooling=pooling)
    head = classifier.get_layer("head")
    initial = head.get_weights()
    images = make_dataset(table, splits.train, (32, 32), batch_size=6)
    features = feature_extractor(classifier).predict(images, verbose=0)
    labels = table.labels[splits.train]

    head.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    head.fit(features, labels, batch_size=6, epochs=2, shuffle=False, verbose=0)
    cached = head.get_weights()

    head.set_weights(initial)
    classifier.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    classifier.fit(images, epochs=2, verbose=0)
    in_graph = head.get_weights()
    for a, b in zip(cached, in_graph):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_feature_cache_keeps_poolings_apart(tiny_data):
    table, splits = tiny_data
    average = train(table, splits, TrainConfig(strategy="feature_extraction", **TINY), verbose=0)
    both = train(table, splits, TrainConfig(strategy="feature_extraction", pooling="avg_max", **TINY), verbose=0)
    # A reused average-pooled cache (48 features) would not even fit the 96-wide head.
    assert average.model.get_layer("head").input_shape[-1] * 2 == both.model.get_layer("head").input_shape[-1] == 96


@pytest.mark.slow
def test_feature_cache_keeps_seeds_apart_when_weights_are_random(tiny_data, tmp_path):
    table, splits = tiny_data
    for seed in (0, 1, 1):
        train(table, splits, TrainConfig(strategy="feature_extraction", seed=seed, **TINY), verbose=0)
    # Random backbones differ by seed: seed 1 must not read seed 0's features (train + val each);
    # its second run reuses its own.
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 4


@pytest.mark.slow
def test_two_runs_with_one_seed_are_identical(tiny_data):
    table, splits = tiny_data
    config = TrainConfig(strategy="fine_tune", **TINY)
    first = train(table, splits, config, verbose=0)
    second = train(table, splits, config, verbose=0)
    assert _without_timing(first.history) == _without_timing(second.history)
    assert all(np.array_equal(a, b) for a, b in zip(first.model.get_weights(), second.model.get_weights()))


def _crash_then_resume(table, splits, config, run_dir, monkeypatch, crash_at=4):
    """Runs until checkpoint `crash_at` (the 4th: head done, one fine-tune epoch done), crashes,
    resumes."""
    import tfx_transfer.training.train as train_module

    real_save = train_module.save_checkpoint
    calls = {"count": 0}

    def crash_after(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["count"] += 1
        if calls["count"] == crash_at:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(train_module, "save_checkpoint", crash_after)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(table, splits, config, run_dir=run_dir, verbose=0)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    return train(table, splits, config, run_dir=run_dir, resume=True, verbose=0)


@pytest.mark.slow
def test_crash_and_resume_reproduces_the_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    table, splits = tiny_data
    config = TrainConfig(strategy="fine_tune", **TINY)
    uninterrupted = train(table, splits, config, run_dir=tmp_path / "whole", verbose=0)
    resumed = _crash_then_resume(table, splits, config, tmp_path / "broken", monkeypatch)
    assert _without_timing(resumed.history) == _without_timing(uninterrupted.history)
    assert all(np.array_equal(a, b) for a, b in zip(resumed.model.get_weights(), uninterrupted.model.get_weights()))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:fine_tune_learning_rate .* is not lower")
def test_resume_after_a_worse_epoch_keeps_the_optimizer_of_the_last_epoch(tiny_data, tmp_path, monkeypatch):
    # A fine-tuning rate this high makes the third fine-tuning epoch worse than the second, so after
    # it the phase's best weights (read back on resume) are an epoch older than the optimizer's state.
    table, splits = tiny_data
    config = TrainConfig(strategy="fine_tune", **dict(TINY, epochs=1, fine_tune_epochs=4, unfreeze_blocks=3,
                                                      fine_tune_learning_rate=0.03))
    uninterrupted = train(table, splits, config, run_dir=tmp_path / "whole", verbose=0)
    fine_tuning = [record["val_loss"] for record in uninterrupted.history if record["phase"] != "head"]
    assert fine_tuning[2] > fine_tuning[1], fine_tuning
    resumed = _crash_then_resume(table, splits, config, tmp_path / "broken", monkeypatch, crash_at=4)
    assert _without_timing(resumed.history) == _without_timing(uninterrupted.history)
    for weights_file in (tmp_path / "broken").rglob("*.weights.h5"):
        with h5py.File(weights_file) as saved:
            assert "optimizer" not in saved, f"{weights_file} holds optimizer state"


def test_resume_without_checkpoint_is_explained(tiny_data, tmp_path):
    table, splits = tiny_data
    with pytest.raises(FileNotFoundError, match=r"Nothing to resume in .*no complete checkpoint"):
        train(table, splits, TrainConfig(strategy="fine_tune", **TINY), run_dir=tmp_path, resume=True, verbose=0)


def test_config_errors_and_warnings():
    # The checks are the recipe settings' own (tfx_transfer.config.settings), so the words are the same.
    with pytest.raises(ValueError, match=r"TrainConfig strategy: must be one of scratch, feature_extraction, fine_tune, "
                                         r"gradual, anomaly; received 'finetune'\. Did you mean 'fine_tune'\?"):
        TrainConfig(strategy="finetune")
    with pytest.raises(ValueError, match=r"TrainConfig pooling: must be one of avg, max, avg_max; received 'mean'"):
        TrainConfig(pooling="mean")
    with pytest.warns(UserWarning, match=r"fine_tune_learning_rate \(0\.01\) is not lower than the head's learning_rate"):
        TrainConfig(strategy="fine_tune", learning_rate=1e-3, fine_tune_learning_rate=1e-2)
    with pytest.raises(ValueError, match=r"unfreeze_blocks must be between 1 and 5 for resnet50\. Received: unfreeze_blocks=9\. "
                                         r"Choose a value in that range \(in a recipe: --set training\.unfreeze_blocks=5 trains every block\).*"
                                         r"unfreeze_from: stem, conv2, conv3, conv4, conv5"):
        plan_phases(TrainConfig(backbone="resnet50", unfreeze_blocks=9))
    with pytest.raises(ValueError, match=r"TrainConfig unfreeze_blocks: must be at least 1; received 0"):
        TrainConfig(strategy="fine_tune", unfreeze_blocks=0)
    with pytest.raises(ValueError, match=r"between 1 and 18 for mobilenet_v2\. Received: unfreeze_blocks=19\."):
        plan_phases(TrainConfig(strategy="fine_tune", unfreeze_blocks=19))


def test_gradual_unfreezes_one_more_block_each_phase():
    phases = plan_phases(TrainConfig(strategy="gradual", backbone="vgg16", unfreeze_blocks=3, gradual_every=2))
    assert [(p.name, p.blocks, p.epochs) for p in phases[1:]] == [
        ("unfreeze_1", ("block5",), 2), ("unfreeze_2", ("block4", "block5"), 2), ("unfreeze_3", ("block3", "block4", "block5"), 2)
    ]


_RUN_SCRIPT = textwrap.dedent(
    """
    import os, sys, json
    sys.path.insert(0, {tests!r})
    from tfx_transfer.data.pipeline import drop_unreadable
    from tfx_transfer.data.sources import load_source
    from tfx_transfer.data.splits import split_table
    from tfx_transfer.training.train import TrainConfig, train
    table = drop_unreadable(load_source({data!r}))
    splits = split_table(table, 0.25, 0.25, seed=0)
    result = train(table, splits, TrainConfig(strategy="fine_tune", **{options!r}), run_dir={run!r},
                   resume={resume!r}, verbose=0)
    json.dump(result.history, open({out!r}, "w"))
    """
)


def _run_in_subprocess(tmp_path, data, run, resume, out, wait_for=None):
    script = tmp_path / f"run_{'resume' if resume else 'first'}.py"
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}
    script.write_text(_RUN_SCRIPT.format(tests=str(Path(__file__).parent), data=str(data), options=options,
                                         run=str(run), resume=resume, out=str(out)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if wait_for is None:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr.decode()[-2000:]
        return
    deadline = time.time() + 600
    while not wait_for() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_matches_the_uninterrupted_run(tiny_data, tmp_path):
    table, _ = tiny_data
    data = Path(table.paths[0]).parents[1]
    _run_in_subprocess(tmp_path, data, tmp_path / "whole", False, tmp_path / "whole.json")
    run = tmp_path / "killed"

    def third_epoch_saved():
        pointer = run / "checkpoints" / "latest"
        return pointer.is_file() and pointer.read_text().strip() >= "epoch-0003"

    _run_in_subprocess(tmp_path, data, run, False, tmp_path / "never.json", wait_for=third_epoch_saved)
    assert not (tmp_path / "never.json").exists(), "the run finished before it could be killed"
    _run_in_subprocess(tmp_path, data, run, True, tmp_path / "resumed.json")
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert _without_timing(resumed) == _without_timing(json.loads((tmp_path / "whole.json").read_text()))


_DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {tests!r})
    from tfx_transfer.data.pipeline import drop_unreadable
    from tfx_transfer.data.sources import load_source
    from tfx_transfer.data.splits import split_table
    from tfx_transfer.training.train import TrainConfig, train
    table = drop_unreadable(load_source({data!r}))
    splits = split_table(table, 0.25, 0.25, seed=0)
    out = {{}}
    for distribution in ("none", "mirrored"):
        result = train(table, splits, TrainConfig(strategy="fine_tune", distribution=distribution,
                       cache_features=False, **{options!r}), verbose=0)
        out[distribution] = {{"history": result.history, "device": result.device}}
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(tiny_data, tmp_path):
    table, _ = tiny_data
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}
    # Batches divisible by the two replicas; no dropout, whose masks are drawn per replica.
    options.update(batch_size=6, dropout=0.0)
    script = tmp_path / "distributed.py"
    script.write_text(_DISTRIBUTED_SCRIPT.format(tests=str(Path(__file__).parent),
                                                 data=str(Path(table.paths[0]).parents[1]), options=options))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]), TFX_TRANSFER_CACHE=str(tmp_path / "cache"))
    completed = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=900)
    assert completed.returncode == 0, completed.stderr.decode()[-3000:]
    out = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    assert "MirroredStrategy (2 replica(s))" in out["mirrored"]["device"]
    single, mirrored = out["none"]["history"], out["mirrored"]["history"]
    assert len(single) == len(mirrored)
    for one, two in zip(single, mirrored):
        assert abs(one["loss"] - two["loss"]) < 1e-3 * max(1.0, abs(one["loss"]))
        assert abs(one["val_loss"] - two["val_loss"]) < 1e-3 * max(1.0, abs(one["val_loss"]))


@pytest.mark.integration
@pytest.mark.slow
def test_pretrained_strategies_beat_scratch_on_a_small_real_elpv_subset(tmp_path):
    """Real data, real offline ImageNet MobileNetV2: 240 training cells, 96 px."""
    from elpv_dataset.utils import load_dataset
    from sklearn.metrics import roc_auc_score

    from tfx_transfer.data.sources import from_arrays
    from tfx_transfer.data.splits import Splits

    images, probabilities, _ = load_dataset()
    labels = (probabilities >= 0.5).astype(int)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    table = from_arrays(images[order[:840], ..., None], labels[order[:840]], ["functional", "defective"])
    splits = Splits(train=np.arange(240), val=np.arange(240, 440), test=np.arange(440, 840))
    test_images = make_dataset(table, splits.test, (96, 96), batch_size=64)
    scores = {}
    for strategy in ("scratch", "feature_extraction", "fine_tune"):
        config = TrainConfig(strategy=strategy, backbone="mobilenet_v2", image_size=(96, 96), batch_size=32,
                             epochs=12 if strategy == "scratch" else 8, fine_tune_epochs=4, unfreeze_blocks=3,
                             learning_rate=1e-3, fine_tune_learning_rate=1e-4, patience=4, seed=0)
        result = train(table, splits, config, verbose=0)
        y_score = result.model.predict(test_images, verbose=0)[:, 1]
        scores[strategy] = roc_auc_score(table.labels[splits.test], y_score)
    print(f"test ROC-AUC on real ELPV, 240 training cells: {scores}")
    assert scores["feature_extraction"] > scores["scratch"] + 0.05, scores
    assert scores["fine_tune"] > scores["scratch"] + 0.05, scores


def test_multi_label_head_trains_with_one_sigmoid_per_label(tmp_path):
    from tiny_data import solid_image
    from tfx_transfer.data.sources import from_arrays

    colours = {(1, 0): (230, 20, 20), (0, 1): (20, 20, 230), (1, 1): (230, 20, 230), (0, 0): (20, 200, 20)}
    images, labels = [], []
    for (red, blue), colour in colours.items():
        for i in range(6):
            images.append(solid_image(colour, 32, seed=i))
            labels.append([red, blue])
    table = from_arrays(np.stack(images), np.array(labels), ["red", "blue"])
    splits = split_table(table, 0.25, 0.25, seed=0)
    result = train(table, splits, TrainConfig(strategy="feature_extraction", **dict(TINY, epochs=6)), verbose=0)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert "val_auc" in result.history[-1]
    probabilities = result.model.predict(np.stack(images[:1] + images[12:13]), verbose=0)
    assert probabilities.shape == (2, 2)
    assert abs(probabilities[1].sum() - 1.0) > 1e-3  # sigmoids, not a softmax
    with pytest.raises(ValueError, match=r"class_weight='balanced' is for single-label data; this data is multi-label"):
        train(table, splits, TrainConfig(strategy="fine_tune", class_weight="balanced", **TINY), verbose=0)


def test_ctrl_c_stops_cleanly_with_every_finished_epoch_saved(tiny_data, tmp_path, monkeypatch):
    import tfx_transfer.training.train as train_module

    table, splits = tiny_data
    real_save = train_module.save_checkpoint

    def interrupt_after_second(*args, **kwargs):
        path = real_save(*args, **kwargs)
        if path.name == "epoch-0002":
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(train_module, "save_checkpoint", interrupt_after_second)
    with pytest.warns(UserWarning, match=r"Stopped by Ctrl-C after epoch 2; every finished epoch is saved\. "
                                         r"Resume with train\(\.\.\., run_dir='.*', resume=True\)"):
        result = train(table, splits, TrainConfig(strategy="fine_tune", **TINY), run_dir=tmp_path, verbose=0)
    assert result.stopped and len(result.history) == 2
    assert (tmp_path / "checkpoints" / "latest").read_text() == "epoch-0002"


@pytest.mark.slow
def test_layer_decay_gives_lower_blocks_lower_learning_rates_and_resumes(tiny_data, tmp_path, monkeypatch):
    import tfx_transfer.training.train as train_module

    table, splits = tiny_data
    config = TrainConfig(strategy="fine_tune", layer_decay=0.1, **dict(TINY, unfreeze_blocks=2, fine_tune_learning_rate=1e-4))
    keras.utils.set_random_seed(0)
    model = build_classifier("tiny_test", 3, weights=None, image_size=32, seed=0)
    phase = plan_phases(config)[1]
    train_module._set_phase_trainable(model, phase)
    optimizer = train_module._optimizer(model, phase, config, steps=2)
    optimizer.build(model.trainable_variables)
    rates = sorted(float(keras.ops.convert_to_numpy(o.learning_rate)) for o in optimizer.optimizers)
    np.testing.assert_allclose(rates, [1e-4 * 0.1, 1e-4], rtol=1e-4)  # block below the top: 0.1 x

    uninterrupted = train(table, splits, config, run_dir=tmp_path / "whole", verbose=0)
    resumed = _crash_then_resume(table, splits, config, tmp_path / "broken", monkeypatch)
    assert _without_timing(resumed.history) == _without_timing(uninterrupted.history)


def test_epochs_to_best_is_the_epoch_of_the_weights_each_model_kept():
    head, fine_tune = PhaseSummary("head", 1, [], 8, 1, 0.50, 1.0), PhaseSummary("fine_tune", 9, [], 6, 13, 0.70, 9.0)
    assert epochs_to_best([head, fine_tune], "val_loss") == 1  # the fine-tune never beat the head: its weights stay
    assert epochs_to_best([head, fine_tune], "val_accuracy") == 13
    tie = PhaseSummary("fine_tune", 9, [], 6, 12, 0.50, 9.0)
    assert epochs_to_best([head, tie], "val_loss") == 1  # a tie keeps the earlier weights, as training does
    members = [PhaseSummary("head", 1, [], 8, 4, 0.5, 1.0, member=1), PhaseSummary("head", 1, [], 8, 6, 0.4, 1.0, member=2)]
    assert epochs_to_best(members, "val_loss") == 6  # an ensemble's: its members' latest
    assert epochs_to_best([], "val_loss") is None  # anomaly: no training


def test_training_without_a_terminal_prints_one_plain_line_per_epoch(tiny_data, capsys):
    table, splits = tiny_data
    # Under pytest's capture standard output is not a terminal, as in CI, nohup or `| tee`.
    train(table, splits, TrainConfig(strategy="feature_extraction", **dict(TINY, epochs=3)), verbose=1)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\b" not in out
    epoch_lines = [line for line in out.splitlines() if line.startswith("head epoch ")]
    assert [line.split(" - ")[0] for line in epoch_lines] == ["head epoch 1/3", "head epoch 2/3", "head epoch 3/3"]
    assert all("val_loss" in line and len(line) < 300 for line in epoch_lines)


def test_a_loss_that_is_no_longer_a_number_names_the_phase_and_the_rate_to_lower(tiny_data, tmp_path):
    from dataclasses import replace

    table, splits = tiny_data
    poisoned = replace(table, weights=np.full(len(table), np.nan))  # any NaN reaching the loss does it
    with pytest.raises(ValueError, match=r"The training loss became nan in phase 'head' \(epoch 1 of 3\) at "
                                         r"learning_rate 0.001: the weights diverged\. Lower training.learning_rate "
                                         r"\(e.g. 10x: --learning-rate 0.0001\)"):
        train(poisoned, splits, TrainConfig(strategy="feature_extraction", **TINY), run_dir=tmp_path, verbose=0)
    assert not (tmp_path / "checkpoints" / "latest").exists()  # the diverged epoch is not saved


def test_phase_lines_number_epochs_across_the_run():
    head = PhaseSummary("head", 10, [], 4, 3, 0.5, 1.0, first_epoch=1)
    fine_tune = PhaseSummary("fine_tune", 20, ["top"], 4, 6, 0.4, 2.0, first_epoch=5)
    assert "epochs 1-4, best val_loss 0.5000 (epoch 3)" in head.line("val_loss")
    assert "epochs 5-8, best val_loss 0.4000 (epoch 6)" in fine_tune.line("val_loss")
