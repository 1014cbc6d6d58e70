"""Augmentation policies that are safe for their domain, applied in the tf.data pipeline.

Random augmentation runs in tf.data, outside the model and so outside the XLA-compiled train step
(`RandomRotation` fails inside an XLA GPU step, tensorflow #100865). Every random draw is a
stateless op seeded per image, so a seed fixes the whole stream.

The policies themselves (which operations each domain allows) are data, in
`tfx_transfer.config.policies`; they are re-exported here.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfx_transfer.config.policies import (  # noqa: F401  (re-exported: the public names of augmentation)
    POLICIES,
    TEST_TIME_VIEWS,
    UNSAFE,
    AugmentPolicy,
    check_test_time_views,
    make_policy,
)


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
