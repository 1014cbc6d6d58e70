"""A recipe's data, read, scanned and split once, and what a recipe means for it.

`prepare_data` reads the recipe's source (or `--data`), attaches per-image weights and groups,
scans for unreadable files and splits; every run of a comparison shares the result. A run's
training rows are a nested, stratified fraction of the training split (`training_indices`), and
`data_digest` is what `--resume` and a comparison's kept runs check. `train_config` is the
`TrainConfig` a recipe means for data with these classes.

Example:
    >>> prepared = prepare_data(load_recipe("product_defects"))  # doctest: +SKIP
    >>> len(prepared.splits.train)  # doctest: +SKIP
    1836
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from tfx_transfer.config.recipe import Recipe, RecipeError
from tfx_transfer.config.settings import NOT_TRAINING_CONFIG, image_shape
from tfx_transfer.data.embedded import resolve_source
from tfx_transfer.data.sources import AUTO_SPLIT_COLUMN, ImageTable
from tfx_transfer.data.splits import Splits, nested_subset, split_table

#: Class names that mean "nothing wrong"; with two classes, the other one is the positive class.
NEGATIVE_NAMES = ("good", "ok", "normal", "no_finding", "no finding", "negative", "pass", "healthy", "clean")


@dataclass
class PreparedData:
    """A recipe's data, read, scanned and split once (shared by every run of a comparison)."""

    table: ImageTable
    splits: Splits
    source: str
    positive_index: int | None
    #: What `data.relabel` changed (`tfx_transfer.data.relabel.apply_corrections`), or None.
    corrections: dict | None = None


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
    from tfx_transfer.data.pipeline import drop_unreadable
    from tfx_transfer.data.sources import load_source

    source = str(data) if data is not None else recipe.data.source
    if not source:
        raise RecipeError(recipe.path or "recipe", "data.source",
                          "no data: set data.source in the recipe or pass --data PATH")
    location = resolve_source(source) if data is not None else recipe_relative(recipe, resolve_source(source))
    if not location.startswith("tfds:") and not Path(location).exists():
        raise FileNotFoundError(
            f"Data not found: '{Path(location).absolute()}' (from {'--data' if data is not None else 'data.source'} "
            f"{source!r}{'' if data is not None or not recipe.path else ', relative to the recipe file'}). "
            "Expected a folder with one sub-folder per class, a Kermany (train/test/<class>/) or GTSRB "
            "(Final_Training/Images/) layout, or a CSV file."
        )
    options = dict(recipe.data.options)
    if recipe.data.split_column != AUTO_SPLIT_COLUMN:  # the CSV reader's own default is auto
        if not location.lower().endswith(".csv"):
            raise RecipeError(recipe.path or "recipe", "data.split_column",
                              f"applies to a CSV source, and '{location}' is not one (a folder brings its own splits as "
                              "train/, val/ and test/ sub-folders); remove the setting")
        options.setdefault("split_column", recipe.data.split_column)
    try:
        table = load_source(location, **options)
    except TypeError as error:  # an option the reader does not take
        raise RecipeError(recipe.path or "recipe", "data.options", f"{error}; see the reader's documentation "
                          "in tfx_transfer.data.sources") from None
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
    corrections = None
    if recipe.data.relabel:
        from tfx_transfer.data.relabel import apply_corrections

        table, splits, corrections = apply_corrections(table, splits, recipe_relative(recipe, recipe.data.relabel))
    positive = None if table.multi_label else _positive_index(recipe, table.class_names)
    return PreparedData(table, splits, source, positive, corrections)


def recipe_relative(recipe: Recipe, location: str) -> str:
    """A recipe file's relative `data.source` is relative to the recipe file (a copied recipe travels with
    its data), as a path in any config file is; the current folder is tried second, with a warning."""
    if location.startswith("tfds:") or os.path.isabs(location) or not recipe.path or not Path(recipe.path).is_file():
        return location
    beside = Path(recipe.path).resolve().parent / location
    if beside.exists() or not Path(location).exists():
        return str(beside)
    warnings.warn(f"data.source {location!r} is read relative to the recipe file ('{recipe.path}'), and is not there; "
                  f"found it relative to the current folder instead ('{Path(location).absolute()}'). Write it relative "
                  "to the recipe file, or as an absolute path.", stacklevel=4)
    return location


def _read_weights(table: ImageTable, location: Path, column: str, path_column: str) -> ImageTable:
    from tfx_transfer.data.sources import with_weights

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
    from tfx_transfer.data.augment import make_policy
    from tfx_transfer.training.train import TrainConfig

    augmentation = recipe.augmentation
    policy = make_policy(augmentation.policy, _flip_map(augmentation.overrides, class_names), augmentation.force)
    weights = None if recipe.model.weights == "none" else recipe.model.weights
    training = {name: value for name, value in asdict(recipe.training).items()
                if name not in NOT_TRAINING_CONFIG["training"]}
    return TrainConfig(
        **training, backbone=recipe.model.backbone, weights=weights,
        image_size=image_shape(recipe.model.image_size), dropout=recipe.model.dropout,
        grayscale=recipe.model.grayscale, pooling=recipe.model.pooling, augment=None if policy.is_identity else policy,
    )


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
    record = {"digest": digest.hexdigest(), "images": len(table), "source": prepared.source,
              "train": int(len(train_indices)), "val": int(len(splits.val)), "test": int(len(splits.test))}
    if prepared.corrections is not None:  # which corrected labels the run used
        record["corrections"] = prepared.corrections
    return record
