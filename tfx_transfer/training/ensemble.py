"""Ensembles: the same training run from several seeds, the models' probabilities averaged.

Fine-tuning many blocks on a few thousand images lands somewhere else with every training seed:
on ELPV with 12 MobileNetV2 blocks, test accuracy ranged 0.863-0.906 over six seeds, and the
mean of two seeds' probabilities was steadier than either seed alone (recipes/product_defects.yaml). An
ensemble costs its size in training and inference time, and nothing else changes: the data, the
splits and the schedule are the run's; only the training seed differs between members.

Member `i` of a run with seed `s` trains with seed `s * ensemble_size + i`, so the runs of a
comparison (seeds 0, 1, 2, ...) never share a member: their spread stays an honest one.

`feature_extraction` always trains one model: its only trainable part is a linear head on one
frozen backbone's features, a convex problem that every seed solves to nearly the same head, so
members would double the inference cost (two identical backbones) for no gain.

A run folder keeps one training folder per member (`training/member-1`, ...), each checkpointed
every epoch; an interrupted ensemble resumes inside the member it stopped in.

Example:
    >>> result = train_ensemble(table, splits, TrainConfig(strategy="fine_tune"), 2, "runs/x/training")  # doctest: +SKIP
    >>> result.model.name, [phase.member for phase in result.phases]  # doctest: +SKIP
    ('ensemble', [1, 1, 2, 2])
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import keras

from tfx_transfer.runs.folder import TrainingFolder
from tfx_transfer.training.checkpoint import latest_checkpoint
from tfx_transfer.data.sources import ImageTable
from tfx_transfer.data.splits import Splits
from tfx_transfer.training.train import TrainConfig, TrainResult, train


def member_seeds(seed: int, ensemble_size: int) -> list[int]:
    """The training seeds of an ensemble's members: disjoint for different run seeds.

    Example:
        >>> member_seeds(0, 2), member_seeds(1, 2), member_seeds(3, 1)
        ([0, 1], [2, 3], [3])
    """
    if ensemble_size < 1:
        raise ValueError(f"ensemble_size must be at least 1. Received: ensemble_size={ensemble_size!r}")
    return [seed * ensemble_size + index for index in range(ensemble_size)]


def average_models(models: list[keras.Model], name: str = "ensemble") -> keras.Model:
    """One model whose output is the mean of `models`' outputs (same input, same classes).

    The members must have distinct names (they become the ensemble's layers).

    Example:
        >>> model = average_models([first, second])  # doctest: +SKIP
        >>> [layer.name for layer in model.layers]  # doctest: +SKIP
        ['image', 'member_1', 'member_2', 'mean_probability']
    """
    if len(models) == 1:
        return models[0]
    input_shapes = {tuple(model.input_shape[1:]) for model in models}
    output_shapes = {tuple(model.output_shape[1:]) for model in models}
    if len(input_shapes) != 1 or len(output_shapes) != 1:
        raise ValueError(f"Ensemble members need the same input and output shapes. Received inputs "
                         f"{sorted(input_shapes)} and outputs {sorted(output_shapes)}")
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        raise ValueError(f"Ensemble members need distinct names. Received: {names}")
    inputs = keras.Input(models[0].input_shape[1:], dtype=models[0].inputs[0].dtype, name="image")
    outputs = keras.layers.Average(name="mean_probability")([model(inputs) for model in models])
    return keras.Model(inputs, outputs, name=name)


def train_ensemble(
    table: ImageTable,
    splits: Splits,
    config: TrainConfig,
    ensemble_size: int = 1,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    verbose: int = 1,
) -> TrainResult:
    """Trains `ensemble_size` models with `config`, each from its own seed, and averages them.

    With `ensemble_size=1`, or with the `feature_extraction` strategy (see the module
    documentation), this is `train(table, splits, config, run_dir, resume, verbose)`.

    Args:
        table, splits, config, run_dir, resume, verbose: As for `tfx_transfer.training.train.train`;
            `config.seed` is the run's seed, from which the members' seeds follow (`member_seeds`).
        ensemble_size: How many models.

    Returns:
        A `TrainResult` whose model averages the members' probabilities; its history and phases
        are the members' one after the other, each record tagged with its `member` (1-based).
    """
    seeds = member_seeds(config.seed, ensemble_size)
    if ensemble_size > 1 and config.strategy == "feature_extraction":
        # One linear head on frozen features, which every seed brings to nearly the same model. Said
        # nowhere: a recipe that sets the ensemble for its fine-tune (product_defects) runs feature
        # extraction too, and its own settings must not warn.
        ensemble_size = 1
    if ensemble_size == 1:
        return train(table, splits, config, run_dir=run_dir, resume=resume, verbose=verbose)
    run_dir = Path(run_dir) if run_dir is not None else None
    folders = [None if run_dir is None else TrainingFolder(run_dir).member(index + 1).path for index in range(ensemble_size)]
    if resume and not any(folder is not None and latest_checkpoint(folder) for folder in folders):
        raise FileNotFoundError(f"Nothing to resume in '{run_dir}': no member has a complete checkpoint "
                                "under member-N/checkpoints/.")
    results = []
    for index, (seed, folder) in enumerate(zip(seeds, folders)):
        if verbose:
            print(f"ensemble member {index + 1}/{ensemble_size} (training seed {seed})")
        # A member that finished before an interruption resumes to its end at once and returns
        # its best weights; one that never started trains from the beginning.
        member_resume = resume and folder is not None and latest_checkpoint(folder) is not None
        result = train(table, splits, replace(config, seed=seed), run_dir=folder, resume=member_resume, verbose=verbose)
        result.model.name = f"member_{index + 1}"
        results.append(result)
        if result.stopped:
            break
    history = [dict(record, member=index + 1) for index, result in enumerate(results) for record in result.history]
    phases = [replace(phase, member=index + 1) for index, result in enumerate(results) for phase in result.phases]
    stopped = results[-1].stopped
    return TrainResult(
        model=results[0].model if stopped else average_models([result.model for result in results]),
        history=history,
        phases=phases,
        weights_source=results[0].weights_source,
        device=results[0].device,
        seconds=sum(result.seconds for result in results),
        stopped=stopped,
        config=dict(results[0].config, seed=config.seed, ensemble_size=ensemble_size, member_seeds=seeds),
    )
