"""Augmentation policies that are safe for their domain, applied in the tf.data pipeline.

Random augmentation runs in tf.data, outside the model and so outside the XLA-compiled train step
(`RandomRotation` fails inside an XLA GPU step, tensorflow #100865). Every random draw is a
stateless op seeded per image, so a seed fixes the whole stream.

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
import math
from dataclasses import dataclass, field

import tensorflow as tf


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


def _uniform(seed, low, high):
    return tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high)


def _projective(image, transform):
    shape = tf.shape(image)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=shape[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT",
    )[0]


def _geometry(image, policy: AugmentPolicy, seeds):
    """Rotation, zoom, shift and perspective as one projective transform (output -> input)."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    angle = _uniform(seeds[0], -policy.rotation, policy.rotation) * (math.pi / 180.0)
    scale = _uniform(seeds[1], 1.0 - policy.zoom, 1.0 + policy.zoom)
    shift_x = _uniform(seeds[2], -policy.shift, policy.shift) * width
    shift_y = _uniform(seeds[3], -policy.shift, policy.shift) * height
    center_x, center_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # input = R(-angle) / scale * (output - center - shift) + center
    a0, a1 = cos, sin
    b0, b1 = -sin, cos
    a2 = center_x - a0 * (center_x + shift_x) - a1 * (center_y + shift_y)
    b2 = center_y - b0 * (center_x + shift_x) - b1 * (center_y + shift_y)
    c0 = _uniform(seeds[4], -policy.perspective, policy.perspective) / width
    c1 = _uniform(seeds[5], -policy.perspective, policy.perspective) / height
    transform = tf.stack([a0, a1, a2, b0, b1, b2, c0, c1])
    return _projective(image, transform)


def _blur(image):
    kernel_1d = tf.constant([0.25, 0.5, 0.25], tf.float32)
    kernel = tf.tensordot(kernel_1d, kernel_1d, axes=0)[:, :, None, None]
    kernel = tf.tile(kernel, [1, 1, 3, 1])
    return tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "SAME")[0]


def augment_image(image, label, policy: AugmentPolicy, seed):
    """Applies `policy` to one image (float32 in [0, 255]); returns `(image, label)`.

    `seed` is a shape-[2] int tensor; the same seed gives the same result.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=12)
    image = tf.cast(image, tf.float32)
    if policy.horizontal_flip:
        flip = _uniform(seeds[6], 0.0, 1.0) < 0.5
        if policy.flip_map is not None:
            keys = tf.constant(list(policy.flip_map), tf.int64)
            values = tf.constant(list(policy.flip_map.values()), tf.int64)
            table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), -1)
            mirrored = table.lookup(tf.cast(label, tf.int64))
            flip = tf.logical_and(flip, mirrored >= 0)
            label = tf.cast(tf.where(flip, mirrored, tf.cast(label, tf.int64)), label.dtype)
        image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    if policy.vertical_flip:
        image = tf.cond(_uniform(seeds[7], 0.0, 1.0) < 0.5, lambda: tf.image.flip_up_down(image), lambda: image)
    if policy.rotate90:
        turns = tf.random.stateless_uniform([], seed=seeds[8], minval=0, maxval=4, dtype=tf.int32)
        shape = tf.shape(image)
        # A quarter turn of a non-square image would change its shape; turn those by 0 or 180.
        turns = tf.where(tf.equal(shape[0], shape[1]), turns, (turns // 2) * 2)
        static_shape = image.shape
        image = tf.image.rot90(image, turns)
        if static_shape[0] is not None and static_shape[0] == static_shape[1]:
            image = tf.ensure_shape(image, static_shape)
    if policy.rotation or policy.shift or policy.zoom or policy.perspective:
        image = _geometry(image, policy, seeds)
    if policy.brightness:
        image = image + _uniform(seeds[9], -policy.brightness, policy.brightness) * 255.0
    if policy.contrast:
        mean = tf.reduce_mean(image)
        image = (image - mean) * _uniform(seeds[10], 1.0 - policy.contrast, 1.0 + policy.contrast) + mean
    if policy.blur:
        image = tf.cond(_uniform(seeds[11], 0.0, 1.0) < policy.blur, lambda: _blur(image), lambda: image)
    return tf.clip_by_value(image, 0.0, 255.0), label


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


def symmetric_view(images, index: int):
    """View `index` (0-7) of a batch `[batch, height, width, channels]` of square images.

    0 is the image itself, 1 mirrors left-right, 2 top-bottom, 3 both (a half turn); 4-7 are 0-3
    after a quarter turn. The first `views` of them form a group, so averaging over them is
    symmetric.

    Example:
        >>> symmetric_view(tf.zeros([1, 8, 8, 3]), 3).shape
        TensorShape([1, 8, 8, 3])
    """
    if index >= 4:
        images = tf.image.rot90(images, 1)
    if index % 4 in (1, 3):
        images = tf.image.flip_left_right(images)
    if index % 4 in (2, 3):
        images = tf.image.flip_up_down(images)
    return images
