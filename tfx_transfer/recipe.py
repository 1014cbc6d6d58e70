"""Recipes: a YAML file that says what to train on what, validated into a frozen `Recipe`.

A recipe is data, never code (`yaml.safe_load`). It has five sections, and any field can be
changed from the command line with `--set section.field=value` (or `--set field=value` when the
name is unique):

    data           where the images are and how to split them
    model          backbone, weights, image size, grayscale input, pooling
    training       strategy and its schedule (the fields of `TrainConfig`), ensemble size
    augmentation   a domain policy, parameter overrides and forced operations with reasons
    evaluation     the primary metric and the operating point

`quick` holds overrides for smoke runs (`tfx-transfer demo --quick`, `run --quick`).

Example:
    >>> recipe = load_recipe("recipes/product_defects.yaml")  # doctest: +SKIP
    >>> recipe.training.strategy  # doctest: +SKIP
    'feature_extraction'
    >>> recipe.with_overrides(["training.epochs=2"]).training.epochs  # doctest: +SKIP
    2
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PRIMARY_METRICS = ("roc_auc", "accuracy", "balanced_accuracy", "macro_f1", "average_precision")
OPERATING_POINTS = ("argmax", "target_recall")
MONITORS = ("val_loss", "val_accuracy")
WEIGHTS_CHOICES = ("imagenet", "none")


@dataclass(frozen=True)
class DataSection:
    """Attributes:
        source: A folder (class folders, Kermany or GTSRB layout), a CSV file, `tfds:<name>`, or
            `embedded:<name>` for the toolkit's built-in data (`elpv`, `traffic_signs`, `chest_xray`).
        group_pattern: A regular expression on the file name whose first group (or whole match)
            names the physical thing shown (patient, track, part); one group never spans two splits.
        validation_split: Share of the images for validation when the layout has no `val`.
        test_split: Share for test when the layout has no `test`.
        positive_class: For two classes, the one that counts as positive (defect, pneumonia).
        options: Keyword options of the reader, e.g. `{finding: null}` for NIH multi-label over
            every finding, or `{path_column: file, label_column: grade}` for a CSV.
        sample: Share of the images used at all (stratified, seeded, whole groups), before
            splitting; below 1 for smoke runs on large data sets.
        weight_column: A column of per-image training weights, e.g. how sure the annotators were
            of each label (1 = certain): in the CSV source itself, or in a folder source's
            `labels.csv` (columns `path`, relative to the folder, and this one). A folder without
            that file trains unweighted, with a warning.
    """

    source: str = ""
    group_pattern: str | None = None
    validation_split: float = 0.15
    test_split: float = 0.15
    positive_class: str | None = None
    options: dict = field(default_factory=dict)
    sample: float = 1.0
    weight_column: str | None = None


@dataclass(frozen=True)
class ModelSection:
    """Attributes:
        backbone: Registry name (`tfx-transfer backbones`).
        weights: `imagenet`, `none` or a Keras weights file.
        image_size: Side of the square input in pixels.
        dropout: Dropout before the last layer.
        grayscale: Convert every image to grey inside the model (replicated to 3 channels).
        pooling: Global pooling before the head: `avg`, `max` or `avg_max` (both, concatenated).
    """

    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    image_size: int = 96
    dropout: float = 0.2
    grayscale: bool = False
    pooling: str = "avg"


@dataclass(frozen=True)
class TrainingSection:
    """The fields of `tfx_transfer.train.TrainConfig` a recipe sets; see its documentation.

    One more, `ensemble_size`: how many models to train from different seeds and average
    (`tfx_transfer.ensemble`); it multiplies training and inference time. `feature_extraction`
    trains one model whatever it says (a linear head on frozen features: seeds agree).
    """

    strategy: str = "fine_tune"
    epochs: int = 10
    fine_tune_epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    unfreeze_blocks: int = 3
    unfreeze_from: str | None = None
    gradual_every: int = 2
    warmup_epochs: int = 1
    patience: int = 3
    monitor: str = "val_loss"
    class_weight: str | None = None
    oversample: bool = False
    augmented_views: int = 0
    layer_decay: float | None = None
    seed: int = 0
    ensemble_size: int = 1


@dataclass(frozen=True)
class AugmentationSection:
    """Attributes:
        policy: `none`, `xray`, `traffic_signs` or `defects`.
        overrides: Policy parameters to change, e.g. `{rotation: 5.0}`.
        force: `{operation: reason}` for operations the domain marks unsafe.
    """

    policy: str = "none"
    overrides: dict = field(default_factory=dict)
    force: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationSection:
    """Attributes:
        primary_metric: The number a comparison ranks by (`PRIMARY_METRICS`).
        operating_point: `argmax`, or `target_recall`: the threshold on the positive class's score
            chosen on validation as the highest that reaches `target_recall`, then applied to test.
        target_recall: Sensitivity (defect recall) the operating point must reach on validation.
        bootstrap: Resamples of the test split for the 95% interval of the primary metric.
        test_time_views: Validation and test scores are the mean over this many symmetric views
            of each image (1, 2, 4 or 8: mirrors and quarter turns), only where the augmentation
            policy trained the model on those views (see `augment.check_test_time_views`).
    """

    primary_metric: str = "accuracy"
    operating_point: str = "argmax"
    target_recall: float = 0.9
    bootstrap: int = 1000
    test_time_views: int = 1


SECTIONS = {
    "data": DataSection,
    "model": ModelSection,
    "training": TrainingSection,
    "augmentation": AugmentationSection,
    "evaluation": EvaluationSection,
}


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Build it with `load_recipe` or `Recipe.from_dict`.

    Attributes:
        name: Short name, used for run folders.
        description: One line for reports.
        quick: Dotted overrides for a smoke run, e.g. `{"training.epochs": 1}`.
        path: The file it was read from (for error messages), or None.
    """

    name: str
    description: str = ""
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    augmentation: AugmentationSection = field(default_factory=AugmentationSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    quick: dict = field(default_factory=dict)
    path: str | None = None

    @classmethod
    def from_dict(cls, mapping: dict, where: str = "recipe", check_quick: bool = True) -> "Recipe":
        """Validates a mapping (the parsed YAML) into a Recipe; `where` names it in errors."""
        if not isinstance(mapping, dict):
            raise RecipeError(where, None, f"expected a mapping of sections, received {type(mapping).__name__}")
        top = {"name", "description", "quick", *SECTIONS}
        _reject_unknown(mapping, top, where, None)
        if not isinstance(mapping.get("name"), str) or not mapping["name"].strip():
            raise RecipeError(where, "name", "every recipe needs a non-empty `name`")
        sections = {}
        for section, section_class in SECTIONS.items():
            values = mapping.get(section) or {}
            if not isinstance(values, dict):
                raise RecipeError(where, section, f"expected a mapping, received {values!r}")
            _reject_unknown(values, {f.name for f in dataclasses.fields(section_class)}, where, section)
            sections[section] = section_class(**{
                key: _coerce(value, _field_type(section_class, key), where, f"{section}.{key}")
                for key, value in values.items()
            })
        quick = mapping.get("quick") or {}
        if not isinstance(quick, dict):
            raise RecipeError(where, "quick", f"expected a mapping of dotted keys, received {quick!r}")
        recipe = cls(name=mapping["name"], description=str(mapping.get("description", "")), quick=dict(quick),
                     path=None if where == "recipe" else where, **sections)
        _validate_choices(recipe, where)
        if check_quick:  # the quick overrides must be valid too, so a typo there fails on reading
            recipe.with_overrides(recipe.quick)
        return recipe

    def to_dict(self) -> dict:
        """Every field, resolved: what a run writes as `recipe.yaml` next to its results."""
        record = {"name": self.name, "description": self.description}
        for section in SECTIONS:
            record[section] = dataclasses.asdict(getattr(self, section))
        record["quick"] = dict(self.quick)
        return record

    def with_overrides(self, overrides) -> "Recipe":
        """A copy with `section.field=value` changes (a list of strings or a dict).

        Values are parsed as YAML (`3`, `0.5`, `true`, `null`, `[a, b]`, `{rotation: 5}`).
        """
        if isinstance(overrides, dict):
            items = list(overrides.items())
        else:
            items = []
            for text in overrides or []:
                if "=" not in text:
                    raise RecipeError(self.path or "recipe", text, "expected --set section.field=value, e.g. training.epochs=3")
                key, value = text.split("=", 1)
                items.append((key.strip(), yaml.safe_load(value)))
        record = self.to_dict()
        for key, value in items:
            section, name = _resolve_key(str(key), self.path or "recipe")
            if section is None:
                record[name] = value
            else:
                record[section][name] = value
        return Recipe.from_dict(record, self.path or "recipe", check_quick=False)

    def quick_version(self) -> "Recipe":
        """The recipe with its `quick` overrides applied (smoke runs, `demo --quick`)."""
        return self.with_overrides(self.quick)


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, the key and how to fix it."""

    def __init__(self, where: str, key: str | None, message: str):
        self.where, self.key, self.message = where, key, message
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")

    def __reduce__(self):  # pickles whole, so a demo worker process can report it
        return type(self), (self.where, self.key, self.message)


def _closest(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def _reject_unknown(values: dict, valid: set[str], where: str, section: str | None) -> None:
    for key in values:
        if key not in valid:
            dotted = f"{section}.{key}" if section else str(key)
            raise RecipeError(
                where, dotted,
                f"unknown key.{_closest(str(key), valid)} Valid keys{' in ' + section if section else ''}: "
                f"{', '.join(sorted(valid))}",
            )


def _resolve_key(key: str, where: str) -> tuple[str | None, str]:
    if key in ("name", "description"):
        return None, key
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise RecipeError(where, key, f"unknown section {section!r}.{_closest(section, SECTIONS)} Sections: {', '.join(SECTIONS)}")
        names = {f.name for f in dataclasses.fields(SECTIONS[section])}
        if name not in names:
            raise RecipeError(where, key, f"unknown key.{_closest(name, names)} Valid keys in {section}: {', '.join(sorted(names))}")
        return section, name
    owners = [s for s, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if len(owners) == 1:
        return owners[0], key
    every = [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    if owners:
        raise RecipeError(where, key, f"ambiguous; write one of {', '.join(f'{s}.{key}' for s in owners)}")
    raise RecipeError(where, key, f"unknown key.{_closest(key, every + [f.split('.')[1] for f in every])} "
                                  "Use section.field, e.g. training.epochs=3")


def _field_type(section_class, name: str):
    return typing.get_type_hints(section_class)[name]


def _coerce(value, annotation, where: str, key: str):
    """Checks (and gently converts: 3 -> 3.0) one value against its field's type."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise RecipeError(where, key, f"must not be empty (null); expected {_type_words(options)}")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if option is dict and isinstance(value, dict):
            return dict(value)
    raise RecipeError(where, key, f"expected {_type_words(options)}, received {value!r} ({type(value).__name__})")


def _type_words(options) -> str:
    words = {bool: "true/false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             type(None): "null"}
    return " or ".join(words.get(option, str(option)) for option in options)


def _check_choice(where: str, key: str, value, choices) -> None:
    if value not in choices:
        raise RecipeError(where, key, f"must be one of {', '.join(map(str, choices))}; received {value!r}.{_closest(str(value), choices)}")


def _check_range(where: str, key: str, value, low, high, inclusive_high=False) -> None:
    if not (low <= value < high or (inclusive_high and value == high)):
        bracket = "]" if inclusive_high else ")"
        raise RecipeError(where, key, f"must be in [{low}, {high}{bracket}; received {value!r}")


def _validate_choices(recipe: Recipe, where: str) -> None:
    from tfx_transfer.augment import POLICIES, TEST_TIME_VIEWS, check_test_time_views, make_policy
    from tfx_transfer.backbones import BACKBONES
    from tfx_transfer.model import CLASSIFIER_POOLINGS
    from tfx_transfer.train import STRATEGIES

    _check_choice(where, "model.backbone", recipe.model.backbone, sorted(BACKBONES))
    _check_choice(where, "model.pooling", recipe.model.pooling, CLASSIFIER_POOLINGS)
    if recipe.model.weights not in WEIGHTS_CHOICES and not Path(recipe.model.weights).suffix:
        raise RecipeError(where, "model.weights", f"must be imagenet, none or a weights file; received {recipe.model.weights!r}")
    _check_choice(where, "training.strategy", recipe.training.strategy, STRATEGIES)
    _check_choice(where, "training.monitor", recipe.training.monitor, MONITORS)
    _check_choice(where, "augmentation.policy", recipe.augmentation.policy, sorted(POLICIES))
    _check_choice(where, "evaluation.primary_metric", recipe.evaluation.primary_metric, PRIMARY_METRICS)
    _check_choice(where, "evaluation.operating_point", recipe.evaluation.operating_point, OPERATING_POINTS)
    if recipe.training.class_weight not in (None, "balanced"):
        raise RecipeError(where, "training.class_weight", f"must be balanced or null; received {recipe.training.class_weight!r}")
    _check_range(where, "data.validation_split", recipe.data.validation_split, 0.0, 1.0)
    _check_range(where, "data.test_split", recipe.data.test_split, 0.0, 1.0)
    if not 0.0 < recipe.data.sample <= 1.0:
        raise RecipeError(where, "data.sample", f"must be in (0, 1]; received {recipe.data.sample!r}")
    _check_range(where, "evaluation.target_recall", recipe.evaluation.target_recall, 0.0, 1.0, inclusive_high=True)
    for key in ("training.epochs", "training.fine_tune_epochs", "training.batch_size", "training.ensemble_size",
                "model.image_size"):
        section, name = key.split(".")
        if getattr(getattr(recipe, section), name) < 1:
            raise RecipeError(where, key, f"must be at least 1; received {getattr(getattr(recipe, section), name)!r}")
    if recipe.model.image_size < 32:
        raise RecipeError(where, "model.image_size", f"must be at least 32 pixels; received {recipe.model.image_size}")
    if recipe.data.group_pattern is not None:
        import re

        try:
            re.compile(recipe.data.group_pattern)
        except re.error as error:
            raise RecipeError(where, "data.group_pattern", f"is not a valid regular expression: {error}") from None
    if recipe.evaluation.operating_point == "target_recall" and recipe.data.positive_class is None:
        raise RecipeError(where, "evaluation.operating_point",
                          "target_recall needs data.positive_class (the class whose recall is targeted)")
    overrides = dict(recipe.augmentation.overrides)
    if overrides.get("flip_map") is not None:
        flip_map = overrides["flip_map"]
        if not isinstance(flip_map, dict) or not all(isinstance(v, (str, int)) for v in [*flip_map, *flip_map.values()]):
            raise RecipeError(where, "augmentation.overrides.flip_map",
                              f"expected a mapping of class names (or indices) to their mirror image, received {flip_map!r}")
        overrides["flip_map"] = {0: 0}  # names become indices once the data's classes are known
    try:
        policy = make_policy(recipe.augmentation.policy, overrides, recipe.augmentation.force)
    except ValueError as error:
        raise RecipeError(where, "augmentation", str(error)) from None
    if recipe.evaluation.test_time_views not in TEST_TIME_VIEWS:
        raise RecipeError(where, "evaluation.test_time_views", f"must be one of {', '.join(map(str, TEST_TIME_VIEWS))}; "
                          f"received {recipe.evaluation.test_time_views!r}")
    try:
        check_test_time_views(recipe.evaluation.test_time_views, policy)
    except ValueError as error:
        raise RecipeError(where, "evaluation.test_time_views", str(error)) from None


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Reads and validates a recipe file.

    Raises:
        FileNotFoundError: if the file does not exist (the message lists the built-in recipes).
        RecipeError: for YAML errors, unknown keys (with the closest valid key) and bad values.

    Example:
        >>> recipe = load_recipe("recipes/chest_xray.yaml")  # doctest: +SKIP
        >>> recipe.evaluation.primary_metric  # doctest: +SKIP
        'roc_auc'
    """
    path = Path(path)
    if not path.is_file():
        builtin = recipes_dir() / f"{path.stem}.yaml"
        if path.parent == Path(".") and not path.suffix and builtin.is_file():
            path = builtin  # `tfx-transfer run chest_xray` means the built-in recipe
        else:
            known = ", ".join(p.stem for p in sorted(recipes_dir().glob("*.yaml")))
            raise FileNotFoundError(f"Recipe file not found: '{path}'. Built-in recipes ({recipes_dir()}): {known}")
    try:
        mapping = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(str(path), None, f"not valid YAML: {error}") from None
    return Recipe.from_dict(mapping, str(path))


def recipes_dir() -> Path:
    """The folder of the built-in recipes (`recipes/` next to the package)."""
    return Path(__file__).resolve().parent.parent / "recipes"


def list_recipes() -> list[Path]:
    return sorted(recipes_dir().glob("*.yaml"))
