"""Running a recipe: one run (`run`); `tfx_transfer.sweep` runs many of them as a comparison.

A run reads the recipe's data, splits it, trains, predicts the validation and test splits and
writes a run folder (its layout: `tfx_transfer.run_folder`). With `training.ensemble_size` > 1,
model.keras is one model averaging its members.

Example:
    >>> result = run("recipes/product_defects.yaml", strategy="feature_extraction")  # doctest: +SKIP
    >>> result.metrics["roc_auc"]  # doctest: +SKIP
    0.90
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from tfx_transfer.checkpoint import has_checkpoint
from tfx_transfer.embedded import resolve_source
from tfx_transfer.recipe import Recipe, RecipeError, load_recipe
from tfx_transfer.run_folder import RunFolder
from tfx_transfer.settings import NOT_TRAINING_CONFIG
from tfx_transfer.sources import ImageTable
from tfx_transfer.splits import Splits, nested_subset, split_table

#: Class names that mean "nothing wrong"; with two classes, the other one is the positive class.
NEGATIVE_NAMES = ("good", "ok", "normal", "no_finding", "no finding", "negative", "pass", "healthy", "clean")


@dataclass
class PreparedData:
    """A recipe's data, read, scanned and split once (shared by every run of a comparison)."""

    table: ImageTable
    splits: Splits
    source: str
    positive_index: int | None


@dataclass
class RunResult:
    """What `run` returns."""

    run_dir: Path
    report: dict

    @property
    def metrics(self) -> dict:
        return self.report["metrics"]


def as_recipe(recipe, overrides=None, strategy: str | None = None, quick: bool = False) -> Recipe:
    """A `Recipe` from a recipe or its path (or built-in name), with the quick version, `--set`
    overrides and strategy applied in the order the CLI applies them.

    Example:
        >>> as_recipe("product_defects", ["training.epochs=2"], strategy="fine_tune").training.epochs  # doctest: +SKIP
        2
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if quick:
        recipe = recipe.quick_version()
    if overrides:
        recipe = recipe.with_overrides(overrides)
    if strategy:
        recipe = recipe.with_overrides({"training.strategy": strategy})
    return recipe


def apply_group_pattern(table: ImageTable, pattern: str) -> ImageTable:
    """Groups from file names: the pattern's first group (or whole match) is the group id.

    Files the pattern does not match are their own group, with a warning if any.
    """
    if table.paths is None:
        return table
    regex = re.compile(pattern)
    groups, unmatched = [], 0
    for path in table.paths:
        match = regex.search(Path(path).name)
        if match is None:
            unmatched += 1
            groups.append(f"file:{path}")
        else:
            groups.append(match.group(1) if match.groups() else match.group(0))
    if unmatched:
        warnings.warn(
            f"data.group_pattern {pattern!r} matched no group id in {unmatched} of {len(table)} file names; "
            "those images are treated as independent. Fix the pattern if they share patients or parts.",
            stacklevel=3,
        )
    return replace(table, groups=np.array(groups, dtype=object))


def _positive_index(recipe: Recipe, class_names: list[str]) -> int | None:
    if len(class_names) != 2:
        return None
    lowered = [name.lower() for name in class_names]
    wanted = recipe.data.positive_class
    if wanted is not None and wanted.lower() in lowered:
        return lowered.index(wanted.lower())
    negatives = [i for i, name in enumerate(lowered) if name in NEGATIVE_NAMES]
    index = 1 - negatives[0] if len(negatives) == 1 else 1
    if wanted is not None:
        warnings.warn(
            f"data.positive_class {wanted!r} is not a class of this data ({class_names}); using "
            f"{class_names[index]!r} as the positive class. Set --set data.positive_class=NAME to choose.",
            stacklevel=3,
        )
    return index


def prepare_data(recipe: Recipe, data: str | os.PathLike | None = None, scan_cache=None) -> PreparedData:
    """Reads, scans and splits the recipe's data (or `data` instead of `data.source`)."""
    from tfx_transfer.data import drop_unreadable
    from tfx_transfer.sources import load_source

    source = str(data) if data is not None else recipe.data.source
    if not source:
        raise RecipeError(recipe.path or "recipe", "data.source",
                          "no data: set data.source in the recipe or pass --data PATH")
    location = resolve_source(source)
    if not location.startswith("tfds:") and not Path(location).exists():
        raise FileNotFoundError(
            f"Data not found: '{location}' (from {'--data' if data is not None else 'data.source'}). "
            "Expected a folder with one sub-folder per class, a Kermany (train/test/<class>/) or GTSRB "
            "(Final_Training/Images/) layout, or a CSV file."
        )
    try:
        table = load_source(location, **recipe.data.options)
    except TypeError as error:  # an option the reader does not take
        raise RecipeError(recipe.path or "recipe", "data.options", f"{error}; see the reader's documentation "
                          "in tfx_transfer.sources") from None
    if recipe.data.weight_column:
        table = _read_weights(table, Path(location), recipe.data.weight_column,
                              recipe.data.options.get("path_column", "path"))
    if recipe.data.group_pattern and table.groups is None:
        table = apply_group_pattern(table, recipe.data.group_pattern)
    if recipe.data.sample < 1.0:
        table = table.subset(nested_subset(table, np.arange(len(table)), recipe.data.sample, seed=recipe.training.seed))
    table = drop_unreadable(table, scan_cache=scan_cache)
    # A line with (almost) only good parts: the anomaly strategy needs defects in test alone.
    complete = ("test",) if recipe.training.strategy == "anomaly" else ("train", "val", "test")
    splits = split_table(table, recipe.data.validation_split, recipe.data.test_split, seed=recipe.training.seed,
                         complete=complete)
    positive = None if table.multi_label else _positive_index(recipe, table.class_names)
    return PreparedData(table, splits, source, positive)


def _read_weights(table: ImageTable, location: Path, column: str, path_column: str) -> ImageTable:
    from tfx_transfer.sources import with_weights

    if location.suffix.lower() == ".csv":  # the source's own rows, with its own path column
        return with_weights(table, location, column, path_column)
    csv_path = location / "labels.csv"
    if not csv_path.is_file():
        warnings.warn(f"data.weight_column is {column!r} but '{csv_path}' does not exist: training unweighted. "
                      "Add that file (columns path and the weight) or unset data.weight_column.", stacklevel=3)
        return table
    return with_weights(table, csv_path, column, "path")


def _flip_map(overrides: dict, class_names: list[str]) -> dict:
    """Recipes name mirror pairs by class name; the policy wants label indices."""
    mapping = overrides.get("flip_map")
    if mapping is None:
        return overrides
    index = {name: i for i, name in enumerate(class_names)}
    resolved, absent = {}, []
    for source, target in mapping.items():
        if isinstance(source, int) and isinstance(target, int):
            resolved[source] = target
        elif source in index and target in index:
            resolved[index[source]] = index[target]
            resolved[index[target]] = index[source]
        else:
            absent += [name for name in (source, target) if name not in index]
    if absent:
        warnings.warn(f"flip_map names classes this data does not have: {sorted(set(map(str, absent)))}; "
                      "those pairs are not flipped.", stacklevel=3)
    if not resolved:  # nothing may be mirrored: no flips at all
        return dict(overrides, flip_map=None, horizontal_flip=False)
    return dict(overrides, flip_map=resolved)


def train_config(recipe: Recipe, class_names: list[str]):
    """The `TrainConfig` a recipe means for data with these classes."""
    from tfx_transfer.augment import make_policy
    from tfx_transfer.train import TrainConfig

    augmentation = recipe.augmentation
    policy = make_policy(augmentation.policy, _flip_map(augmentation.overrides, class_names), augmentation.force)
    weights = None if recipe.model.weights == "none" else recipe.model.weights
    training = {name: value for name, value in asdict(recipe.training).items()
                if name not in NOT_TRAINING_CONFIG["training"]}
    return TrainConfig(
        **training, backbone=recipe.model.backbone, weights=weights,
        image_size=(recipe.model.image_size, recipe.model.image_size), dropout=recipe.model.dropout,
        grayscale=recipe.model.grayscale, pooling=recipe.model.pooling, augment=None if policy.is_identity else policy,
    )


def _add_explanations(folder: RunFolder, what: str, make) -> None:
    """Heatmaps over the test images the report will show, into explanations.npz (before the
    report is written, so that it shows them): `make(report, predictions)` draws them (Grad-CAM,
    or an anomaly run's maps). A failure costs the heatmaps only, never the finished run (a
    warning says why)."""
    from tfx_transfer.report import build_run_report

    try:
        arrays = make(build_run_report(folder.path), folder.read_predictions())
    except Exception as error:  # noqa: BLE001 (any failure here must not lose the trained run)
        warnings.warn(f"{what} were not made ({type(error).__name__}: {error}); the run's results are unaffected.",
                      stacklevel=2)
        return
    if arrays:
        folder.write_explanations(arrays)


def _anomaly_scores(detector, table, splits, positive_index: int, facts: dict):
    """Validation and test scores of an anomaly run, the raw distances for predictions.npz, and the
    test anomaly maps; the distance-to-score map is centred on the good validation images."""
    from tfx_transfer.anomaly import peak_memory_megabytes

    val_distance, _ = detector.distances(table, splits.val, keep_maps=False)
    test_distance, test_maps = detector.distances(table, splits.test)
    good = val_distance[table.labels[splits.val] != positive_index]
    detector.fit_score_map(good if len(good) else val_distance)
    facts["score_map"] = {"center": detector.center, "scale": detector.scale}
    facts["peak_memory_megabytes"] = peak_memory_megabytes()
    return (detector.scores(val_distance, positive_index), detector.scores(test_distance, positive_index),
            {"val_distance": val_distance, "test_distance": test_distance}, test_maps)


#: Training images whose paths a run keeps (predictions.npz `train_sample_paths`) for int8 export.
TRAIN_SAMPLE_SIZE = 200


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


def training_indices(prepared: PreparedData, fraction: float = 1.0, seed: int = 0, defects: int | None = None
                     ) -> np.ndarray:
    """The training rows of a run: the nested, stratified `fraction` of the training split, then at
    most `defects` images of the positive (defect) class, a seeded choice nested across counts
    (the 5 of `defects=5` are among the 20 of `defects=20`).

    Example:
        >>> training_indices(prepared, 1.0, seed=0, defects=5)  # doctest: +SKIP
    """
    table = prepared.table
    indices = nested_subset(table, prepared.splits.train, fraction, seed=seed)
    if defects is None:
        return indices
    if prepared.positive_index is None:
        raise ValueError(f"Limiting the defect images needs two classes with a positive (defect) class; this data has "
                         f"{len(table.class_names)}: {table.class_names}. Set data.positive_class, or drop --defects.")
    positives = indices[table.labels[indices] == prepared.positive_index]
    kept = np.random.default_rng(10_007 + seed).permutation(positives)[:int(defects)]
    return np.sort(np.concatenate([indices[table.labels[indices] != prepared.positive_index], kept]))


def data_digest(prepared: PreparedData, train_indices: np.ndarray) -> dict:
    """What `--resume` checks: which images (paths relative to their common folder, or the pixels of
    in-memory data), with which labels and weights, in which split. File contents are not read.
    """
    table, splits = prepared.table, prepared.splits
    digest = hashlib.sha256()
    if table.paths is not None and len(table.paths):
        paths = [str(path) for path in table.paths]
        root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
        digest.update("\n".join(os.path.relpath(path, root) for path in paths).encode())
    if table.arrays is not None:
        digest.update(np.ascontiguousarray(table.arrays).tobytes())
    for part in (table.labels, table.weights, train_indices, splits.val, splits.test):
        if part is not None:
            digest.update(np.ascontiguousarray(part).tobytes())
    return {"digest": digest.hexdigest(), "images": len(table), "source": prepared.source,
            "train": int(len(train_indices)), "val": int(len(splits.val)), "test": int(len(splits.test))}


def versions() -> dict:
    import keras
    import sklearn
    import tensorflow as tf

    import tfx_transfer

    return {"tfx_transfer": tfx_transfer.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "scikit-learn": sklearn.__version__, "numpy": np.__version__, "python": platform.python_version()}


def run_prepared(recipe: Recipe, prepared: PreparedData, out: str | os.PathLike, fraction: float = 1.0,
                 seed: int | None = None, verbose: int = 1, resume: bool = False,
                 keep_checkpoints: bool = False, defects: int | None = None) -> RunResult:
    """Trains and evaluates one configuration on data already prepared; see `run`.

    `defects` keeps at most that many defect images in the training split (`training_indices`).
    """
    from tfx_transfer.ensemble import train_ensemble
    from tfx_transfer.predict import score_images
    from tfx_transfer.report import write_run_report
    from tfx_transfer.train import epochs_to_best

    started = time.perf_counter()
    folder = RunFolder(out)
    out = folder.path
    if seed is not None:
        recipe = recipe.with_overrides({"training.seed": seed})
    table, splits = prepared.table, prepared.splits
    train_indices = training_indices(prepared, fraction, recipe.training.seed, defects)
    digest = data_digest(prepared, train_indices)
    if resume and folder.is_finished and folder.model_file.is_file():
        folder.check_same(recipe, digest)
        return RunResult(out, json.loads(folder.report_file.read_text()))  # finished before: nothing to continue
    folder.start(recipe, digest, resume=resume)
    config = train_config(recipe, table.class_names)
    anomaly = recipe.training.strategy == "anomaly"
    if anomaly:
        from tfx_transfer.anomaly import fit_run

        result, anomaly_facts = fit_run(table, train_indices, prepared.positive_index, recipe, verbose)
    else:
        # --resume continues from the newest complete checkpoint (an ensemble member's too); a run
        # stopped before its first checkpoint starts again from the beginning.
        resume_training = resume and has_checkpoint(folder.training_dir)
        result = train_ensemble(table, replace(splits, train=train_indices), config, recipe.training.ensemble_size,
                                run_dir=folder.training_dir, resume=resume_training, verbose=verbose)
    if result.stopped:
        data = f" --data {prepared.source}" if prepared.source != recipe.data.source else ""
        raise KeyboardInterrupt(f"resume with: tfx-transfer run {recipe.path or recipe.name}{data} --out {out} --resume")
    predict_started = time.perf_counter()
    views = 1 if anomaly else recipe.evaluation.test_time_views
    extra = {}
    if anomaly:
        val_score, test_score, extra, test_maps = _anomaly_scores(result.detector, table, splits,
                                                                  prepared.positive_index, anomaly_facts)
        folder.write_anomaly(result.detector.arrays())
    else:
        val_score = score_images(result.model, table, splits.val, config.image_size, views)
        test_score = score_images(result.model, table, splits.test, config.image_size, views)
    predict_seconds = time.perf_counter() - predict_started
    folder.write_predictions(val_true=table.labels[splits.val], val_score=val_score,
                             test_true=table.labels[splits.test], test_score=test_score, **extra,
                             **_image_records(table, "test", splits.test),
                             # int8 export calibrates its quantisation on training images (tfx_transfer.export)
                             **_image_records(table, "train_sample", _sample(train_indices, TRAIN_SAMPLE_SIZE, recipe.training.seed)))
    folder.write_history(result.history)
    folder.save_model(result.model)
    # What trained the model: an anomaly run leaves the training split's defects out.
    used = train_indices[table.labels[train_indices] != prepared.positive_index] if anomaly else train_indices
    skipped = [list(item) for item in table.skipped]
    facts = {
        "recipe": recipe.name,
        "description": recipe.description,
        "strategy": recipe.training.strategy,
        "label": strategy_label(recipe),
        "backbone": recipe.model.backbone,
        "weights": {"requested": recipe.model.weights, "source": result.weights_source,
                    "pretrained": result.weights_source != "random"},
        "image_size": recipe.model.image_size,
        "grayscale": recipe.model.grayscale,
        "pooling": recipe.model.pooling,
        "seed": recipe.training.seed,
        "ensemble": None if "member_seeds" not in result.config else {
            "size": result.config["ensemble_size"], "member_seeds": result.config["member_seeds"]},
        "fraction": fraction,
        "data": {
            "source": prepared.source, "reader": table.source, "class_names": list(table.class_names),
            "n_train": int(len(used)), "n_train_available": int(len(splits.train)),
            "n_val": int(len(splits.val)), "n_test": int(len(splits.test)), "skipped": skipped,
            "grouped": table.groups is not None, "leaks": len(splits.leaks),
            "train_counts": (table.labels[used].sum(axis=0) if table.multi_label else
                             np.bincount(table.labels[used], minlength=table.num_classes)).tolist(),
            "image_weights": None if table.weights is None or anomaly else {
                "column": recipe.data.weight_column, "train_mean": float(table.weights[used].mean()),
                "train_below_1": int((table.weights[used] < 1).sum())},
        },
        "defects": 0 if anomaly else defects,
        "anomaly": anomaly_facts if anomaly else None,
        "augmentation": None if config.augment is None or anomaly else {
            "policy": config.augment.name,
            **{k: v for k, v in asdict(config.augment).items() if k != "name" and v not in (0, 0.0, False, None, {})}},
        "evaluation": {"primary_metric": recipe.evaluation.primary_metric,
                       # An anomaly score has no 0.5 that means anything: its threshold is always chosen.
                       "operating_point": "target_recall" if anomaly else recipe.evaluation.operating_point,
                       "target_recall": recipe.evaluation.target_recall,
                       "good_quantile": recipe.evaluation.good_quantile,
                       "positive_index": prepared.positive_index, "bootstrap": recipe.evaluation.bootstrap,
                       "test_time_views": views},
        "phases": [asdict(phase) for phase in result.phases],
        "trainable_params": max((phase.trainable_params for phase in result.phases), default=0),
        "epochs_to_best": epochs_to_best(result.phases, config.monitor),
        # An ensemble's members train one after the other: its epochs are its longest member's.
        "epochs": max(Counter(record.get("member") for record in result.history).values(), default=0),
        "timing": {"train_seconds": result.seconds, "predict_seconds": predict_seconds,
                   "total_seconds": time.perf_counter() - started},
        "device": result.device,
        "versions": versions(),
    }
    folder.write_facts(facts)
    if anomaly:
        from tfx_transfer.anomaly import explain_test_images as draw_anomaly_maps

        _add_explanations(folder, "Anomaly maps", lambda report, predictions: draw_anomaly_maps(
            test_maps, table, splits.test, config.image_size, report, predictions, anomaly_facts["blocks"],
            recipe.training.seed))
    elif not table.multi_label:
        from tfx_transfer import explain

        _add_explanations(folder, "Grad-CAM heatmaps", lambda report, predictions: explain.explain_test_images(
            result.model, table, splits.test, config.image_size, report, predictions, recipe.training.seed))
    report = write_run_report(out)
    if not keep_checkpoints:  # the model is kept; checkpoints only serve an unfinished run
        shutil.rmtree(folder.training_dir, ignore_errors=True)
    return RunResult(out, report)


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
        data: Use this folder/CSV instead of the recipe's `data.source`.
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
    out = Path(out) if out is not None else default_out(recipe)
    prepared = prepare_data(recipe, data, scan_cache=out / "scan.json")
    return run_prepared(recipe, prepared, out, verbose=verbose, resume=resume, keep_checkpoints=keep_checkpoints)
