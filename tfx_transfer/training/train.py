"""Training strategies: scratch, feature extraction, fine-tuning and gradual unfreezing.

Every strategy produces the same kind of model, `raw pixels -> preprocessing -> backbone ->
pooling -> dropout -> head`, and runs as a list of phases (`tfx_transfer.config.strategies`: what each
strategy runs, and `TrainConfig`).

Each epoch is one `fit` call on that epoch's data (order and augmentation fixed by seed and
epoch), followed by a checkpoint, so a run killed at any point resumes to the same result.
Early stopping watches `monitor` and restores the best weights. Vocabulary follows Keras:
`epochs`, `learning_rate`, `batch_size`, `image_size`, `jit_compile`.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfx_transfer.config.backbones import assign_blocks
from tfx_transfer.console import keras_verbose
from tfx_transfer.training.checkpoint import (
    latest_checkpoint,
    load_model_weights,
    load_state,
    restore_optimizer,
    save_checkpoint,
    save_model_weights,
)
from tfx_transfer.data.pipeline import EpochStream, make_dataset, sample_weights
from tfx_transfer.training.devices import configure_devices
from tfx_transfer.training.features import feature_data
from tfx_transfer.models.classifier import (
    build_classifier,
    find_backbone,
    trainable_summary,
    unfreeze_top_blocks,
    weights_info,
)
from tfx_transfer.runs.folder import TrainingFolder, remove_stale_files, write_atomically
from tfx_transfer.data.sources import ImageTable
from tfx_transfer.data.splits import Splits
from tfx_transfer.config.strategies import (  # noqa: F401  (STRATEGIES, plan_phases: re-exported)
    STRATEGIES,
    Phase,
    TrainConfig,
    plan_phases,
)


@dataclass
class PhaseSummary:
    name: str
    trainable_params: int
    trainable_blocks: list[str]
    epochs: int
    best_epoch: int | None
    best_value: float | None
    seconds: float
    member: int | None = None  # which model of an ensemble (tfx_transfer.training.ensemble); None: a single model
    first_epoch: int | None = None  # the run's epoch the phase began with (epochs are numbered across the run)

    def line(self, monitor: str) -> str:
        """One line for the log; epochs are numbered across the run, as in history.json and the report."""
        best = "n/a" if self.best_value is None else f"{self.best_value:.4f} (epoch {self.best_epoch})"
        name = self.name if self.member is None else f"model {self.member}, {self.name}"
        epochs = (f"{self.epochs}" if self.first_epoch is None else
                  f"{self.first_epoch}-{self.first_epoch + self.epochs - 1}" if self.epochs > 1 else f"{self.first_epoch}")
        return (f"[{name}] trainable params {self.trainable_params:,}, epoch{'s' if self.epochs > 1 else ''} {epochs}, "
                f"best {monitor} {best}, {self.seconds:.1f} s")


@dataclass
class TrainResult:
    """What `train` returns: the final model (best weights) and the run's record."""

    model: keras.Model
    history: list[dict]
    phases: list[PhaseSummary]
    weights_source: str
    device: str
    seconds: float
    stopped: bool = False
    config: dict = field(default_factory=dict)


def _loss_and_metrics(multi_label: bool):
    if multi_label:  # one sigmoid per label
        return keras.losses.BinaryCrossentropy(), [
            keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(multi_label=True, name="auc")
        ]
    return keras.losses.SparseCategoricalCrossentropy(), [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def _schedule(learning_rate: float, steps_per_epoch: int, epochs: int, warmup_epochs: int):
    warmup = min(warmup_epochs, max(epochs - 1, 0)) * steps_per_epoch
    decay = max(epochs * steps_per_epoch - warmup, 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate * (0.1 if warmup else 1.0),
        decay_steps=decay,
        alpha=0.01,
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def _optimizer(model: keras.Model, phase: Phase, config: TrainConfig, steps: int):
    """Adam with warm-up and cosine decay; with `layer_decay`, one Adam per trained block whose
    rate shrinks with the block's depth below the top (discriminative learning rates)."""
    if config.layer_decay is None or not phase.blocks:
        return keras.optimizers.Adam(_schedule(phase.learning_rate, steps, phase.epochs, config.warmup_epochs))
    backbone, spec = find_backbone(model)
    depth_of = {}
    for block, layers in assign_blocks(backbone, spec).items():
        depth = len(spec.block_names) - 1 - spec.block_names.index(block)
        for layer in layers:
            for variable in layer.trainable_weights:
                depth_of[id(variable)] = depth
    optimizers = {
        depth: keras.optimizers.Adam(
            _schedule(phase.learning_rate * config.layer_decay**depth, steps, phase.epochs, config.warmup_epochs)
        )
        for depth in range(len(phase.blocks))
    }
    # Variables outside the backbone (the head) train at the top block's rate.
    return keras.optimizers.MultiOptimizer(lambda variable: optimizers[depth_of.get(id(variable), 0)])


def _set_phase_trainable(model: keras.Model, phase: Phase) -> list[str]:
    if phase.blocks is None:
        backbone, spec = find_backbone(model)
        # Scratch: BatchNorm learns too, there are no statistics to keep. Each layer is set, since
        # a model's `trainable` does not override layers frozen one by one.
        backbone.trainable = True
        for layer in backbone.layers:
            layer.trainable = True
        return list(spec.block_names)
    return unfreeze_top_blocks(model, len(phase.blocks))  # phases always train a top suffix


def _reseed(model: keras.Model, seed: int) -> None:
    """Sets every random layer's (dropout's) generator state from the epoch's seed. Keras does not
    save that state with the weights, so this is what makes a resumed epoch draw the same masks."""
    for variable in model.variables:
        if variable.path.endswith("seed_generator_state"):
            variable.assign(np.array([seed % (2**31 - 1), 0], dtype=variable.dtype))


@dataclass
class TrainingState:
    """Where a run stands: what a checkpoint saves (as `state.json`) and a resumed run reads back.

    Attributes:
        global_epoch: Epochs finished over all phases.
        phase_index: The phase in progress (`len(phases)` once every phase finished).
        phase_epoch: Epochs finished in that phase (0: it has not started).
        history: One record per finished epoch (Keras' logs, `phase`, `epoch`, `seconds`).
        phases: `PhaseSummary` records of the finished phases, as dicts.
        best: Best value of the monitor over the whole run so far.
        phase_best, phase_best_epoch: Best value in the phase in progress, and its global epoch.
        wait: Epochs since the phase's best (early stopping's counter).
    """

    global_epoch: int = 0
    phase_index: int = 0
    phase_epoch: int = 0
    history: list = field(default_factory=list)
    phases: list = field(default_factory=list)
    best: float | None = None
    phase_best: float | None = None
    phase_best_epoch: int | None = None
    wait: int = 0

    @classmethod
    def from_dict(cls, record: dict) -> "TrainingState":
        return cls(**{name: record[name] for name in (f.name for f in fields(cls)) if name in record})

    def to_dict(self) -> dict:
        return asdict(self)


def epochs_to_best(phases, monitor: str) -> int | None:
    """The epoch whose weights a model kept: its best over all its phases (a fine-tune that never
    beat the head phase keeps the head's). An ensemble's is its members' latest.

    Example:
        >>> epochs_to_best([PhaseSummary("head", 1, [], 8, 1, 0.5, 1.0), PhaseSummary("fine_tune", 9, [], 6, 13, 0.7, 9.0)],
        ...                "val_loss")
        1
    """
    kept = {}
    for phase in phases:
        if phase.best_value is None:
            continue
        best = kept.get(phase.member)
        # The rule training keeps its best by (strictly better: on a tie the earlier weights stay).
        if _is_better(phase.best_value, None if best is None else best.best_value, monitor):
            kept[phase.member] = phase
    return max((phase.best_epoch for phase in kept.values()), default=None)


class BestWeights:
    """The one tracker of best weights and early stopping: the phase's best (restored when the phase
    ends) and the run's best (the returned model), each also written to the run folder so a
    resumed run has them, and `wait`, the epochs since the phase's best."""

    def __init__(self, model: keras.Model, state: TrainingState, monitor: str, patience: int, run_dir: Path | None):
        self.model, self.state, self.monitor, self.patience, self.run_dir = model, state, monitor, patience, run_dir
        self.phase_weights = None
        self.run_weights = None

    def start_phase(self) -> None:
        """A new phase keeps its own best; a resumed phase reads the best it had written."""
        if self.state.phase_epoch == 0:
            self.state.phase_best, self.state.phase_best_epoch, self.state.wait = None, None, 0
            self.phase_weights = None
        else:
            self.phase_weights = self._read("phase_best")

    def update(self, value: float) -> None:
        """Records one finished epoch's monitor value (after `state.global_epoch` counts it)."""
        state = self.state
        if _is_better(value, state.phase_best, self.monitor):
            state.phase_best, state.phase_best_epoch, state.wait = value, state.global_epoch, 0
            self.phase_weights = self.model.get_weights()
            self._write("phase_best")
        else:
            state.wait += 1
        if _is_better(value, state.best, self.monitor):
            state.best = value
            self.run_weights = self.model.get_weights()
            self._write("best")

    @property
    def should_stop(self) -> bool:
        return self.state.wait >= self.patience

    def restore_phase_best(self) -> None:
        if self.phase_weights is not None:
            self.model.set_weights(self.phase_weights)

    def restore_run_best(self) -> None:
        weights = self.run_weights
        if weights is None and self.state.best is not None:
            weights = self._read("best")
        if weights is not None:
            self.model.set_weights(weights)

    def _write(self, name: str) -> None:
        if self.run_dir is not None:
            save_model_weights(self.model, self.run_dir / f"{name}.weights.h5")

    def _read(self, name: str) -> list | None:
        """The weights saved as `name`, without changing the model's own."""
        path = None if self.run_dir is None else self.run_dir / f"{name}.weights.h5"
        if path is None or not path.is_file():
            return None
        current = self.model.get_weights()
        load_model_weights(self.model, path)
        saved = self.model.get_weights()
        self.model.set_weights(current)
        return saved


def _is_better(value, best, monitor):
    if best is None:
        return True
    return value < best if monitor == "val_loss" else value > best


def _epoch_data(phase: Phase, features, table: ImageTable, splits: Splits, config: TrainConfig,
                train_stream: EpochStream, val_data, epoch_seed: int, global_epoch: int):
    """`(training data, validation data)` of one epoch: cached pooled features for a cached phase
    (shuffled by the epoch's seed), otherwise the image stream (order and augmentation by epoch)."""
    if not phase.cached:
        return train_stream(global_epoch), val_data
    train_features, train_indices, val_features = features
    order = np.random.default_rng(epoch_seed).permutation(len(train_indices))
    label_dtype = "float32" if table.multi_label else "int32"
    train_data = tf.data.Dataset.from_tensor_slices((
        train_features[order], table.labels[train_indices][order].astype(label_dtype),
        sample_weights(table, train_indices[order], config.class_weight),
    )).batch(config.batch_size)
    return train_data, (val_features, table.labels[splits.val].astype(label_dtype))


def train(
    table: ImageTable,
    splits: Splits,
    config: TrainConfig,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    verbose: int = 1,
) -> TrainResult:
    """Trains a classifier with `config.strategy`, checkpointing every epoch into `run_dir`.

    Args:
        table: The images (after `drop_unreadable`).
        splits: Train/val/test indices; test is not touched here.
        config: How to train.
        run_dir: Folder for checkpoints and the best weights; None keeps nothing on disk.
        resume: Continue the run in `run_dir` from its latest checkpoint.
        verbose: Keras progress bars (1) or silence (0).

    Returns:
        A `TrainResult` whose model holds the best weights seen (by `config.monitor`).

    Example:
        >>> result = train(table, splits, TrainConfig(strategy="fine_tune", epochs=3))  # doctest: +SKIP
        >>> [p.name for p in result.phases]  # doctest: +SKIP
        ['head', 'fine_tune']
    """
    started = time.perf_counter()
    if config.strategy == "scratch" and config.weights is not None:
        config = replace(config, weights=None)
    run_dir = Path(run_dir) if run_dir is not None else None
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    devices = configure_devices(config.jit_compile, config.mixed_precision, config.distribution)
    phases = plan_phases(config)
    with devices.strategy.scope():
        model = build_classifier(
            config.backbone, table.num_classes, config.weights, config.image_size, config.dropout,
            task="multilabel" if table.multi_label else "multiclass",
            train_batchnorm=config.strategy == "scratch", seed=config.seed, grayscale=config.grayscale,
            pooling=config.pooling,
        )
    state, checkpoint = _start_or_resume(model, config, run_dir, resume)
    context = _RunContext(table, splits, config, devices, model, state, run_dir, verbose)
    context.val_data = make_dataset(table, splits.val, config.image_size, config.batch_size, cache=config.cache)
    context.train_stream = EpochStream(
        table, splits.train, config.image_size, config.batch_size, config.seed, config.augment,
        config.cache, config.class_weight, config.oversample,
    )
    tracker = BestWeights(model, state, config.monitor, config.patience, run_dir)
    summaries, stopped = _run_phases(context, phases, tracker, checkpoint)
    if not stopped:
        tracker.restore_run_best()
    return TrainResult(
        model=model,
        history=state.history,
        phases=summaries,
        weights_source=weights_info(model).source,
        device=devices.description,
        seconds=time.perf_counter() - started,
        stopped=stopped,
        config=_config_record(config),
    )


def _start_or_resume(model: keras.Model, config: TrainConfig, run_dir: Path | None, resume: bool):
    """`(state, checkpoint)`: a fresh state, or the latest checkpoint's with its weights loaded into `model`."""
    state = TrainingState()
    checkpoint = latest_checkpoint(run_dir) if (resume and run_dir is not None) else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"Nothing to resume in '{run_dir}': no complete checkpoint under checkpoints/.")
    if checkpoint is not None:
        state = TrainingState.from_dict(load_state(checkpoint))
        load_model_weights(model, checkpoint / "model.weights.h5")
    if run_dir is not None:
        remove_stale_files(run_dir)  # what a kill during a write left: never read, never pruned otherwise
        write_atomically(TrainingFolder(run_dir).train_config_file, json.dumps(_config_record(config), indent=2))
    return state, checkpoint


def _run_phases(context: _RunContext, phases: list[Phase], tracker: BestWeights, checkpoint: Path | None
                ) -> tuple[list[PhaseSummary], bool]:
    """`(summaries, stopped)`: every phase not finished before, in order; Ctrl-C stops after the epoch it is in."""
    state, config = context.state, context.config
    summaries = [PhaseSummary(**p) for p in state.phases]
    try:
        for phase_index, phase in enumerate(phases):
            if phase_index >= state.phase_index:
                summaries.append(_run_phase(context, phase, phase_index, tracker, summaries, checkpoint))
                checkpoint = None  # only the phase in progress resumes its optimizer
                if context.verbose:
                    print(summaries[-1].line(config.monitor))
    except KeyboardInterrupt:
        warnings.warn(
            f"Stopped by Ctrl-C after epoch {state.global_epoch}; every finished epoch is saved. "
            + (f"Resume with train(..., run_dir={str(context.run_dir)!r}, resume=True)." if context.run_dir else ""),
            stacklevel=3,
        )
        return summaries, True
    return summaries, False


@dataclass
class _RunContext:
    """What every phase of one `train` call shares."""

    table: ImageTable
    splits: Splits
    config: TrainConfig
    devices: object
    model: keras.Model
    state: TrainingState
    run_dir: Path | None  # None: nothing is written
    verbose: int
    val_data: object = None
    train_stream: EpochStream | None = None
    features: tuple | None = None


def _run_phase(context: _RunContext, phase: Phase, phase_index: int, tracker: BestWeights,
               summaries: list[PhaseSummary], checkpoint: Path | None) -> PhaseSummary:
    """Trains one phase to its end or its early stop, checkpointing after every epoch."""
    config, state, model = context.config, context.state, context.model
    phase_started = time.perf_counter()
    blocks = _set_phase_trainable(model, phase)
    if phase.cached and context.features is None:
        context.features = feature_data(model, context.table, context.splits, config, context.verbose)
    trainer = model.get_layer("head") if phase.cached else model
    steps = math.ceil(len(context.features[1]) / config.batch_size) if phase.cached else context.train_stream.steps
    with context.devices.strategy.scope():  # optimizer variables must live where the model does
        loss, metrics = _loss_and_metrics(context.table.multi_label)
        optimizer = _optimizer(model, phase, config, steps)
        trainer.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=context.devices.jit_compile)
        if checkpoint is not None and state.phase_epoch > 0:
            restore_optimizer(optimizer, trainer, checkpoint)
    tracker.start_phase()
    first_epoch = state.global_epoch - state.phase_epoch + 1
    for epoch in range(state.phase_epoch, phase.epochs):
        epoch_seed = config.seed * 1_000_003 + state.global_epoch
        train_data, validation = _epoch_data(phase, context.features, context.table, context.splits, config,
                                             context.train_stream, context.val_data, epoch_seed, state.global_epoch)
        _reseed(model, epoch_seed)
        verbose = keras_verbose(context.verbose)
        if verbose:  # without a terminal, Keras' one plain line follows on the same line
            print(f"{phase.name} epoch {epoch + 1}/{phase.epochs}", end="\n" if verbose == 1 else " - ", flush=True)
        epoch_started = time.perf_counter()
        history = trainer.fit(train_data, validation_data=validation, epochs=1, verbose=verbose, shuffle=False)
        record = {k: float(v[-1]) for k, v in history.history.items()}
        _check_finite(record, phase, epoch, config)
        record.update(phase=phase.name, epoch=state.global_epoch + 1, seconds=time.perf_counter() - epoch_started)
        state.history.append(record)
        state.global_epoch += 1
        state.phase_epoch = epoch + 1
        tracker.update(record[config.monitor])
        finished = tracker.should_stop or state.phase_epoch == phase.epochs
        summary = None
        if finished:
            tracker.restore_phase_best()
            summary = PhaseSummary(
                phase.name, _trainable_params(model, phase), blocks, state.phase_epoch,
                state.phase_best_epoch, state.phase_best, time.perf_counter() - phase_started, first_epoch=first_epoch,
            )
            state.phase_index, state.phase_epoch = phase_index + 1, 0
            state.phases = [asdict(p) for p in [*summaries, summary]]
        if context.run_dir is not None:
            save_checkpoint(context.run_dir, model, None if state.phase_epoch == 0 else optimizer, state.to_dict())
        if finished:
            return summary
    raise AssertionError("unreachable: a phase ends at its last epoch")  # pragma: no cover


def _check_finite(record: dict, phase: Phase, epoch: int, config: TrainConfig) -> None:
    """A ValueError naming the phase and the setting to lower when the loss is no longer a number (the
    epoch is not saved: a resumed run starts from the last finite one)."""
    if all(math.isfinite(value) for key, value in record.items() if key.endswith("loss")):
        return
    setting = "learning_rate" if phase.name in ("head", "scratch") else "fine_tune_learning_rate"
    raise ValueError(
        f"The training loss became {record.get('loss')} in phase {phase.name!r} (epoch {epoch + 1} of {phase.epochs}) at "
        f"{setting} {getattr(config, setting)}: the weights diverged. Lower training.{setting} (e.g. 10x: "
        f"--{setting.replace('_', '-')} {getattr(config, setting) / 10:g}), or check the images for constant or "
        "corrupt ones.")


def _trainable_params(model: keras.Model, phase: Phase) -> int:
    if phase.cached or phase.blocks == ():
        return int(sum(np.prod(w.shape) for w in model.get_layer("head").trainable_weights))
    backbone_params = sum(row.trainable_params for row in trainable_summary(model))
    return int(backbone_params + sum(np.prod(w.shape) for w in model.get_layer("head").trainable_weights))


def _config_record(config: TrainConfig) -> dict:
    record = asdict(config)
    record["augment"] = None if config.augment is None else asdict(config.augment)
    record["image_size"] = list(config.image_size)
    return record
