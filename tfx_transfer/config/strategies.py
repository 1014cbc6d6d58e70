"""How to train: `TrainConfig`, and the phases each strategy runs (`plan_phases`).

    scratch             one phase, random weights, everything trains (BatchNorm included)
    feature_extraction  "head": frozen backbone; the head trains on cached pooled features
    fine_tune           "head", then "fine_tune": the top blocks train at a 10-100x lower rate
    gradual             "head", then one more block from the top every `gradual_every` epochs

Every `TrainConfig` field but `augment` (built from the recipe's augmentation section) is a recipe
setting: its default and checks come from `tfx_transfer.config.settings`. This
module imports neither TensorFlow nor Keras; `tfx_transfer.training.train` runs the phases.

Example:
    >>> [p.name for p in plan_phases(TrainConfig(strategy="gradual", backbone="vgg16", unfreeze_blocks=2))]
    ['head', 'unfreeze_1', 'unfreeze_2']
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

from tfx_transfer.config.backbones import get_backbone_spec
from tfx_transfer.config.policies import AugmentPolicy
from tfx_transfer.config.settings import SECTIONS, STRATEGIES, SettingError, image_shape, setting  # noqa: F401  (STRATEGIES: re-exported)


def _default(section: str, name: str):
    return setting(section, name).default


#: TrainConfig fields that share a recipe setting's name but not its values: weights (None for
#: none), image_size (`(height, width)`; the recipe's is a square's side) and class_weight (a
#: mapping too) are checked where used.
_OWN_VALUES = ("weights", "image_size", "class_weight")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults are a sensible first try on a CPU.

    Attributes:
        strategy: One of `STRATEGIES`.
        backbone: Registry name.
        weights: `"imagenet"`, None or a file (`scratch` always uses None).
        image_size: `(height, width)`.
        batch_size: Images per step.
        epochs: Epochs of the first phase (the head, or the only phase for `scratch`).
        fine_tune_epochs: Epochs of the `fine_tune` phase (and the cap for `gradual`).
        learning_rate: Peak learning rate of the first phase.
        fine_tune_learning_rate: Peak rate once backbone blocks train; 10-100x lower.
        unfreeze_blocks: Top blocks that train in `fine_tune` (the most `gradual` reaches).
        unfreeze_from: Alternatively, the block from which upward everything trains.
        gradual_every: Epochs between two unfreezings in `gradual`.
        dropout: Dropout before the last layer.
        warmup_epochs: Linear warm-up before the cosine decay, per phase.
        patience: Epochs without improvement of `monitor` before a phase stops.
        monitor: `val_loss` (lower is better) or `val_accuracy` (higher is better).
        seed: Fixes weights of the head, data order, augmentation and dropout.
        cache_features: Train the head on cached pooled features (feature extraction fast path).
        augmented_views: With augmentation, how many augmented views per image to cache.
        augment: Policy for training images, or None.
        class_weight: `"balanced"`, a dict, or None; emitted as sample weights by the pipeline.
        oversample: Repeat minority-class images in the training split.
        cache: Decoded-image cache: `"memory"`, a file path, or None.
        jit_compile: `"auto"` (XLA on GPU, off on CPU), True or False.
        mixed_precision: `"auto"` (on GPU), True or False.
        distribution: `"auto"` (TF_CONFIG: multi-worker; several GPUs: mirrored), `"mirrored"`
            (every local device, CPUs included) or `"none"`.
        layer_decay: Discriminative learning rates once blocks train: the head and the top block
            get the phase's rate, each block below it `layer_decay` times the rate of the block
            above (e.g. 0.5). None: one rate for everything.
        grayscale: Convert images to grey inside the model (radiographs).
        pooling: Global pooling before the head: `avg`, `max` or `avg_max` (both, concatenated).
    """

    strategy: str = _default("training", "strategy")
    backbone: str = _default("model", "backbone")
    weights: str | None = _default("model", "weights")
    image_size: tuple[int, int] = image_shape(_default("model", "image_size"))
    batch_size: int = _default("training", "batch_size")
    epochs: int = _default("training", "epochs")
    fine_tune_epochs: int = _default("training", "fine_tune_epochs")
    learning_rate: float = _default("training", "learning_rate")
    fine_tune_learning_rate: float = _default("training", "fine_tune_learning_rate")
    unfreeze_blocks: int = _default("training", "unfreeze_blocks")
    unfreeze_from: str | None = _default("training", "unfreeze_from")
    gradual_every: int = _default("training", "gradual_every")
    dropout: float = _default("model", "dropout")
    warmup_epochs: int = _default("training", "warmup_epochs")
    patience: int = _default("training", "patience")
    monitor: str = _default("training", "monitor")
    seed: int = _default("training", "seed")
    cache_features: bool = _default("training", "cache_features")
    augmented_views: int = _default("training", "augmented_views")
    augment: AugmentPolicy | None = None
    class_weight: str | dict | None = _default("training", "class_weight")
    oversample: bool = _default("training", "oversample")
    cache: str | None = _default("training", "cache")
    jit_compile: str | bool = _default("training", "jit_compile")
    mixed_precision: str | bool = _default("training", "mixed_precision")
    distribution: str = _default("training", "distribution")
    layer_decay: float | None = _default("training", "layer_decay")
    grayscale: bool = _default("model", "grayscale")
    pooling: str = _default("model", "pooling")

    def __post_init__(self):
        for name, section in _declared().items():
            try:
                checked = setting(section, name).check(getattr(self, name))
            except SettingError as error:
                raise ValueError(f"TrainConfig {error}") from None
            object.__setattr__(self, name, checked)  # 3 -> 3.0 for a rate, as a recipe reads it
        object.__setattr__(self, "image_size", image_shape(self.image_size))  # a square's side becomes (side, side)
        if not isinstance(self.class_weight, dict):
            setting("training", "class_weight").check(self.class_weight)
        if self.strategy in ("fine_tune", "gradual") and self.fine_tune_learning_rate >= self.learning_rate:
            warnings.warn(
                f"fine_tune_learning_rate ({self.fine_tune_learning_rate}) is not lower than the head's "
                f"learning_rate ({self.learning_rate}); unfrozen ImageNet features are usually wrecked "
                "by the head's rate. A 10-100x lower rate is the usual choice.",
                stacklevel=3,
            )


def _declared() -> dict[str, str]:
    """`{field: section}` of the TrainConfig fields checked by their recipe setting's declaration."""
    names = {f.name for f in fields(TrainConfig)} - set(_OWN_VALUES)
    return {item.name: section for section in ("model", "training") for item in SECTIONS[section] if item.name in names}


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    learning_rate: float
    blocks: tuple[str, ...] | None  # None: every layer trains, BatchNorm included (scratch)
    cached: bool


def plan_phases(config: TrainConfig) -> list[Phase]:
    """The phases a strategy runs, with the blocks that train in each.

    Example:
        >>> [p.name for p in plan_phases(TrainConfig(strategy="fine_tune", backbone="vgg16"))]
        ['head', 'fine_tune']
    """
    if config.strategy == "anomaly":
        raise ValueError("The anomaly strategy trains no network: it keeps good-part patches in a memory bank. "
                         "Run it with tfx-transfer run/compare (tfx_transfer.experiments.runner), not tfx-transfer train.")
    spec = get_backbone_spec(config.backbone)
    if config.strategy == "scratch":
        return [Phase("scratch", config.epochs, config.learning_rate, None, False)]
    head = Phase("head", config.epochs, config.learning_rate, (), config.cache_features)
    if config.strategy == "feature_extraction":
        return [head]
    if config.unfreeze_from is not None:
        if config.unfreeze_from not in spec.block_names:
            raise ValueError(
                f"Unknown block {config.unfreeze_from!r} for backbone {spec.name}. Valid blocks, from "
                f"stem to top: {', '.join(spec.block_names)}"
            )
        top = spec.block_names[spec.block_names.index(config.unfreeze_from) :]
    else:
        if not 1 <= config.unfreeze_blocks <= len(spec.blocks):
            raise ValueError(
                f"unfreeze_blocks must be between 1 and {len(spec.blocks)} for {spec.name}. "
                f"Received: unfreeze_blocks={config.unfreeze_blocks}. Choose a value in that range (in a recipe: "
                f"--set training.unfreeze_blocks={len(spec.blocks)} trains every block), or name the lowest block "
                f"to train with unfreeze_from: {', '.join(spec.block_names)}"
            )
        top = spec.block_names[len(spec.blocks) - config.unfreeze_blocks :]
    if config.strategy == "fine_tune":
        return [head, Phase("fine_tune", config.fine_tune_epochs, config.fine_tune_learning_rate, tuple(top), False)]
    phases = [head]
    for count in range(1, len(top) + 1):
        phases.append(Phase(f"unfreeze_{count}", config.gradual_every, config.fine_tune_learning_rate, tuple(top[-count:]), False))
    return phases
