"""The `anomaly` strategy: a detector fitted on good parts only, for lines that have few or no defect images.

A frozen registry backbone gives patch features at one or two middle named blocks (each patch
averaged with its 3x3 neighbourhood so a feature sees a little context; the coarser block resized
to the finer grid and concatenated). The patches of the good training images form a memory bank,
thinned by greedy coreset (k-centre) selection to `anomaly.coreset_fraction` of them: the patches
that cover the rest best. An image's anomaly distance is the largest, over its patches, of the
distance to the nearest patch in the bank; the per-patch distances are its anomaly map. This is
the PatchCore recipe (Roth et al., 2022) on our backbones.

Defect images of the training split are not used (the report says how many). The distances are
mapped to a score in [0, 1] by a logistic curve centred on the good validation images' median
(order kept exactly), so the report's metrics, calibration and operating point treat the run like
any other two-class run. With no defect in validation, the threshold is a quantile of the good
validation scores (`evaluation.good_quantile`).

Memory stays bounded: images go through the backbone a batch at a time, the coreset looks at a
seeded sample of `MAX_POOL` patches (or four times the bank, if more), and nearest neighbours
(scikit-learn, brute force) are searched `QUERY_CHUNK` patches at a time within scikit-learn's
`working_memory`. Time is another matter: the greedy selection costs bank x pool distance
updates. A bank of 10,000 from a pool of 100,000 took 11 s on two CPU cores (ELPV at 224 px);
a 10% bank of the same million patches needs a pool of 400,000 and 40 times the work, which is
why the default is 1%.

Example:
    >>> detector = fit_detector(table, good_indices, "mobilenet_v2", "imagenet", (224, 224))  # doctest: +SKIP
    >>> distances, maps = detector.distances(table, test_indices)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from tfx_transfer.config.settings import image_shape

#: Patches the greedy coreset selection looks at (at least; four times the bank when that is more);
#: with more, a seeded sample of this many. The selection's work grows with pool x bank.
MAX_POOL = 100_000
#: The coreset is selected on a random projection to this many dimensions (distances are kept
#: within a few percent, Johnson-Lindenstrauss) when the features have more.
PROJECTION_DIMS = 128
#: Query patches per nearest-neighbour search.
QUERY_CHUNK = 20_000
#: Megabytes scikit-learn may use for one block of the distance matrix.
WORKING_MEMORY_MB = 256
#: Strides of the default blocks: fine enough to place a scratch, deep enough to know a part.
DEFAULT_STRIDES = (8, 16)


def default_blocks(block_sides: dict[str, int], image_side: int) -> list[str]:
    """The deepest blocks whose maps are at 1/8 and at 1/16 of the image side (or the nearest finer).

    Example:
        >>> default_blocks({"b1": 32, "b2": 16, "b3": 8, "b4": 4, "b5": 2}, 64)
        ['b3', 'b4']
    """
    chosen = []
    for stride in DEFAULT_STRIDES:
        wanted = int(np.ceil(image_side / stride))
        fine_enough = [name for name, side in block_sides.items() if side >= wanted]
        if fine_enough and fine_enough[-1] not in chosen:
            chosen.append(fine_enough[-1])
    if not chosen:  # an image so small that every block is coarser than 1/8: the finest
        chosen = [next(iter(block_sides))]
    return chosen


def patch_extractor(backbone: str, weights: str | None, image_size, grayscale: bool = False,
                    blocks: list[str] | None = None, seed: int = 0):
    """`(model, blocks, weights_source)`: raw pixels -> `(batch, h, w, channels)` patch features.

    Args:
        backbone: Registry name; `weights` as in `tfx_transfer.models.classifier.build_classifier`.
        image_size: `(height, width)`.
        blocks: Named blocks to take (checked); default `default_blocks`.
    """
    import keras

    from tfx_transfer.models.classifier import build_classifier, find_backbone, weights_info
    from tfx_transfer.models.taps import block_outputs, check_blocks, tap_model

    classifier = build_classifier(backbone, 2, weights, image_size, grayscale=grayscale, seed=seed)
    inner, spec = find_backbone(classifier)
    if blocks:
        blocks = check_blocks(classifier, blocks, "anomaly.feature_blocks")
    else:
        sides = {name: int(layer.output.shape[1]) for name, layer in block_outputs(inner, spec).items()}
        blocks = default_blocks(sides, min(int(side) for side in image_size))
    taps = tap_model(classifier, blocks, name="patch_taps")
    maps = [keras.layers.AveragePooling2D(3, strides=1, padding="same", name=f"local_mean_{name}")(tensor)
            for name, tensor in zip(blocks, taps.outputs)]
    grid = tuple(int(side) for side in maps[0].shape[1:3])
    maps = [tensor if tuple(tensor.shape[1:3]) == grid else
            keras.layers.Resizing(*grid, interpolation="bilinear", name=f"to_grid_{name}")(tensor)
            for name, tensor in zip(blocks, maps)]
    features = maps[0] if len(maps) == 1 else keras.layers.Concatenate(name="patch_features")(maps)
    model = keras.Model(taps.inputs, features, name=f"{spec.name}_patches")
    return model, blocks, weights_info(classifier).source


def greedy_coreset(features: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of `size` rows chosen greedily so that every row is near a chosen one (k-centre).

    Each step adds the row farthest from those chosen so far: rare patches (a bright busbar, a
    frame edge) are kept, common ones thinned. Selection runs on a random projection to
    `PROJECTION_DIMS` dimensions when the features have more.

    Example:
        >>> points = np.array([[0.0], [0.1], [0.2], [5.0], [10.0]])
        >>> sorted(greedy_coreset(points, 3).tolist())
        [0, 3, 4]
    """
    count = len(features)
    if size >= count:
        return np.arange(count)
    rng = np.random.default_rng(seed)
    points = np.asarray(features, "float32")
    if points.shape[1] > PROJECTION_DIMS:
        projection = rng.normal(size=(points.shape[1], PROJECTION_DIMS)).astype("float32") / np.sqrt(PROJECTION_DIMS)
        points = points @ projection
    norms = np.einsum("ij,ij->i", points, points)
    chosen = np.empty(size, dtype=np.int64)
    chosen[0] = 0  # deterministic start; the greedy steps do not depend on it much
    nearest = np.full(count, np.inf, dtype="float32")
    for step in range(size):
        centre = chosen[step]
        distance = norms - 2.0 * (points @ points[centre]) + norms[centre]
        np.minimum(nearest, distance, out=nearest)
        if step + 1 < size:
            chosen[step + 1] = int(np.argmax(nearest))
    return chosen


def nearest_distances(queries: np.ndarray, bank: np.ndarray, index=None) -> np.ndarray:
    """Euclidean distance from each query row to its nearest bank row, `QUERY_CHUNK` rows at a time.

    Memory is bounded by the chunk and scikit-learn's `working_memory`, never by queries x bank.

    Example:
        >>> nearest_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0]])).tolist()
        [0.0, 5.0]
    """
    import sklearn
    from sklearn.neighbors import NearestNeighbors

    index = index if index is not None else NearestNeighbors(n_neighbors=1, algorithm="brute").fit(bank)
    queries = np.asarray(queries, "float32")
    result = np.empty(len(queries), "float32")
    with sklearn.config_context(working_memory=WORKING_MEMORY_MB):
        for start in range(0, len(queries), QUERY_CHUNK):
            distances, _ = index.kneighbors(queries[start:start + QUERY_CHUNK])
            result[start:start + QUERY_CHUNK] = distances[:, 0]
    return result


@dataclass
class AnomalyDetector:
    """A fitted detector: the patch extractor, the memory bank and the distance-to-score map.

    Attributes:
        extractor: Raw pixels -> `(batch, h, w, channels)` patch features (`patch_extractor`).
        bank: `(bank_size, channels)` good-part patches, float32.
        image_size: The extractor's `(height, width)`.
        center, scale: score = 1 / (1 + exp(-(distance - center) / scale)); set by `fit_score_map`.
        border_margin: Share of each side of the map whose patches do not count in the image's score.
        facts: What the report states (blocks, bank size and memory, images, seconds).
    """

    extractor: object
    bank: np.ndarray
    image_size: tuple
    center: float = 0.0
    scale: float = 1.0
    border_margin: float = 0.0
    facts: dict = field(default_factory=dict)
    _index: object = field(default=None, repr=False)

    @property
    def index(self):
        if self._index is None:
            from sklearn.neighbors import NearestNeighbors

            self._index = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(self.bank)
        return self._index

    def distances(self, table, indices, batch_size: int = 32, keep_maps: bool = True):
        """`(distances, maps)`: each image's anomaly distance and its `(h, w)` map (None unless `keep_maps`)."""
        from tfx_transfer.data.pipeline import make_dataset

        indices = np.asarray(indices)
        grid = tuple(int(side) for side in self.extractor.output_shape[1:3])
        scores = np.zeros(len(indices), "float32")
        maps = np.zeros((len(indices), *grid), "float32") if keep_maps else None
        done = 0
        if len(indices) == 0:
            return scores, maps
        rows, columns = (int(self.border_margin * side) for side in grid)
        for images, _labels in make_dataset(table, indices, self.image_size, batch_size):
            features = np.asarray(self.extractor.predict_on_batch(images), "float32")
            patch = nearest_distances(features.reshape(-1, features.shape[-1]), self.bank, self.index)
            patch = patch.reshape(len(features), *grid)
            scored = patch[:, rows:grid[0] - rows, columns:grid[1] - columns]
            scores[done:done + len(features)] = scored.reshape(len(features), -1).max(axis=1)
            if keep_maps:
                maps[done:done + len(features)] = patch
            done += len(features)
        return scores, maps

    def fit_score_map(self, distances: np.ndarray) -> None:
        """Centres the logistic map on the median of good images' distances, scaled by their spread."""
        distances = np.asarray(distances, float)
        self.center = float(np.median(distances))
        spread = float(np.percentile(distances, 90) - np.percentile(distances, 10)) if len(distances) > 1 else 0.0
        self.scale = max(spread / 2.0, 1e-6)

    def scores(self, distances: np.ndarray, positive_index: int) -> np.ndarray:
        """Two-column scores (float64, so distant outliers are not rounded to a tie at 1.0)."""
        positive = 1.0 / (1.0 + np.exp(-(np.asarray(distances, float) - self.center) / self.scale))
        result = np.empty((len(positive), 2))
        result[:, positive_index], result[:, 1 - positive_index] = positive, 1.0 - positive
        return result

    def arrays(self) -> dict:
        """What anomaly.npz keeps besides the extractor (model.keras)."""
        return {"bank": self.bank, "center": np.array(self.center), "scale": np.array(self.scale),
                "border_margin": np.array(self.border_margin), "image_size": np.array(self.image_size)}


def peak_memory_megabytes() -> float:
    """This process's peak resident memory so far, in MB."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 ** 2 if sys.platform == "darwin" else peak / 1024


def fit_detector(table, indices, backbone: str, weights: str | None, image_size, grayscale: bool = False,
                 blocks: list[str] | None = None, coreset_fraction: float = 0.01, seed: int = 0,
                 batch_size: int = 32, verbose: int = 0, border_margin: float = 0.0) -> AnomalyDetector:
    """Fits a detector on the (good) images `indices` of `table`.

    Args:
        table: An `ImageTable`; `indices` its good training rows.
        backbone, weights, image_size, grayscale, blocks: As in `patch_extractor`.
        coreset_fraction: Share of all good patches the bank keeps.
        seed: Seeds the sample of patches the coreset looks at.
        batch_size: Images per forward pass.
        border_margin: Share of each side of the map left out of image scores (the bank keeps every
            good patch, so a border patch still finds its neighbours).

    Example:
        >>> detector = fit_detector(table, good, "mobilenet_v2", "imagenet", (128, 128))  # doctest: +SKIP
        >>> detector.facts["bank_size"]  # doctest: +SKIP
        1024
    """
    from tfx_transfer.data.pipeline import make_dataset

    indices = np.asarray(indices)
    if len(indices) == 0:
        raise ValueError("The anomaly strategy needs good images to learn from, and the training split has none. "
                         "Check data.positive_class (the defect class) and the folder names.")
    started = time.perf_counter()
    image_size = tuple(int(side) for side in image_size)
    extractor, blocks, weights_source = patch_extractor(backbone, weights, image_size, grayscale, blocks, seed)
    grid = tuple(int(side) for side in extractor.output_shape[1:3])
    per_image = grid[0] * grid[1]
    total = per_image * len(indices)
    size = max(1, int(round(coreset_fraction * total)))
    # Every patch has the same chance to enter the pool, batch by batch: memory is the pool's, not the data's.
    keep = min(1.0, max(MAX_POOL, 4 * size) / total)
    rng = np.random.default_rng(seed)
    pool = []
    for images, _labels in make_dataset(table, indices, image_size, batch_size):
        features = np.asarray(extractor.predict_on_batch(images), "float32").reshape(-1, extractor.output_shape[-1])
        pool.append(features if keep == 1.0 else features[rng.random(len(features)) < keep])
    pool = np.concatenate(pool)
    extracted = time.perf_counter()
    bank = pool[greedy_coreset(pool, min(size, len(pool)), seed)]
    facts = {
        "backbone": backbone, "weights_source": weights_source, "blocks": list(blocks), "grid": list(grid),
        "feature_dims": int(bank.shape[1]), "good_images": int(len(indices)), "patches": int(total),
        "pool": int(len(pool)), "coreset_fraction": float(coreset_fraction), "bank_size": int(len(bank)),
        "border_margin": float(border_margin),
        "bank_megabytes": float(bank.nbytes / 2 ** 20),
        "extract_seconds": extracted - started, "coreset_seconds": time.perf_counter() - extracted,
    }
    if verbose:
        print(f"anomaly: {len(bank):,} of {total:,} good patches in the bank ({facts['bank_megabytes']:.1f} MB), "
              f"blocks {', '.join(blocks)}")
    return AnomalyDetector(extractor, bank, image_size, border_margin=border_margin, facts=facts)


def load_detector(model_file, arrays_file) -> AnomalyDetector:
    """The detector a run saved (model.keras and anomaly.npz)."""
    import keras

    import tfx_transfer.models.classifier  # noqa: F401  (registers the toolkit's layers: ImagePreprocessing, Grayscale)

    extractor = keras.saving.load_model(model_file, compile=False, safe_mode=True)
    with np.load(arrays_file, allow_pickle=False) as saved:
        return AnomalyDetector(extractor, saved["bank"], tuple(int(s) for s in saved["image_size"]),
                               float(saved["center"]), float(saved["scale"]),
                               # Runs saved before the margin existed scored every patch.
                               float(saved["border_margin"]) if "border_margin" in saved.files else 0.0)


@dataclass
class AnomalyFit:
    """What the runner needs of a fitted detector, in the shape of a trained ensemble's result."""

    model: object
    detector: AnomalyDetector
    seconds: float
    weights_source: str
    device: str
    history: list = field(default_factory=list)
    phases: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    stopped: bool = False


def fit_run(table, train_indices, positive_index, recipe, verbose: int = 0) -> tuple[AnomalyFit, dict]:
    """Fits the detector of a run on the good images among `train_indices`; `(fit, facts)`."""
    from tfx_transfer.training.devices import configure_devices

    if positive_index is None:
        raise ValueError(
            f"The anomaly strategy needs two classes, good and defect (with data.positive_class naming the defect "
            f"class); this data has {len(table.class_names)}: {table.class_names}. Put good images in one folder and "
            "defects (for validation and test) in another.")
    labels = table.labels[train_indices]
    good = np.asarray(train_indices)[labels != positive_index]
    started = time.perf_counter()
    import keras

    keras.utils.set_random_seed(recipe.training.seed)  # random (weights: none) backbones are drawn from it
    # float32 on any device: distances between near-identical good patches need the precision.
    devices = configure_devices(jit_compile=False, mixed_precision=False, distribution="none")
    blocks = [name.strip() for name in recipe.anomaly.feature_blocks.split(",")] if recipe.anomaly.feature_blocks else None
    size = image_shape(recipe.model.image_size)
    weights = None if recipe.model.weights == "none" else recipe.model.weights
    detector = fit_detector(table, good, recipe.model.backbone, weights, size, recipe.model.grayscale, blocks,
                            recipe.anomaly.coreset_fraction, recipe.training.seed, recipe.training.batch_size, verbose,
                            recipe.anomaly.border_margin)
    facts = dict(detector.facts, defects_ignored=int((labels == positive_index).sum()))
    fit = AnomalyFit(detector.extractor, detector, time.perf_counter() - started, facts["weights_source"],
                     devices.description)
    return fit, facts
