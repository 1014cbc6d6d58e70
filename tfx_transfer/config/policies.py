"""Augmentation policies as data: which operations each domain allows, with what strength.

This module imports neither TensorFlow nor Keras, so a recipe is checked without them; the
operations themselves run in `tfx_transfer.data.augment`.

Policies (`POLICIES`):
    xray           no flips (anatomy is lateralised: a mirrored chest is another anatomy); small
                   rotation, shift and zoom; brightness and contrast.
    traffic_signs  no blind horizontal flip (mirrored "keep left" is "keep right"): flips only with a
                   class-aware `flip_map` that relabels; small rotation and perspective; lighting, blur.
    defects        flips on both axes and 90-degree rotations (a part on a belt has no up); lighting.
    none           nothing.

A recipe may override a policy's parameters. An operation the domain marks unsafe is refused
unless the recipe forces it with a reason, which is recorded in `AugmentPolicy.forced`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AugmentPolicy:
    """Parameters of one augmentation policy. Zero disables an operation.

    Attributes:
        name: The domain policy it started from.
        horizontal_flip: Mirror left-right with probability 0.5.
        vertical_flip: Mirror top-bottom with probability 0.5.
        rotate90: Rotate by a random multiple of 90 degrees.
        rotation: Maximum rotation in degrees (uniform in +-rotation).
        shift: Maximum shift as a fraction of the side.
        zoom: Maximum zoom in or out as a fraction (0.1: scale in [0.9, 1.1]).
        perspective: Maximum corner displacement as a fraction of the side.
        brightness: Maximum brightness change as a fraction of 255.
        contrast: Maximum contrast change as a fraction (0.2: factor in [0.8, 1.2]).
        blur: Probability of a light Gaussian blur.
        flip_map: For `traffic_signs`: `{class index: mirrored class index}`; with it, horizontal
            flips relabel, and classes absent from the map are never flipped.
        forced: `{operation: reason}` for operations the domain marks unsafe but the recipe forced.
    """

    name: str = "none"
    horizontal_flip: bool = False
    vertical_flip: bool = False
    rotate90: bool = False
    rotation: float = 0.0
    shift: float = 0.0
    zoom: float = 0.0
    perspective: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    blur: float = 0.0
    flip_map: dict[int, int] | None = None
    forced: dict[str, str] = field(default_factory=dict)

    @property
    def is_identity(self) -> bool:
        return not any(
            (self.horizontal_flip, self.vertical_flip, self.rotate90, self.rotation, self.shift,
             self.zoom, self.perspective, self.brightness, self.contrast, self.blur)
        )


POLICIES: dict[str, AugmentPolicy] = {
    "none": AugmentPolicy("none"),
    "xray": AugmentPolicy("xray", rotation=7.0, shift=0.05, zoom=0.1, brightness=0.1, contrast=0.15),
    "traffic_signs": AugmentPolicy(
        "traffic_signs", rotation=10.0, shift=0.05, zoom=0.1, perspective=0.06,
        brightness=0.2, contrast=0.3, blur=0.2,
    ),
    "defects": AugmentPolicy(
        "defects", horizontal_flip=True, vertical_flip=True, rotate90=True, brightness=0.1, contrast=0.15
    ),
}

#: Operations each domain refuses unless forced, and why.
UNSAFE: dict[str, dict[str, str]] = {
    "xray": {
        "horizontal_flip": "a chest X-ray is lateralised (heart on the left); a mirrored image shows an anatomy that does not occur",
        "vertical_flip": "radiographs are never upside down",
        "rotate90": "radiographs are acquired upright; 90-degree turns do not occur",
    },
    "traffic_signs": {
        "horizontal_flip": "a mirrored 'keep left' is 'keep right' and mirrored digits are not digits; give a flip_map that relabels instead",
        "vertical_flip": "signs are never upside down",
        "rotate90": "signs are mounted upright",
    },
    "defects": {},
    "none": {},
}


def make_policy(name: str, overrides: dict | None = None, force: dict[str, str] | None = None) -> AugmentPolicy:
    """Builds a domain policy with parameter overrides, refusing unsafe operations unless forced.

    Args:
        name: One of `POLICIES`.
        overrides: Field values to change, e.g. `{"rotation": 5.0}`.
        force: `{operation: reason}` to allow operations the domain marks unsafe.

    Raises:
        ValueError: for an unknown policy or parameter, or an unsafe operation without a reason.

    Example:
        >>> make_policy("xray", {"rotation": 5.0}).rotation
        5.0
    """
    if name not in POLICIES:
        raise ValueError(f"Unknown augmentation policy {name!r}. Available: {', '.join(POLICIES)}")
    overrides = dict(overrides or {})
    force = dict(force or {})
    valid = {f.name for f in dataclasses.fields(AugmentPolicy)} - {"name", "forced"}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"Unknown augmentation parameter(s) {unknown} for policy {name!r}. Valid: {sorted(valid)}")
    if "flip_map" in overrides and overrides["flip_map"] is not None:
        overrides["flip_map"] = {int(k): int(v) for k, v in overrides["flip_map"].items()}
    policy = dataclasses.replace(POLICIES[name], **overrides)
    forced = {}
    for operation, reason in UNSAFE[name].items():
        enabled = bool(getattr(policy, operation))
        if operation == "horizontal_flip" and policy.flip_map is not None:
            continue  # class-aware flipping relabels; that is the safe way to flip signs
        if enabled and not str(force.get(operation, "")).strip():
            raise ValueError(
                f"Augmentation {operation!r} is unsafe for {name!r}: {reason}. If your data really "
                f"allows it, force it with a reason (augmentation.force.{operation}: \"why\")."
            )
        if enabled:
            forced[operation] = str(force[operation])
    stray = sorted(set(force) - set(UNSAFE[name]))
    if stray:
        raise ValueError(f"Nothing to force for {stray}: those operations are not unsafe for {name!r}.")
    return dataclasses.replace(policy, forced=forced)


#: Numbers of test-time views, each a symmetry group of the square: 2 = mirror, 4 = both mirrors,
#: 8 = both mirrors and quarter turns.
TEST_TIME_VIEWS = (1, 2, 4, 8)


def check_test_time_views(views: int, policy: AugmentPolicy | None) -> None:
    """Refuses test-time views the training policy does not make safe.

    A view is only safe to average over when training taught the model that it does not change
    the label: a mirrored chest or traffic sign is another image, not another view.

    Raises:
        ValueError: for a number not in `TEST_TIME_VIEWS`, or views the policy does not allow.

    Example:
        >>> check_test_time_views(4, POLICIES["defects"])
    """
    if views not in TEST_TIME_VIEWS:
        raise ValueError(f"test_time_views must be one of {TEST_TIME_VIEWS}. Received: {views!r}")
    if views == 1:
        return
    policy = policy or POLICIES["none"]
    needed = {2: ("horizontal_flip",), 4: ("horizontal_flip", "vertical_flip"),
              8: ("horizontal_flip", "vertical_flip", "rotate90")}[views]
    missing = [operation for operation in needed if not getattr(policy, operation)]
    if policy.flip_map is not None:
        missing.append("horizontal_flip without a flip_map (mirroring changes these labels)")
    if missing:
        raise ValueError(
            f"{views} test-time views need training augmentation with {', '.join(needed)}; policy "
            f"{policy.name!r} lacks {', '.join(missing)}. Use test_time_views: 1, or a policy whose "
            "flips and turns keep the label."
        )
