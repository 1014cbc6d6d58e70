"""Running a recipe: one run (`run`); `tfx_transfer.experiments.sweep` runs many of them as a comparison.

A run reads the recipe's data, splits it (`tfx_transfer.experiments.prepare`), trains, predicts the
validation and test splits and writes a run folder (its layout: `tfx_transfer.runs.folder`). Its
report is built once, at the end; the heatmaps it shows and model.json are made from that report.
With `training.ensemble_size` > 1, model.keras is one model averaging its members.

Example:
    >>> result = run("recipes/product_defects.yaml", strategy="feature_extraction")  # doctest: +SKIP
    >>> result.metrics["roc_auc"]  # doctest: +SKIP
    0.90
"""

from __future__ import annotations

import os
import platform
import shutil
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from tfx_transfer.config.recipe import Recipe, as_recipe
from tfx_transfer.config.settings import image_shape
from tfx_transfer.experiments.prepare import (PreparedData, data_digest, prepare_data, recipe_relative, train_config,
                                              training_indices)
from tfx_transfer.runs.folder import RunFolder
from tfx_transfer.training.checkpoint import has_checkpoint

#: Training images whose paths a run keeps (predictions.npz `train_sample_paths`) for int8 export.
TRAIN_SAMPLE_SIZE = 200
#: Training images whose pooled features reference.npz keeps: what "far from every training image" means at predict time.
REFERENCE_TRAIN_SIZE = 1000


@dataclass
class RunResult:
    """What `run` returns."""

    run_dir: Path
    report: dict

    @property
    def metrics(self) -> dict:
        return self.report["metrics"]


@dataclass
class _Scored:
    """A trained run's validation and test scores, and what its report draws from them."""

    predict_seconds: float
    views: int
    test_maps: np.ndarray | None = None


def _anomaly_scores(detector, table, splits, positive_index: int, facts: dict):
    """Validation and test scores of an anomaly run, the raw distances for predictions.npz, and the
    test anomaly maps; the distance-to-score map is centred on the good validation images."""
    from tfx_transfer.training.anomaly import peak_memory_megabytes

    val_distance, _ = detector.distances(table, splits.val, keep_maps=False)
    test_distance, test_maps = detector.distances(table, splits.test)
    good = val_distance[table.labels[splits.val] != positive_index]
    detector.fit_score_map(good if len(good) else val_distance)
    facts["score_map"] = {"center": detector.center, "scale": detector.scale}
    facts["peak_memory_megabytes"] = peak_memory_megabytes()
    return (detector.scores(val_distance, positive_index), detector.scores(test_distance, positive_index),
            {"val_distance": val_distance, "test_distance": test_distance}, test_maps)


def _sample(indices: np.ndarray, size: int, seed: int) -> np.ndarray:
    if len(indices) <= size:
        return np.asarray(indices)
    return np.sort(np.random.default_rng(seed).choice(indices, size, replace=False))


def _image_records(table, name: str, indices: np.ndarray) -> dict:
    """`<name>_paths` (and `<name>_rois`, the crop boxes, when the data has them) of the rows `indices`."""
    if table.paths is None:  # in-memory images: nothing to read again later
        return {f"{name}_paths": np.array([], dtype=str)}
    records = {f"{name}_paths": table.paths[indices].astype(str)}
    if table.rois is not None:
        records[f"{name}_rois"] = np.asarray(table.rois[indices], dtype="int32")
    return records


def versions() -> dict:
    import keras
    import sklearn
    import tensorflow as tf

    import tfx_transfer

    return {"tfx_transfer": tfx_transfer.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "scikit-learn": sklearn.__version__, "numpy": np.__version__, "python": platform.python_version()}


def resume_command(folder: RunFolder) -> str:
    """The command that continues the run in `folder` (it reads the folder's own recipe)."""
    return f"tfx-transfer run --resume {folder.path}"


def _fit(recipe: Recipe, prepared: PreparedData, train_indices: np.ndarray, folder: RunFolder, resume: bool,
         verbose: int):
    """`(result, anomaly_facts)`: the trained model (or the fitted anomaly detector) of the run."""
    if recipe.training.strategy == "anomaly":
        from tfx_transfer.training.anomaly import fit_run

        return fit_run(prepared.table, train_indices, prepared.positive_index, recipe, verbose)
    from tfx_transfer.training.ensemble import train_ensemble

    # --resume continues from the newest complete checkpoint (an ensemble member's too); a run
    # stopped before its first checkpoint starts again from the beginning.
    resume_training = resume and has_checkpoint(folder.training_dir)
    config = train_config(recipe, prepared.table.class_names)
    result = train_ensemble(prepared.table, replace(prepared.splits, train=train_indices), config,
                            recipe.training.ensemble_size, run_dir=folder.training_dir, resume=resume_training,
                            verbose=verbose)
    return result, None


def _score(recipe: Recipe, prepared: PreparedData, train_indices: np.ndarray, result, anomaly_facts,
           folder: RunFolder) -> _Scored:
    """Scores validation and test and writes predictions.npz (and anomaly.npz for the anomaly strategy)."""
    from tfx_transfer.evaluation.scoring import score_images

    table, splits = prepared.table, prepared.splits
    started = time.perf_counter()
    anomaly = anomaly_facts is not None
    views = 1 if anomaly else recipe.evaluation.test_time_views
    extra, test_maps = {}, None
    if anomaly:
        val_score, test_score, extra, test_maps = _anomaly_scores(result.detector, table, splits,
                                                                  prepared.positive_index, anomaly_facts)
        folder.write_anomaly(result.detector.arrays())
    else:
        image_size = image_shape(recipe.model.image_size)
        val_score = score_images(result.model, table, splits.val, image_size, views)
        test_score = score_images(result.model, table, splits.test, image_size, views)
    predict_seconds = time.perf_counter() - started
    if not anomaly:
        _write_reference(folder, result.model, table, splits.val, val_score, train_indices, image_size,
                         recipe.training.seed)
    folder.write_predictions(val_true=table.labels[splits.val], val_score=val_score,
                             test_true=table.labels[splits.test], test_score=test_score, **extra,
                             **_image_records(table, "test", splits.test),
                             # int8 export calibrates its quantisation on training images (tfx_transfer.deploy.export)
                             **_image_records(table, "train_sample", _sample(train_indices, TRAIN_SAMPLE_SIZE,
                                                                            recipe.training.seed)))
    return _Scored(predict_seconds, views, test_maps)


def _write_reference(folder: RunFolder, model, table, val_indices, val_score, train_indices, image_size,
                     seed: int) -> None:
    """reference.npz: validation scores and features and a training sample's features, for drift and selection."""
    from tfx_transfer.evaluation.scoring import pooled_features
    from tfx_transfer.models.classifier import pooled_feature_model

    features = pooled_feature_model(model)
    if features is None or table.multi_label:
        return
    sample = _sample(train_indices, REFERENCE_TRAIN_SIZE, seed)
    both = pooled_features(features, table, np.concatenate([val_indices, sample]), image_size)  # one predict call
    folder.write_reference(val_score=np.asarray(val_score, "float32"), val_features=both[:len(val_indices)],
                           train_features=both[len(val_indices):])


def _data_facts(recipe: Recipe, prepared: PreparedData, used: np.ndarray, anomaly: bool) -> dict:
    table, splits = prepared.table, prepared.splits
    return {
        "source": prepared.source, "reader": table.source, "class_names": list(table.class_names),
        "n_train": int(len(used)), "n_train_available": int(len(splits.train)),
        "n_val": int(len(splits.val)), "n_test": int(len(splits.test)), "skipped": [list(item) for item in table.skipped],
        "grouped": table.groups is not None, "leaks": len(splits.leaks),
        "train_counts": (table.labels[used].sum(axis=0) if table.multi_label else
                         np.bincount(table.labels[used], minlength=table.num_classes)).tolist(),
        "image_weights": None if table.weights is None or anomaly else {
            "column": recipe.data.weight_column, "train_mean": float(table.weights[used].mean()),
            "train_below_1": int((table.weights[used] < 1).sum())},
    }


def _evaluation_facts(recipe: Recipe, prepared: PreparedData, views: int, anomaly: bool) -> dict:
    return {"primary_metric": recipe.evaluation.primary_metric,
            # An anomaly score has no 0.5 that means anything: its threshold is always chosen.
            "operating_point": "target_recall" if anomaly else recipe.evaluation.operating_point,
            "target_recall": recipe.evaluation.target_recall, "good_quantile": recipe.evaluation.good_quantile,
            "positive_index": prepared.positive_index, "bootstrap": recipe.evaluation.bootstrap,
            "test_time_views": views}


def run_facts(recipe: Recipe, prepared: PreparedData, train_indices: np.ndarray, fraction: float,
              defects: int | None, result, anomaly_facts, scored: _Scored, started: float) -> dict:
    """run.json: the run's facts (data counts, weights, phases, timing, device, versions)."""
    from tfx_transfer.training.train import epochs_to_best

    table = prepared.table
    anomaly = anomaly_facts is not None
    # What trained the model: an anomaly run leaves the training split's defects out.
    used = train_indices[table.labels[train_indices] != prepared.positive_index] if anomaly else train_indices
    config = train_config(recipe, table.class_names)
    return {
        "recipe": recipe.name, "description": recipe.description, "strategy": recipe.training.strategy,
        "label": strategy_label(recipe), "backbone": recipe.model.backbone,
        "weights": {"requested": recipe.model.weights, "source": result.weights_source,
                    "pretrained": result.weights_source != "random"},
        "image_size": list(image_shape(recipe.model.image_size)), "grayscale": recipe.model.grayscale,
        "pooling": recipe.model.pooling, "seed": recipe.training.seed,
        "ensemble": None if "member_seeds" not in result.config else {
            "size": result.config["ensemble_size"], "member_seeds": result.config["member_seeds"]},
        "fraction": fraction,
        "data": _data_facts(recipe, prepared, used, anomaly),
        "defects": 0 if anomaly else defects,
        "anomaly": anomaly_facts,
        "augmentation": None if config.augment is None or anomaly else {
            "policy": config.augment.name,
            **{k: v for k, v in asdict(config.augment).items() if k != "name" and v not in (0, 0.0, False, None, {})}},
        "evaluation": _evaluation_facts(recipe, prepared, scored.views, anomaly),
        "phases": [asdict(phase) for phase in result.phases],
        "trainable_params": max((phase.trainable_params for phase in result.phases), default=0),
        "epochs_to_best": epochs_to_best(result.phases, config.monitor),
        # An ensemble's members train one after the other: its epochs are its longest member's.
        "epochs": max(Counter(record.get("member") for record in result.history).values(), default=0),
        "timing": {"train_seconds": result.seconds, "predict_seconds": scored.predict_seconds,
                   "total_seconds": time.perf_counter() - started},
        "device": result.device,
        "versions": versions(),
    }


def _explanations(recipe: Recipe, prepared: PreparedData, result, anomaly_facts, scored: _Scored, report: dict,
                  predictions: dict) -> dict:
    """The heatmaps over the test images the report shows (anomaly maps, or Grad-CAM), as explanations.npz arrays."""
    from tfx_transfer.evaluation import explain

    table, test = prepared.table, prepared.splits.test
    image_size = image_shape(recipe.model.image_size)
    if anomaly_facts is not None:
        return explain.anomaly_map_arrays(scored.test_maps, table, test, image_size, report, predictions,
                                          anomaly_facts["blocks"], recipe.training.seed)
    if table.multi_label:
        return {}
    return explain.explain_test_images(result.model, table, test, image_size, report, predictions, recipe.training.seed)


def _finish(folder: RunFolder, recipe: Recipe, prepared: PreparedData, result, anomaly_facts,
            scored: _Scored) -> dict:
    """Builds the run's report (once), adds the heatmaps it shows, writes model.json and the pages.

    A failing heatmap costs the heatmaps only, never the finished run (a warning says why)."""
    from tfx_transfer.reporting.report import build_run_report, explanation_summary, write_model_info, write_report_pages

    report = build_run_report(folder.path)
    try:
        arrays = _explanations(recipe, prepared, result, anomaly_facts, scored, report, folder.read_predictions())
    except Exception as error:  # noqa: BLE001 (any failure here must not lose the trained run)
        what = "Anomaly maps" if anomaly_facts is not None else "Grad-CAM heatmaps"
        warnings.warn(f"{what} were not made ({type(error).__name__}: {error}); the run's results are unaffected.",
                      stacklevel=2)
        arrays = {}
    if arrays:
        folder.write_explanations(arrays)
        report["explanations"] = explanation_summary(arrays, report["data"]["class_names"])
    write_model_info(folder.path, report)
    write_report_pages(folder.path, report)
    return report


def run_prepared(recipe: Recipe, prepared: PreparedData, out: str | os.PathLike, fraction: float = 1.0,
                 seed: int | None = None, verbose: int = 1, resume: bool = False,
                 keep_checkpoints: bool = False, defects: int | None = None) -> RunResult:
    """Trains and evaluates one configuration on data already prepared; see `run`.

    `defects` keeps at most that many defect images in the training split (`training_indices`).
    """
    started = time.perf_counter()
    folder = RunFolder(out)
    if seed is not None:
        recipe = recipe.with_overrides({"training.seed": seed})
    train_indices = training_indices(prepared, fraction, recipe.training.seed, defects)
    digest = data_digest(prepared, train_indices)
    if resume and folder.is_finished and folder.model_file.is_file():
        folder.check_same(recipe, digest)
        return RunResult(folder.path, folder.read_report())  # finished before: nothing to continue
    with folder.lock():  # one process at a time writes a run folder
        folder.start(recipe, digest, resume=resume)
        result, anomaly_facts = _fit(recipe, prepared, train_indices, folder, resume, verbose)
        if result.stopped:
            raise KeyboardInterrupt(f"resume with: {resume_command(folder)}")
        scored = _score(recipe, prepared, train_indices, result, anomaly_facts, folder)
        folder.write_history(result.history)
        folder.save_model(result.model)
        folder.write_facts(run_facts(recipe, prepared, train_indices, fraction, defects, result, anomaly_facts, scored,
                                     started))
        report = _finish(folder, recipe, prepared, result, anomaly_facts, scored)
        if not keep_checkpoints:  # the model is kept; checkpoints only serve an unfinished run
            shutil.rmtree(folder.training_dir, ignore_errors=True)
    return RunResult(folder.path, report)


def strategy_label(recipe: Recipe) -> str:
    """The name a comparison shows: the strategy, with its unfrozen block count when fine-tuning."""
    strategy = recipe.training.strategy
    if strategy in ("fine_tune", "gradual"):
        return f"{strategy}_{recipe.training.unfreeze_blocks}" if recipe.training.unfreeze_from is None else \
            f"{strategy}_from_{recipe.training.unfreeze_from}"
    return strategy


def default_out(recipe: Recipe, suffix: str = "") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{recipe.name}{suffix}-{stamp}"


def run(recipe, data: str | os.PathLike | None = None, strategy: str | None = None, overrides=None,
        out: str | os.PathLike | None = None, quick: bool = False, resume: bool = False, verbose: int = 1,
        keep_checkpoints: bool = False) -> RunResult:
    """Runs a recipe: trains, evaluates on the test split and writes a run folder with its report.

    Args:
        recipe: A `Recipe` or the path of a recipe file (a built-in name like `chest_xray` works).
        data: Use this folder/CSV instead of the recipe's `data.source` (the run's recipe.yaml
            records it as its `data.source`, so `--resume RUN_DIR` finds it again).
        strategy: Use this strategy instead of the recipe's.
        overrides: `["section.field=value", ...]` or a dict, as `--set` on the command line.
        out: The run folder (default `runs/<recipe>-<time>`).
        quick: Apply the recipe's `quick` overrides (a smoke run).
        resume: Continue an interrupted run in `out` (a finished one is returned as it is).
        verbose: Keras progress bars (1) or silence (0).
        keep_checkpoints: Keep `training/` (checkpoints, best weights) once the run has finished.

    Example:
        >>> result = run("chest_xray", overrides=["training.epochs=2"], out="runs/cxr")  # doctest: +SKIP
        >>> sorted(result.metrics)[:3]  # doctest: +SKIP
        ['accuracy', 'average_precision', 'balanced_accuracy']
    """
    recipe = as_recipe(recipe, overrides, strategy, quick)
    if data is not None:
        recipe = recipe.with_overrides({"data.source": source_text(data)})
    elif recipe.data.source and not recipe.data.source.startswith(("tfds:", "embedded:")):
        # A recipe file's relative source, as the run's recipe.yaml keeps it: absolute, so --resume finds it again.
        recipe = recipe.with_overrides({"data.source": source_text(recipe_relative(recipe, recipe.data.source))})
    if recipe.data.relabel:  # absolute, as data.source: --resume finds the same corrections again
        recipe = recipe.with_overrides({"data.relabel": source_text(recipe_relative(recipe, recipe.data.relabel))})
    folder = RunFolder(out if out is not None else default_out(recipe))
    folder.check_writable()  # before reading the data, which caches its scan in the folder
    if resume:
        folder.check_resumable()
    prepared = prepare_data(recipe, scan_cache=folder.scan_file)
    out = folder.path
    return run_prepared(recipe, prepared, out, verbose=verbose, resume=resume, keep_checkpoints=keep_checkpoints)


def source_text(data: str | os.PathLike) -> str:
    """A data source as a recipe records it: an absolute path, or `tfds:`/`embedded:` names as given."""
    text = str(data)
    return text if text.startswith(("tfds:", "embedded:")) else str(Path(text).resolve())
