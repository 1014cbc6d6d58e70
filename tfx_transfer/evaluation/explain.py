"""Where a model looks: Grad-CAM and Grad-CAM++ heatmaps for the toolkit's nested models.

A classifier here is `raw pixels -> [Grayscale] -> ImagePreprocessing -> backbone (a nested
keras.applications model) -> pooling -> head`. Asking Keras for a layer inside the nested backbone
together with the classifier's output fails ("graph disconnected"), so the forward pass is taken
apart: the layers before the backbone, a model of the backbone with two outputs (the target
block's activations and its own output), then the pooling and the head's last Dense layer by hand.
The class score differentiated is the class's logit minus the mean logit (before the softmax,
which saturates on confident images and would leave no gradient; against the mean, because a
softmax decides on differences of logits). An ensemble's heatmap is the mean of its members' (each scaled to [0, 1]).

The target is one of the backbone's named blocks (`tfx_transfer.config.backbones`), by default the last
block before pooling; on small images, where that block's map is coarser than `MIN_CELLS` cells a
side, the deepest block that still has that many.

Example:
    >>> maps = gradcam(model, images, class_index=1)  # doctest: +SKIP
    >>> maps.shape  # (images, height, width), each scaled to [0, 1]  # doctest: +SKIP
    (8, 224, 224)
"""

from __future__ import annotations

import numpy as np

#: The coarsest map the default target block may give (cells per side): a 2x2 map says nothing.
MIN_CELLS = 7
METHODS = ("gradcam", "gradcam++")
#: The central region's margin on each side, as a share of the side: a film's markers and text
#: (and a part's fixture) sit outside it.
BORDER_MARGIN = 0.15
#: Border shares are measured on a map at least this fine: with 7 cells a side, a marker at the
#: edge lights the second ring of cells too (receptive fields), which lies inside the margin.
BORDER_MIN_CELLS = 14


def _members(model) -> list:
    """The classifiers inside `model`: itself, or the members of an ensemble (`average_models`)."""
    import keras

    from tfx_transfer.config.backbones import BACKBONES

    if any(isinstance(layer, keras.Model) and layer.name in BACKBONES for layer in model.layers):
        return [model]
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if not members:
        raise ValueError(f"Model {model.name!r} holds no registered backbone; Grad-CAM needs a model built by tfx_transfer.")
    return [member for nested in members for member in _members(nested)]


def target_block(model, block: str | None = None, min_cells: int = MIN_CELLS) -> str:
    """The block Grad-CAM looks at: `block` if given (checked), else the last block, or the deepest
    whose map has at least `min_cells` cells a side when the last one's is coarser."""
    from tfx_transfer.models.classifier import find_backbone
    from tfx_transfer.models.taps import block_outputs

    backbone, spec = find_backbone(_members(model)[0])
    outputs = block_outputs(backbone, spec)
    if block is not None:
        if block not in outputs:
            raise ValueError(f"{spec.name} has no block {block!r} with a spatial output. Its blocks: {', '.join(outputs)}.")
        return block
    fine_enough = [name for name, layer in outputs.items() if min(layer.output.shape[1:3]) >= min_cells]
    return fine_enough[-1] if fine_enough else list(outputs)[-1]


def _classifier_parts(classifier, block: str):
    """`(before, probe, pool, dense)`: the layers before the backbone, a model of the backbone giving
    the block's activations and the backbone's output, the pooling, and the head's Dense layer."""
    from tfx_transfer.models.taps import backbone_taps, layers_before_backbone

    before = layers_before_backbone(classifier)
    probe = backbone_taps(classifier, [block], with_output=True, name="gradcam_taps")
    names = {layer.name: layer for layer in classifier.layers}

    def pool(features):
        if "pool_avg" in names:  # avg_max: both, concatenated
            return names["pool"]([names["pool_avg"](features), names["pool_max"](features)])
        return names["pool"](features)

    head = names["head"]
    dense = head.get_layer("predictions")
    return before, probe, pool, dense


def gradcam(model, images, class_index=None, block: str | None = None, method: str = "gradcam",
            batch_size: int = 16, upsample: bool = True) -> np.ndarray:
    """Heatmaps `(n, height, width)` in [0, 1] of where `model` finds evidence for a class.

    Args:
        model: A classifier built by the toolkit (raw pixels in), or an ensemble of them.
        images: Raw RGB pixels `(n, height, width, 3)` at the model's input size.
        class_index: The class explained: an int for all images, one per image, or None for each
            image's most probable class.
        block: A named block of the backbone (default: see the module documentation).
        method: `gradcam` (channel weights = mean gradient) or `gradcam++` (weights from the
            positive gradients, so that several separate regions of evidence all show).
        batch_size: Images per gradient computation.
        upsample: Resize the maps to the images' size (bilinear); False keeps the block's cells.

    Raises:
        ValueError: for an unknown method, a block the backbone does not have, or images of
            another shape than the model takes.
    """
    import tensorflow as tf

    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}. Expected one of {', '.join(METHODS)}.")
    images = np.asarray(images)
    expected = tuple(model.input_shape[1:])
    if images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(f"Expected images of shape (n, {', '.join(map(str, expected))}) for this model. "
                         f"Received: {images.shape}. Resize them to the model's image size first.")
    block = target_block(model, block)
    members = [_classifier_parts(member, block) for member in _members(model)]
    height, width = images.shape[1:3]
    maps = []
    for start in range(0, len(images), batch_size):
        batch = tf.constant(images[start:start + batch_size], tf.float32)
        if class_index is None:
            classes = np.asarray(model(batch, training=False)).argmax(axis=1)
        else:
            classes = np.broadcast_to(np.asarray(class_index), (len(images),))[start:start + len(batch)]
        # Each member's maps scaled to [0, 1] first: members count alike, whatever their gradients' scale.
        heat = np.mean([_normalised(_member_maps(batch, classes, before, probe, pool, dense, method))
                        for before, probe, pool, dense in members], axis=0)
        if upsample:
            heat = tf.image.resize(tf.constant(heat)[..., None], (height, width), method="bilinear")[..., 0].numpy()
        maps.append(_normalised(heat))
    return np.concatenate(maps).astype("float32")


def _normalised(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (an all-zero map stays zero)."""
    top = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, *([1] * (maps.ndim - 1)))
    return np.where(top > 0, maps / np.where(top > 0, top, 1.0), 0.0)


def _member_maps(batch, classes, before, probe, pool, dense, method):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        x = batch
        for layer in before:
            x = layer(x, training=False)
        activations, features = probe(x, training=False)
        tape.watch(activations)
        pooled = tf.cast(pool(tf.cast(features, tf.float32)), tf.float32)
        logits = tf.matmul(pooled, tf.cast(dense.kernel, tf.float32)) + tf.cast(dense.bias, tf.float32)
        # The class's logit against the mean logit: a softmax decides on differences of logits,
        # and a channel that raises every class's logit alike is no evidence for this one.
        score = tf.gather(logits, tf.constant(classes, tf.int32), axis=1, batch_dims=1) - tf.reduce_mean(logits, axis=1)
    gradients = tf.cast(tape.gradient(score, activations), tf.float32)
    activations = tf.cast(activations, tf.float32)
    if method == "gradcam":
        weights = tf.reduce_mean(gradients, axis=(1, 2))
    else:  # Grad-CAM++ (Chattopadhay et al., 2018), with the exponential of the score
        squared, cubed = gradients ** 2, gradients ** 3
        denominator = 2.0 * squared + tf.reduce_sum(activations, axis=(1, 2), keepdims=True) * cubed
        alpha = squared / tf.where(denominator != 0.0, denominator, tf.ones_like(denominator))
        weights = tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=(1, 2))
    cam = tf.nn.relu(tf.einsum("bhwc,bc->bhw", activations, weights))
    return cam.numpy()


def border_share(maps, margin: float = BORDER_MARGIN) -> np.ndarray:
    """Per heatmap, the share of its heat outside the central region (`margin` of each side cut
    off): near 1 when the model looks at the border, where markers and text are.

    A cell counts as border when its centre lies in the margin, so the figure is the same for a
    block's cells (`gradcam(..., upsample=False)`: heat that bilinear upsampling would smear
    across the edge of the region stays where the model put it) and for full-size maps. Evenly
    spread heat gives the border's share of the cells (0.51 for full-size maps).

    Example:
        >>> heat = np.zeros((1, 7, 7)); heat[0, 0, :] = 1.0  # all heat in the top row of cells
        >>> float(border_share(heat)[0])
        1.0
    """
    maps = np.asarray(maps, float)
    height, width = maps.shape[1:3]

    def central(count):
        centres = (np.arange(count) + 0.5) / count
        return (centres >= margin) & (centres <= 1 - margin)

    inside = central(height)[:, None] & central(width)[None, :]
    total = maps.sum(axis=(1, 2))
    border = (maps * ~inside).sum(axis=(1, 2))
    return np.where(total > 0, border / np.where(total > 0, total, 1.0), np.nan)


def peak(heatmap) -> tuple[float, float]:
    """`(row, column)` of a heatmap's peak: the centre of the pixels within 1% of its maximum
    (upsampled maps are flat near the edges, where `argmax` would pick the first pixel)."""
    heatmap = np.asarray(heatmap, float)
    rows, columns = np.nonzero(heatmap >= 0.99 * heatmap.max())
    return float(rows.mean()), float(columns.mean())


#: Correct test images shown per class beside the confidently wrong ones.
CORRECT_PER_CLASS = 2
#: Test images per predicted class whose border share is measured (a sample keeps large test sets fast).
BORDER_SAMPLE = 100
#: Side of the stored thumbnails and heatmaps (a report shows them at about this size).
THUMBNAIL_SIDE = 128


def rows_to_explain(report: dict, predictions: dict, seed: int = 0) -> tuple[list[int], list[int], np.ndarray]:
    """`(gallery, sampled, decided)`: the test rows whose maps the report shows (its confidently wrong
    images, then the `CORRECT_PER_CLASS` most confident right ones per class), the rows sampled for
    border shares (up to `BORDER_SAMPLE` per predicted class, two-class runs only), and every test
    image's decided class."""
    from tfx_transfer.evaluation.calibration import apply_temperature
    from tfx_transfer.evaluation.metrics import OperatingPoint

    point = OperatingPoint(**report["metrics"]["operating_point"])
    positive = point.positive_index if point.positive_index is not None else 1
    scores = apply_temperature(predictions["test_score"], report["calibration"]["temperature"], positive)
    truth = predictions["test_true"].astype(int)
    decided = point.predict(scores)
    gallery = [item["index"] for item in report["confidently_wrong"]]
    for k in range(scores.shape[1]):
        correct = np.flatnonzero((truth == k) & (decided == k))
        gallery += [int(i) for i in correct[np.argsort(-scores[correct, k], kind="stable")][:CORRECT_PER_CLASS]]
    rng = np.random.default_rng(seed)
    sampled = []
    if scores.shape[1] == 2:
        for k in range(2):
            rows = np.flatnonzero(decided == k)
            sampled += sorted(rng.choice(rows, min(len(rows), BORDER_SAMPLE), replace=False).tolist())
    return list(dict.fromkeys(gallery)), sampled, decided


def explanation_arrays(gallery: list[int], decided: np.ndarray, pixels_of: dict, cells_of: dict, block: str,
                       method: str, image_side: int) -> dict:
    """explanations.npz's gallery arrays: thumbnails of each gallery row's pixels and its map (in [0, 1])."""
    from PIL import Image

    side = min(THUMBNAIL_SIDE, int(image_side))

    def thumbnail(array):
        return np.asarray(Image.fromarray(array).resize((side, side), Image.BILINEAR))

    return {
        "block": np.array(block), "method": np.array(method),
        "gallery_index": np.array(gallery, dtype=int),
        "gallery_pixels": np.stack([thumbnail(pixels_of[i]) for i in gallery]) if gallery else
        np.zeros((0, side, side, 3), "uint8"),
        "gallery_heat": np.stack([thumbnail((cells_of[i] * 255).astype("uint8")) for i in gallery]) if gallery else
        np.zeros((0, side, side), "uint8"),
        "gallery_class": decided[gallery] if gallery else np.zeros(0, int),
    }


def border_arrays(sampled: list[int], decided: np.ndarray, cells: np.ndarray, block: str) -> dict:
    """explanations.npz's border shares of the sampled rows (`cells`: their maps, in that order)."""
    return {"border_block": np.array(block), "border_index": np.array(sampled, dtype=int),
            "border_class": decided[sampled], "border_share": border_share(cells),
            "border_baseline": np.array(float(border_share(np.ones((1, *cells.shape[1:])))[0]))}


def explain_test_images(model, table, test_indices, image_size, report: dict, predictions: dict, seed: int = 0) -> dict:
    """What a run's report shows of Grad-CAM, as arrays for `RunFolder.write_explanations`.

    Heatmaps (of the predicted class) over the test rows of `rows_to_explain`, as thumbnails; and,
    for two-class runs, the border share of the sampled rows.

    Args:
        model: The run's model.
        table: The run's images; `test_indices` its test rows, in the order of predictions.npz.
        image_size: The model's `(height, width)`.
        report: The run's report: the gallery, the temperature and the operating point.
        predictions: predictions.npz of the run (`test_true`, `test_score`).
        seed: Seed of the border-share sample.
    """
    from tfx_transfer.data.pipeline import make_dataset

    gallery, sampled, decided = rows_to_explain(report, predictions, seed)
    chosen = np.array(sorted(set(gallery) | set(sampled)), dtype=int)
    if len(chosen) == 0:
        return {}
    pixels = np.concatenate([images.numpy() for images, _ in make_dataset(table, np.asarray(test_indices)[chosen],
                                                                          image_size, 32)])
    block = target_block(model)
    cells = gradcam(model, pixels, decided[chosen], block=block, upsample=False)
    row_of = {int(index): row for row, index in enumerate(chosen)}
    record = explanation_arrays(gallery, decided, {i: pixels[row_of[i]] for i in gallery},
                                {i: cells[row_of[i]] for i in gallery}, block, "gradcam", min(image_size))
    if sampled:
        border_block = target_block(model, min_cells=BORDER_MIN_CELLS)
        rows = [row_of[i] for i in sampled]
        fine = cells[rows] if border_block == block else gradcam(model, pixels[rows], decided[sampled],
                                                                 block=border_block, upsample=False)
        record.update(border_arrays(sampled, decided, fine, border_block))
    return record


def anomaly_map_arrays(test_maps: np.ndarray, table, test_indices, image_size, report: dict, predictions: dict,
                        blocks: list[str], seed: int = 0) -> dict:
    """explanations.npz for an anomaly run: the anomaly maps of the rows the report shows
    (`tfx_transfer.evaluation.explain.rows_to_explain`), on one scale for every image (the test maps' median
    patch distance is 0, their largest 1), so a good part looks calm and a defect glows."""
    from tfx_transfer.data.pipeline import make_dataset

    gallery, sampled, decided = rows_to_explain(report, predictions, seed)
    if not gallery and not sampled:
        return {}
    low, high = float(np.median(test_maps)), float(test_maps.max())
    cells = np.clip((test_maps - low) / max(high - low, 1e-12), 0.0, 1.0)
    rows = np.asarray(test_indices)[gallery]
    pixels = np.concatenate([images.numpy() for images, _ in make_dataset(table, rows, image_size, 32)]) if gallery else []
    block = "+".join(blocks)
    record = explanation_arrays(gallery, decided, dict(zip(gallery, pixels)), {i: cells[i] for i in gallery}, block,
                                "anomaly_map", min(image_size))
    if sampled and min(cells.shape[1:]) >= BORDER_MIN_CELLS:
        record.update(border_arrays(sampled, decided, cells[sampled], block))
    return record
