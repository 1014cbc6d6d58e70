"""Every setting of a run, declared once: name, type, default, valid values and one line of help.

The recipe sections (`tfx_transfer.config.recipe`), `TrainConfig`'s defaults and checks
(`tfx_transfer.training.train`) and the flags of `tfx-transfer train` (`tfx_transfer.cli`) are all made
from `SECTIONS`, so a choice or a range is written here and nowhere else. This module imports
neither TensorFlow nor Keras: reading and checking a recipe stays fast and works without them.

Vocabulary: a `Setting` belongs to a section (`data`, `model`, `training`, `augmentation`,
`evaluation`); `section.name` is its key in recipes and in `--set section.name=value`.

Example:
    >>> setting("training", "strategy").choices
    ('scratch', 'feature_extraction', 'fine_tune', 'gradual')
    >>> setting("training", "epochs").check(0, "training.epochs")
    Traceback (most recent call last):
    ...
    tfx_transfer.config.settings.SettingError: training.epochs: must be at least 1; received 0
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from tfx_transfer.config.backbones import BACKBONES
from tfx_transfer.config.policies import POLICIES, TEST_TIME_VIEWS

NoneType = type(None)
#: A number as people write it, exponent included (`1e-4`, `.5`, `-3`); not inf or nan.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

#: Strategies, in the order reports show them: four train a network (`tfx_transfer.training.train`); `anomaly`
#: keeps a memory bank of good-part patches instead (`tfx_transfer.training.anomaly`).
STRATEGIES = ("scratch", "feature_extraction", "fine_tune", "gradual", "anomaly")
#: A comparison's default grid, the same from Python (`tt.compare`) and the command line: a learning
#: curve over four training-set sizes, three seeds each (the spread the confidence intervals need).
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
DEFAULT_SEEDS = 3
#: The largest `model.image_size`: a batch of 32 such images is 400 MB before the first layer, and
#: an ImageNet backbone's activations are tens of times more (larger needs tiling, not resizing).
MAX_IMAGE_SIZE = 2048
#: Global pooling before the head; `avg_max` concatenates both.
CLASSIFIER_POOLINGS = ("avg", "max", "avg_max")
MONITORS = ("val_loss", "val_accuracy")
PRIMARY_METRICS = ("roc_auc", "accuracy", "balanced_accuracy", "macro_f1", "average_precision")
OPERATING_POINTS = ("argmax", "target_recall")


class SettingError(ValueError):
    """A value a setting does not accept; the message names the key, what is valid and what was received."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")

    def __reduce__(self):
        return type(self), (self.key, self.message)


def closest(word: str, choices) -> str:
    """` Did you mean 'x'?` for the nearest choice, or an empty string."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


_TYPE_WORDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
               NoneType: "null"}


@dataclass(frozen=True)
class Setting:
    """One setting.

    Attributes:
        name: The field name (Keras words: `image_size`, `batch_size`, `learning_rate`).
        types: Accepted Python types, e.g. `(int,)` or `(str, NoneType)`; ints count as floats.
        default: The value when a recipe does not say.
        help: One line for `--help` and the documentation.
        choices: The only valid values, if limited.
        minimum, maximum: Bounds (inclusive unless `open_minimum` / `open_maximum`).
    """

    name: str
    types: tuple
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    open_minimum: bool = False
    open_maximum: bool = False

    @property
    def annotation(self):
        """The type for a dataclass field (`int`, `str | None`, ...)."""
        annotation = self.types[0]
        for option in self.types[1:]:
            annotation = annotation | option
        return annotation

    def check(self, value, key: str | None = None):
        """The value, gently converted (3 -> 3.0 for a number), or a `SettingError`.

        Args:
            value: What the recipe, the command line or the caller gave.
            key: How errors name the setting (default: the field name).
        """
        key = key or self.name
        if value is None:
            if NoneType in self.types:
                return None
            raise SettingError(key, f"must not be empty (null); expected {self._type_words()}")
        value = self._coerce(value, key)
        if self.choices is not None and value not in self.choices:
            raise SettingError(key, f"must be one of {', '.join(map(str, self.choices))}; received {value!r}."
                                    f"{closest(value, self.choices)}")
        low_ok = self.minimum is None or (value > self.minimum if self.open_minimum else value >= self.minimum)
        high_ok = self.maximum is None or (value < self.maximum if self.open_maximum else value <= self.maximum)
        if not (low_ok and high_ok):
            raise SettingError(key, f"must be {self._range_words()}; received {value!r}")
        return value

    def _coerce(self, value, key: str):
        for option in self.types:
            if option is bool and isinstance(value, bool):
                return value
            if option is int and isinstance(value, int) and not isinstance(value, bool):
                return value
            if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if option is float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
                return float(value)  # YAML 1.1 reads 1e-4 (no dot) as text; --learning-rate 1e-4 is a number too
            if option is str and isinstance(value, str):
                return value
            if option is dict and isinstance(value, dict):
                return dict(value)
        raise SettingError(key, f"expected {self._type_words()}, received {value!r} ({type(value).__name__})")

    def _type_words(self) -> str:
        return " or ".join(_TYPE_WORDS.get(option, str(option)) for option in self.types)

    def _range_words(self) -> str:
        if self.maximum is None:
            return f"{'above' if self.open_minimum else 'at least'} {self.minimum!r}"
        if self.minimum is None:
            return f"{'below' if self.open_maximum else 'at most'} {self.maximum!r}"
        return (f"in {'(' if self.open_minimum else '['}{self.minimum!r}, {self.maximum!r}"
                f"{')' if self.open_maximum else ']'}")


_S = Setting
_OPTIONAL_STR = (str, NoneType)

SECTIONS: dict[str, tuple[Setting, ...]] = {
    "data": (
        _S("source", (str,), "", "a folder (class folders, Kermany or GTSRB layout), a CSV file, tfds:<name>, or "
           "embedded:<name> for built-in data (elpv, traffic_signs, chest_xray)"),
        _S("group_pattern", _OPTIONAL_STR, None, "a regular expression on the file name whose first group (or whole "
           "match) names the physical thing shown (patient, track, part); a group never spans two splits"),
        _S("validation_split", (float,), 0.15, "share of the images for validation when the layout has no val",
           minimum=0.0, maximum=1.0, open_maximum=True),
        _S("test_split", (float,), 0.15, "share of the images for test when the layout has no test",
           minimum=0.0, maximum=1.0, open_maximum=True),
        _S("positive_class", _OPTIONAL_STR, None, "for two classes, the one that counts as positive (defect, pneumonia)"),
        _S("options", (dict,), {}, "keyword options of the reader, e.g. {finding: null} for NIH multi-label, or "
           "{path_column: file, label_column: grade} for a CSV"),
        _S("sample", (float,), 1.0, "share of the images used at all (stratified, seeded, whole groups), before "
           "splitting; below 1 for smoke runs", minimum=0.0, maximum=1.0, open_minimum=True),
        _S("split_column", _OPTIONAL_STR, "auto", "a CSV source's column of predefined splits (train/val/test per "
           "row); auto: a column named split when the CSV has one; null: split at random whatever the CSV says"),
        _S("relabel", _OPTIONAL_STR, None, "a CSV of corrected labels (path, label: a class name or exclude), e.g. "
           "the review.csv of tfx-transfer review; applied after splitting, recorded in the run's data.json"),
        _S("weight_column", _OPTIONAL_STR, None, "a column of per-image training weights (1 = a certain label): in the "
           "CSV source itself, or in a folder's labels.csv (columns path and this one)"),
    ),
    "model": (
        _S("backbone", (str,), "mobilenet_v2", "registry name (tfx-transfer backbones)", choices=tuple(sorted(BACKBONES))),
        _S("weights", (str,), "imagenet", "imagenet, none or a Keras weights file"),
        _S("image_size", (int,), 96, "side of the square input in pixels (smaller images are upscaled to 32)",
           minimum=32, maximum=MAX_IMAGE_SIZE),
        _S("dropout", (float,), 0.2, "dropout before the last layer", minimum=0.0, maximum=1.0, open_maximum=True),
        _S("grayscale", (bool,), False, "convert every image to grey inside the model (replicated to 3 channels)"),
        _S("pooling", (str,), "avg", "global pooling before the head: avg, max or avg_max (both, concatenated)",
           choices=CLASSIFIER_POOLINGS),
    ),
    "training": (
        _S("strategy", (str,), "fine_tune", "scratch, feature_extraction, fine_tune, gradual, or anomaly (good images only; "
           "two classes)", choices=STRATEGIES),
        _S("epochs", (int,), 10, "epochs of the first phase (the head, or the only phase for scratch)", minimum=1),
        _S("fine_tune_epochs", (int,), 10, "epochs of the fine_tune phase (and the cap for gradual)", minimum=1),
        _S("batch_size", (int,), 32, "images per step", minimum=1),
        _S("learning_rate", (float,), 1e-3, "peak learning rate of the first phase", minimum=0.0, maximum=1.0,
           open_minimum=True),
        _S("fine_tune_learning_rate", (float,), 1e-4, "peak rate once backbone blocks train; usually 10-100x lower",
           minimum=0.0, maximum=1.0, open_minimum=True),
        _S("unfreeze_blocks", (int,), 3, "top blocks that train in fine_tune (the most gradual reaches)", minimum=1),
        _S("unfreeze_from", _OPTIONAL_STR, None, "alternatively, the block from which upward everything trains"),
        _S("gradual_every", (int,), 2, "epochs between two unfreezings in gradual", minimum=1),
        _S("warmup_epochs", (int,), 1, "linear warm-up before the cosine decay, per phase", minimum=0),
        _S("patience", (int,), 3, "epochs without improvement of monitor before a phase stops", minimum=1),
        _S("monitor", (str,), "val_loss", "val_loss (lower is better) or val_accuracy (higher is better)",
           choices=MONITORS),
        _S("class_weight", _OPTIONAL_STR, None, "balanced, or null for none; emitted as sample weights",
           choices=("balanced",)),
        _S("oversample", (bool,), False, "repeat minority-class images in the training split"),
        _S("augmented_views", (int,), 0, "feature extraction with augmentation: augmented views per image to cache",
           minimum=0),
        _S("layer_decay", (float, NoneType), None, "discriminative rates: each unfrozen block gets this times the "
           "rate of the block above (e.g. 0.5)", minimum=0.0, maximum=1.0, open_minimum=True),
        _S("seed", (int,), 0, "fixes the split, the subset, the head's weights, data order, augmentation, dropout"),
        _S("ensemble_size", (int,), 1, "models trained from different seeds and averaged (feature_extraction: one)",
           minimum=1),
        _S("cache_features", (bool,), True, "feature extraction trains the head on pooled features computed once "
           "(false: through the frozen backbone every epoch)"),
        _S("cache", _OPTIONAL_STR, "memory", "decoded training images kept between epochs: memory, a file path, or "
           "null for none"),
        _S("jit_compile", (str, bool), "auto", "XLA: auto (on GPU, off on CPU, where it is ~10x slower for depthwise "
           "convolutions), true or false", choices=("auto", True, False)),
        _S("mixed_precision", (str, bool), "auto", "mixed precision: auto (on GPU), true or false",
           choices=("auto", True, False)),
        _S("distribution", (str,), "auto", "auto (several GPUs: mirrored), mirrored (every local device) or none",
           choices=("auto", "mirrored", "none")),
    ),
    "augmentation": (
        _S("policy", (str,), "none", "a domain's safe operations: none, xray, traffic_signs or defects", choices=tuple(POLICIES)),
        _S("overrides", (dict,), {}, "policy parameters to change, e.g. {rotation: 5.0}"),
        _S("force", (dict,), {}, "{operation: reason} for operations the domain marks unsafe"),
    ),
    "evaluation": (
        _S("primary_metric", (str,), "accuracy", "the number a comparison ranks by", choices=PRIMARY_METRICS),
        _S("operating_point", (str,), "argmax", "argmax, or target_recall: the highest threshold on the positive "
           "class's score that reaches target_recall on validation, applied unchanged to test",
           choices=OPERATING_POINTS),
        _S("target_recall", (float,), 0.9, "sensitivity (defect recall) the operating point must reach on validation",
           minimum=0.0, maximum=1.0),
        _S("bootstrap", (int,), 1000, "resamples of the test split for the 95% interval of the primary metric",
           minimum=0),
        _S("good_quantile", (float,), 0.99, "when validation holds no positive (defect) image, the threshold is this "
           "quantile of the negative (good) validation images' scores", minimum=0.0, maximum=1.0, open_minimum=True,
           open_maximum=True),
        _S("test_time_views", (int,), 1, "scores are the mean over this many mirrored/turned views of each image, "
           "only where augmentation trained the model on them", choices=TEST_TIME_VIEWS),
    ),
    "anomaly": (
        _S("feature_blocks", _OPTIONAL_STR, None, "the backbone's named blocks whose patch features are compared, "
           "comma-separated (tfx-transfer backbones); default: the deepest blocks at 1/8 and 1/16 of the image side"),
        _S("border_margin", (float,), 0.0, "share of each side of the anomaly map left out of the image's score (a frame "
           "or fixture that differs from part to part); the map still shows it", minimum=0.0, maximum=0.5,
           open_maximum=True),
        _S("coreset_fraction", (float,), 0.01, "share of the good training images' patches kept in the memory bank "
           "(greedy coreset: the patches that cover the rest best)", minimum=0.0, maximum=1.0, open_minimum=True),
    ),
}

#: Recipe settings that are not `TrainConfig` fields (the runner's, not one model's training).
NOT_TRAINING_CONFIG = {"training": ("ensemble_size",)}


def image_shape(image_size) -> tuple[int, int]:
    """`(height, width)` from a recipe's square side (an int) or a `(height, width)` pair.

    The recipe's `model.image_size` is the side of a square; from there on, everywhere, an image
    size is `(height, width)`: `TrainConfig`, run.json, model.json.

    Example:
        >>> image_shape(96), image_shape([64, 80])
        ((96, 96), (64, 80))
    """
    if isinstance(image_size, (int, float)) and not isinstance(image_size, bool):
        return int(image_size), int(image_size)
    height, width = image_size
    return int(height), int(width)


def setting(section: str, name: str) -> Setting:
    """The declaration of `section.name`.

    Raises:
        KeyError: if there is no such setting.
    """
    for item in SECTIONS[section]:
        if item.name == name:
            return item
    raise KeyError(f"{section}.{name}")


def defaults(section: str) -> dict:
    """`{name: default}` of one section (mutable defaults copied)."""
    return {item.name: (dict(item.default) if isinstance(item.default, dict) else item.default)
            for item in SECTIONS[section]}


def reference_markdown() -> str:
    """Every setting as a Markdown table (section, name, default, help): the recipes' field reference.

    `recipes/README.md` holds this table between its `settings` markers, and a test keeps it equal.
    """
    rows = ["| setting | default | what it is |", "|---|---|---|"]
    for section, items in SECTIONS.items():
        for item in items:
            default = "null" if item.default is None else ('""' if item.default == "" else item.default)
            default = str(default).lower() if isinstance(default, bool) else ("{}" if default == {} else default)
            rows.append(f"| `{section}.{item.name}` | `{default}` | {item.help.replace('|', '/')} |")
    return "\n".join(rows)
