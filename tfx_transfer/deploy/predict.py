"""Using a trained model: scores, decisions and review flags for new images, from a run folder.

A finished run folder holds `model.keras` (raw RGB pixels in) and `model.json`: class names, image
size, the temperature that calibrates its scores, the operating point chosen on validation, the
test-time views and the review band. `load_run(run_dir).predict(inputs)` applies all of them, as
the run's own evaluation did, to a folder (searched recursively), a CSV with a path column, or
single files (DICOM included). Files that cannot be read are listed with their reason and never
stop the batch. Images stream through tf.data in batches, so memory does not grow with their number.

Example:
    >>> predictions = load_run("runs/line7").predict("incoming/")  # doctest: +SKIP
    >>> predictions[["path", "decision", "review"]].head()  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfx_transfer.evaluation.calibration import apply_temperature
from tfx_transfer.evaluation.metrics import OperatingPoint
from tfx_transfer.evaluation.scoring import score_images
from tfx_transfer.runs.folder import RunFolder, RunFolderError
from tfx_transfer.runs.model_info import ModelInfo
from tfx_transfer.data.sources import IMAGE_EXTENSIONS, ImageTable

#: With argmax decisions, an image is flagged for review when its two most probable classes are this close.
ARGMAX_REVIEW_MARGIN = 0.1


@dataclass(frozen=True)
class LoadedRun:
    """A trained model with what its run decided about it (see `load_run`).

    Attributes:
        run_dir: The run folder.
        model: The Keras model (raw RGB pixels in, uncalibrated probabilities out); for an anomaly
            run, its patch-feature extractor.
        info: model.json (`ModelInfo`): class names, image size, temperature, operating points.
        detector: An anomaly run's `tfx_transfer.training.anomaly.AnomalyDetector` (None for a classifier).
    """

    run_dir: Path
    model: object
    info: ModelInfo
    detector: object = None

    def raw_scores(self, table: ImageTable, indices: np.ndarray, verbose: int = 0) -> np.ndarray:
        """Uncalibrated `(n, num_classes)` scores of the rows `indices`, as the run's evaluation made them."""
        if self.detector is not None:
            distances, _ = self.detector.distances(table, indices, keep_maps=False)
            return self.detector.scores(distances, self.operating_point.positive_index)
        return score_images(self.model, table, indices, self.info.image_size, self.info.test_time_views, verbose)

    def calibrated(self, scores: np.ndarray) -> np.ndarray:
        """Raw scores after the run's temperature (what its decisions use)."""
        return apply_temperature(scores, self.info.temperature, self.info.positive_index)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def operating_point(self) -> OperatingPoint:
        return self.info.operating_point

    def decision_rule(self, site: str | None = None) -> tuple[OperatingPoint, tuple[float, float] | None]:
        """`(operating point, review band)` of the run (`site=None`) or of a recalibrated site.

        Raises:
            ValueError: for a site that was never recalibrated.
        """
        return self.info.decision_rule(site, self.run_dir)

    def predict(self, inputs, path_column: str = "path", calibrated: bool = True, verbose: int = 0,
                site: str | None = None):
        """Scores and decisions for new images.

        Args:
            inputs: A folder (searched recursively), a CSV file with a `path_column` (paths relative
                to the CSV's folder; with `ROI_COLUMNS`, such as GTSRB's annotation files, each image is
                cropped to its box as training did), an image file, or a list of any of them.
            path_column: The CSV's column of image paths.
            calibrated: Probabilities after the run's temperature (what its decisions use); False
                gives the model's raw outputs.
            verbose: Print a progress bar.
            site: Decide at the operating point `tfx-transfer recalibrate` chose for this site
                instead of the run's own.

        Returns:
            A pandas DataFrame, one row per file: `path`, one probability column per class
            (`probability_<class>`), `decision` (the class at the run's operating point), `review`
            (the score is too close to the decision boundary to trust without a look) and `error`
            (why a file could not be read; its other columns are empty).

        Raises:
            FileNotFoundError: for an input path that does not exist.
            ValueError: for a CSV without `path_column`, or inputs that hold no image file.
        """
        return self.predict_batch(inputs, path_column, calibrated, verbose, site, features=False).frame

    def predict_batch(self, inputs, path_column: str = "path", calibrated: bool = True, verbose: int = 0,
                      site: str | None = None, features: bool = True) -> "BatchPredictions":
        """`predict`, keeping what drift and selection need: the raw and calibrated scores of the readable
        images and (with `features`, one more forward pass) their pooled features."""
        import pandas as pd

        from tfx_transfer.data.images import scan_images

        point, band = self.decision_rule(site)
        paths, rois = collect_images(inputs, path_column)
        scan = scan_images(paths)
        usable, problems = usable_boxes(paths, rois, scan)
        readable = [path for path, ok in zip(paths, usable) if ok]
        rows, scores, probabilities, pooled = [], None, None, None
        if readable:
            table = ImageTable(labels=np.zeros(len(readable), int), class_names=self.class_names,
                               paths=np.array(readable, dtype=object), source="predict",
                               decoders=scan.decoders[usable], image_sizes=scan.sizes[usable],
                               rois=None if rois is None else rois[usable])
            scores = self.raw_scores(table, np.arange(len(table)), verbose)
            probabilities = self.calibrated(scores)
            shown = probabilities if calibrated else np.asarray(scores, float)
            decisions = point.predict(probabilities)
            review = self._review(probabilities, point, band)
            for index, path in enumerate(table.paths):
                row = {"path": str(path)}
                row.update({f"probability_{name}": float(shown[index, k]) for k, name in enumerate(self.class_names)})
                row.update(decision=self.class_names[int(decisions[index])], review=bool(review[index]), error="")
                rows.append(row)
            if features:
                pooled = self.pooled_features(table, np.arange(len(table)))
        for path, reason in problems:
            rows.append({"path": str(path), "error": reason})
        columns = ["path", *(f"probability_{name}" for name in self.class_names), "decision", "review", "error"]
        return BatchPredictions(pd.DataFrame(rows, columns=columns), scores, probabilities, pooled, point)

    def pooled_features(self, table: ImageTable, indices: np.ndarray) -> np.ndarray | None:
        """Pooled features of the rows (what the head decides on), or None for an anomaly run."""
        from tfx_transfer.evaluation.scoring import pooled_features
        from tfx_transfer.models.classifier import pooled_feature_model

        model = None if self.detector is not None else pooled_feature_model(self.model)
        return None if model is None else pooled_features(model, table, indices, self.info.image_size)

    def check_drift(self, batch: "BatchPredictions"):
        """Whether the batch differs from the run's validation images (`tfx_transfer.evaluation.drift`);
        None when the run keeps no reference (made before reference.npz, or an anomaly run)."""
        from tfx_transfer.evaluation.drift import check_drift

        reference = RunFolder(self.run_dir).read_reference()
        if not reference or batch.scores is None:
            return None
        return check_drift(reference["val_score"], batch.scores, reference["train_features"],
                           reference["val_features"], batch.features, self.info.positive_index)

    def select(self, batch: "BatchPredictions", count: int):
        """The `count` images of the batch to label first (`tfx_transfer.evaluation.selection`), as a
        DataFrame: `rank`, `path`, `uncertainty`, `decision`."""
        import pandas as pd

        from tfx_transfer.evaluation.selection import select_for_labelling, uncertainty

        if batch.probabilities is None or batch.features is None:
            raise ValueError("Selecting images to label needs a classifier run with pooled features and readable "
                             "images; an anomaly run has neither head nor pooled features.")
        known = RunFolder(self.run_dir).read_reference().get("train_features")
        chosen = select_for_labelling(batch.probabilities, batch.features, count, batch.point, known)
        scored = batch.frame[batch.frame["error"] == ""].reset_index(drop=True)
        doubt = uncertainty(batch.probabilities, batch.point)
        return pd.DataFrame({"rank": np.arange(1, len(chosen) + 1), "path": scored["path"].to_numpy()[chosen],
                             "uncertainty": doubt[chosen].round(4), "decision": scored["decision"].to_numpy()[chosen]})

    @staticmethod
    def _review(probabilities: np.ndarray, point: OperatingPoint, band) -> np.ndarray:
        if point.kind != "argmax" and point.threshold is not None and band is not None:
            positive = probabilities[:, point.positive_index]
            return (positive >= band[0]) & (positive <= band[1])
        top_two = np.sort(probabilities, axis=1)[:, -2:]
        return (top_two[:, 1] - top_two[:, 0]) < ARGMAX_REVIEW_MARGIN


@dataclass(frozen=True)
class BatchPredictions:
    """`LoadedRun.predict_batch`'s result: the predictions table (`frame`, readable images first, in
    order) and, for the readable images, raw `scores`, calibrated `probabilities`, pooled `features`
    (None when not asked for) and the operating `point` the decisions used."""

    frame: object
    scores: np.ndarray | None
    probabilities: np.ndarray | None
    features: np.ndarray | None
    point: OperatingPoint


def select_for_labelling(run_dir: str | os.PathLike, inputs, count: int, path_column: str = "path", verbose: int = 0):
    """The `count` unlabelled images of `inputs` whose labels would help the run's model most: uncertain
    at its operating point and unlike each other and its training images (see
    `tfx_transfer.evaluation.selection`).

    Example:
        >>> select_for_labelling("runs/line7", "unlabelled/", 50).head(3)  # doctest: +SKIP
           rank                      path  uncertainty   decision
        0     1  unlabelled/cell0412.png       0.9731  defective
    """
    run = load_run(run_dir)
    return run.select(run.predict_batch(inputs, path_column, verbose=verbose), count)


def usable_boxes(paths: list[str], rois: np.ndarray | None, scan) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """`(usable, problems)`: the readable images whose crop box (if any) holds pixels of the image, and
    `(path, reason)` for every other one (unreadable, or an inverted or out-of-image box: never fatal)."""
    usable, problems = scan.ok.copy(), list(scan.problems)
    if rois is None:
        return usable, problems
    for index in np.flatnonzero(usable & (rois[:, 0] >= 0)):
        x1, y1, x2, y2 = (int(v) for v in rois[index])
        height, width = (int(v) for v in scan.sizes[index])
        if not (0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height):
            usable[index] = False
            problems.append((paths[index], f"crop box (x1, y1, x2, y2) = ({x1}, {y1}, {x2}, {y2}) is empty or outside "
                                           f"the {width}x{height} image; expected 0 <= x1 <= x2 < {width} and "
                                           f"0 <= y1 <= y2 < {height}"))
    return usable, problems


#: Crop-box columns of a CSV input (the GTSRB annotation files' names): each image is cropped to its box.
ROI_COLUMNS = ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")


def collect_inputs(inputs, path_column: str = "path") -> list[str]:
    """Image paths from folders (recursive), CSV files (`path_column`, relative to the CSV) and files."""
    return collect_images(inputs, path_column)[0]


def collect_images(inputs, path_column: str = "path") -> tuple[list[str], np.ndarray | None]:
    """`(paths, rois)`: image paths as `collect_inputs` finds them, and their crop boxes `(n, 4)`
    `(x1, y1, x2, y2)` from a CSV's `ROI_COLUMNS` (-1 for an image without one), or None when no
    input has boxes. A CSV's separator (comma or semicolon) is read from its header."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths: list[str] = []
    rois: list[tuple] = []
    for item in map(Path, items):
        if item.is_dir():
            # Named like an image but no file (a dangling link, a loop, a folder): listed, so it gets a row with the reason.
            found = sorted(str(p) for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f"'{item}' holds no image file (searched recursively for {', '.join(sorted(IMAGE_EXTENSIONS))}).")
            paths += found
            rois += [(-1, -1, -1, -1)] * len(found)
        elif item.is_file() and item.suffix.lower() == ".csv":
            import pandas as pd

            with open(item, encoding="utf-8", errors="replace") as file:
                header = file.readline()
            # GTSRB's annotation files use semicolons; a sniffer guesses wrong on one-column files.
            frame = pd.read_csv(item, sep=";" if header.count(";") > header.count(",") else ",")
            if path_column not in frame.columns:
                raise ValueError(f"CSV '{item}' has no column {path_column!r}. Found columns: {list(frame.columns)}. "
                                 "Name the column of image paths with --path-column.")
            paths += [str(p if os.path.isabs(str(p)) else item.parent / str(p)) for p in frame[path_column].astype(str)]
            if all(column in frame.columns for column in ROI_COLUMNS):
                rois += list(map(tuple, frame[list(ROI_COLUMNS)].to_numpy(dtype=int)))
            else:
                rois += [(-1, -1, -1, -1)] * len(frame)
        elif item.is_file():
            paths.append(str(item))
            rois.append((-1, -1, -1, -1))
        else:
            raise FileNotFoundError(f"Input not found: '{item}'. Expected a folder of images, a CSV file with a "
                                    f"{path_column!r} column, or image files.")
    boxes = np.array(rois, dtype="int32").reshape(-1, 4)
    return paths, boxes if (boxes >= 0).any() else None


#: The columns every predictions CSV of ours starts and ends with (the class columns between them).
_OWN_COLUMNS = ("path", "decision", "review", "error")


def check_output(out: str | os.PathLike, inputs, overwrite: bool = False) -> Path:
    """Checks, before any image is scored, that the predictions CSV can be written at `out`.

    An output that is one of the inputs is refused (it would replace the user's labels), and so is
    an existing file that is not a predictions file of ours, unless `overwrite`.

    Raises:
        ValueError: for an output that is an input, a folder, another file, or not writable.
    """
    out = Path(out)
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if any(Path(item).exists() and out.exists() and os.path.samefile(item, out) for item in items) or \
            any(os.path.abspath(item) == os.path.abspath(out) for item in items):
        raise ValueError(f"--out '{out}' is one of the inputs: writing the predictions there would replace it. "
                         "Name another file, e.g. --out predictions.csv.")
    if out.is_dir():
        raise ValueError(f"--out '{out}' is a folder; expected the CSV file to write, e.g. --out {out / 'predictions.csv'}.")
    if out.exists() and not overwrite and not _is_predictions_file(out):
        raise ValueError(f"--out '{out}' exists and is not a predictions file of tfx-transfer (its header is not "
                         f"{', '.join(_OWN_COLUMNS[:1])}, probability_..., {', '.join(_OWN_COLUMNS[1:])}), so it is not "
                         "replaced. Name another file, or pass --overwrite to replace it.")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"Cannot write --out '{out}': the folder '{parent}' does not exist. Create it, or name another file.")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ValueError(f"Cannot write --out '{out}': no permission to write there. Name a file in a folder you can "
                         "write.")
    return out


def _is_predictions_file(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            header = file.readline().strip().split(",")
    except OSError:
        return False
    return (len(header) >= 5 and header[0] == _OWN_COLUMNS[0] and tuple(header[-3:]) == _OWN_COLUMNS[1:]
            and all(column.startswith("probability_") for column in header[1:-3]))


def load_run(run_dir: str | os.PathLike) -> LoadedRun:
    """The trained model of a finished run folder, ready to `predict`.

    Raises:
        RunFolderError: if the folder has no model.keras or model.json (the message says why), or
            model.json was written by a newer version.

    Example:
        >>> run = load_run("runs/line7")  # doctest: +SKIP
        >>> run.class_names  # doctest: +SKIP
        ['defective', 'good']
    """
    import keras

    import tfx_transfer.models.classifier  # noqa: F401  (registers the toolkit's layers: ImagePreprocessing, Grayscale)

    folder = RunFolder(run_dir)
    missing = [path.name for path in (folder.model_file, folder.model_info_file) if not path.is_file()]
    if missing:
        raise RunFolderError(
            f"'{folder.path}' has no trained model to use: {', '.join(missing)} missing. Expected a finished run of "
            "`tfx-transfer run` or `train` (comparison runs keep their model too; multi-label runs have none yet).")
    info = ModelInfo.read(folder.model_info_file)
    try:
        if info.is_anomaly:
            from tfx_transfer.training.anomaly import load_detector

            detector = load_detector(folder.model_file, folder.anomaly_file)
            return LoadedRun(folder.path, detector.extractor, info, detector)
        model = keras.saving.load_model(folder.model_file, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 (Keras says "File not found" for a truncated zip, among others)
        raise RunFolderError(
            f"'{folder.model_file}' cannot be loaded ({type(error).__name__}: {str(error)[:300]}). It is damaged "
            "(copied only in part?) or was written by another version of Keras; copy the run folder again from where "
            "it was made, or run the recipe again. Its report and predictions.npz are not affected.") from None
    outputs = int(model.output_shape[-1])
    if outputs != len(info.class_names):
        raise RunFolderError(
            f"'{folder.model_info_file}' names {len(info.class_names)} classes ({', '.join(info.class_names)}), but "
            f"'{folder.model_file}' has {outputs} outputs: the two files come from different runs. Copy the run folder "
            "again whole, or write model.json again from the run's own files: tfx-transfer report "
            f"{folder.path} --model-info.")
    return LoadedRun(folder.path, model, info)
