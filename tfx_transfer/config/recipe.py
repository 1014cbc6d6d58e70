"""Recipes: a YAML file that says what to train on what, validated into a frozen `Recipe`.

A recipe is data, never code (`yaml.safe_load`). It has six sections, and any field can be
changed from the command line with `--set section.field=value` (or `--set field=value` when the
name is unique):

    data           where the images are and how to split them
    model          backbone, weights, image size, grayscale input, pooling
    training       strategy and its schedule (the fields of `TrainConfig`), ensemble size
    augmentation   a domain policy, parameter overrides and forced operations with reasons
    evaluation     the primary metric and the operating point
    anomaly        the anomaly strategy's patch features and memory bank

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
import importlib.resources
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tfx_transfer.config.settings import SECTIONS as SECTIONS_SETTINGS
from tfx_transfer.config.settings import SettingError, closest, setting
from tfx_transfer.config.settings import defaults as setting_defaults

WEIGHTS_CHOICES = ("imagenet", "none")


def _section_class(section: str, doc: str):
    """A frozen dataclass with one field per setting of `section` (`tfx_transfer.config.settings`)."""
    fields = []
    for item in SECTIONS_SETTINGS[section]:
        if isinstance(item.default, dict):
            fields.append((item.name, item.annotation, field(default_factory=dict)))
        else:
            fields.append((item.name, item.annotation, field(default=item.default)))
    class_name = f"{section.capitalize()}Section"
    cls = dataclasses.make_dataclass(class_name, fields, frozen=True, namespace={"__module__": __name__})
    lines = [f"    {item.name}: {item.help}." for item in SECTIONS_SETTINGS[section]]
    cls.__doc__ = f"{doc}\n\nAttributes (declared in `tfx_transfer.config.settings`):\n" + "\n".join(lines)
    return cls


DataSection = _section_class("data", "Where the images are and how to split them.")
ModelSection = _section_class("model", "Backbone, weights, image size, grayscale input, pooling.")
TrainingSection = _section_class(
    "training",
    "The `TrainConfig` fields a recipe sets, and `ensemble_size`: how many models to train from different "
    "seeds and average (`tfx_transfer.training.ensemble`); `feature_extraction` trains one whatever it says.")
AugmentationSection = _section_class("augmentation", "A domain policy, parameter overrides and forced operations.")
EvaluationSection = _section_class("evaluation", "The primary metric, the operating point and test-time views.")
AnomalySection = _section_class("anomaly", "The `anomaly` strategy's patch features and memory bank (`tfx_transfer.training.anomaly`).")

SECTIONS = {
    "data": DataSection,
    "model": ModelSection,
    "training": TrainingSection,
    "augmentation": AugmentationSection,
    "evaluation": EvaluationSection,
    "anomaly": AnomalySection,
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
    anomaly: AnomalySection = field(default_factory=AnomalySection)
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
                key: _check_setting(section, key, value, where) for key, value in values.items()
            })
        quick = mapping.get("quick") or {}
        if not isinstance(quick, dict):
            raise RecipeError(where, "quick", f"expected a mapping of dotted keys, received {quick!r}")
        recipe = cls(name=mapping["name"], description=str(mapping.get("description", "")), quick=dict(quick),
                     path=None if where == "recipe" else where, **sections)
        _validate_together(recipe, where)
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
                try:
                    items.append((key.strip(), yaml.safe_load(value)))
                except yaml.YAMLError as error:
                    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
                    raise RecipeError(self.path or "recipe", key.strip(),
                                      f"the value {value!r} of --set is not valid YAML ({problem}). Expected e.g. "
                                      f"{key.strip()}=3, =0.5, =true, =null, =[a, b] or ={{name: value}}; quote a "
                                      "text that holds brackets or colons.") from None
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


def _reject_unknown(values: dict, valid: set[str], where: str, section: str | None) -> None:
    for key in values:
        if key not in valid:
            dotted = f"{section}.{key}" if section else str(key)
            raise RecipeError(
                where, dotted,
                f"unknown key.{closest(str(key), valid)} Valid keys{' in ' + section if section else ''}: "
                f"{', '.join(sorted(valid))}",
            )


def _resolve_key(key: str, where: str) -> tuple[str | None, str]:
    if key in ("name", "description"):
        return None, key
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise RecipeError(where, key, f"unknown section {section!r}.{closest(section, SECTIONS)} Sections: {', '.join(SECTIONS)}")
        names = {f.name for f in dataclasses.fields(SECTIONS[section])}
        if name not in names:
            raise RecipeError(where, key, f"unknown key.{closest(name, names)} Valid keys in {section}: {', '.join(sorted(names))}")
        return section, name
    owners = [s for s, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if len(owners) == 1:
        return owners[0], key
    every = [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    if owners:
        raise RecipeError(where, key, f"ambiguous; write one of {', '.join(f'{s}.{key}' for s in owners)}")
    raise RecipeError(where, key, f"unknown key.{closest(key, every + [f.split('.')[1] for f in every])} "
                                  "Use section.field, e.g. training.epochs=3")


def _check_setting(section: str, key: str, value, where: str):
    try:
        return setting(section, key).check(value, f"{section}.{key}")
    except SettingError as error:
        raise RecipeError(where, error.key, error.message) from None


def _validate_together(recipe: Recipe, where: str) -> None:
    """Checks that involve more than one setting, or a file; each setting alone is checked on reading."""
    from tfx_transfer.config.policies import check_test_time_views, make_policy

    if not _SAFE_NAME.fullmatch(recipe.name):
        raise RecipeError(where, "name", f"becomes a folder name, so it takes letters, digits, '.', '_' and '-' "
                                         f"(not starting with '.'); received {recipe.name!r}")
    if recipe.model.weights not in WEIGHTS_CHOICES and not Path(recipe.model.weights).suffix:
        raise RecipeError(where, "model.weights", f"must be imagenet, none or a weights file; received {recipe.model.weights!r}")
    if recipe.data.group_pattern is not None:
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
    try:
        check_test_time_views(recipe.evaluation.test_time_views, policy)
    except ValueError as error:
        raise RecipeError(where, "evaluation.test_time_views", str(error)) from None


_SAFE_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")


def _fields(record: dict) -> dict:
    """`{"section.field": value}` of a resolved recipe (mappings inside a field stay one value)."""
    fields = {}
    for key, value in record.items():
        if isinstance(value, dict):
            fields.update({f"{key}.{name}": inner for name, inner in value.items()})
        else:
            fields[key] = value
    return fields


#: Fields only fine-tuning reads: a change to them leaves scratch and feature-extraction runs valid.
FINE_TUNING_FIELDS = ("training.fine_tune_epochs", "training.fine_tune_learning_rate", "training.unfreeze_blocks",
                      "training.unfreeze_from", "training.gradual_every", "training.layer_decay")


def recipe_changes(written: str | os.PathLike, recipe: Recipe) -> list[str]:
    """What differs between the recipe a run was made with (its `recipe.yaml`) and `recipe`.

    Returns `[]` when the file does not exist. A comparison keeps, and `--resume` continues, a run
    only if it was made with the recipe it runs now.

    Example:
        >>> recipe_changes("runs/cxr/recipe.yaml", load_recipe("chest_xray"))  # doctest: +SKIP
        ['training.epochs: 6 there, 2 now']
    """
    written = Path(written)
    if not written.is_file():
        return []
    # Through YAML both ways, so that tuples and lists (and the like) compare equal.
    before = _fields(yaml.safe_load(written.read_text()))
    now = _fields(yaml.safe_load(yaml.safe_dump(recipe.to_dict(), sort_keys=False)))
    # A field added in a later version did not exist when the run was made: the run had its
    # default (new fields keep the old behaviour as their default), so it is not a change.
    defaults = _fields(yaml.safe_load(yaml.safe_dump({section: setting_defaults(section) for section in SECTIONS})))
    before = {**{key: value for key, value in defaults.items() if key not in before}, **before}
    strategy = recipe.training.strategy
    ignored = ("quick", "description") + (FINE_TUNING_FIELDS if strategy in ("scratch", "feature_extraction") else ())
    # Settings the run's strategy never reads are not changes to it.
    if strategy == "anomaly":  # no training schedule, no augmentation: a memory bank of good patches
        ignored += ("augmentation.",) + tuple(f"training.{name}" for name in setting_defaults("training")
                                             if name not in ("strategy", "seed", "batch_size"))
    else:
        ignored += ("anomaly.",)
    return [f"{key}: {before.get(key)!r} there, {now.get(key)!r} now" for key in sorted(set(before) | set(now))
            if not key.startswith(ignored) and before.get(key) != now.get(key)]


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
    """The folder of the built-in recipes: `tfx_transfer/recipes/`, package data of every install
    (the repository's top-level `recipes/` links to it)."""
    return Path(str(importlib.resources.files("tfx_transfer") / "recipes"))


def list_recipes() -> list[Path]:
    return sorted(recipes_dir().glob("*.yaml"))
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
