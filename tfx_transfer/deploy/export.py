"""Exporting a run's model for serving (SavedModel, TFLite, ONNX), gated by a parity check.

An exported model does what `tfx_transfer.deploy.predict` does, inside its own graph: raw uint8 RGB pixels
in (or encoded JPEG/PNG/BMP/GIF bytes, SavedModel only), the run's test-time views averaged, its
temperature applied, and out come calibrated `probabilities` and the `decision` at the run's
operating point. Augmentation is not in the model, so it never enters the export; a mixed-precision
model is rebuilt in float32 first.

Every export is checked before it is kept: the exported model and the Keras model score the run's
test split, and the export fails (`ExportError`, nothing left in place) when their decisions agree
on fewer than `min_agreement` of the images or the primary metric drops by more than
`max_metric_drop` (`MAX_METRIC_DROP`: 0.005 in float, 0.02 with int8). Passed or failed, the parity
figures go into `export/export.json` and the run's report.

Example:
    >>> record = export_run("runs/line7", "tflite", quantize="int8")  # doctest: +SKIP
    >>> record["parity"]["decision_agreement"]  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

# Only light imports here: the CLI reads this module's constants to build its parser.
import datetime
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tfx_transfer.deploy.parity import (  # noqa: F401  (ExportError, MIN_AGREEMENT, MAX_METRIC_DROP: re-exported)
    MAX_METRIC_DROP, MIN_AGREEMENT, ExportError, check_parity, gate_failures, image_batches, kept_images)
from tfx_transfer.runs.folder import RunFolder, current_umask

if TYPE_CHECKING:
    from tfx_transfer.evaluation.metrics import OperatingPoint
    from tfx_transfer.runs.model_info import ModelInfo

FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZATIONS = ("float16", "int8")
#: What ONNX export needs (pinned in requirements.txt; `pip install tfx-transfer[onnx]`).
ONNX_PACKAGES = ("tf2onnx", "onnx", "onnxruntime")
#: The ONNX operator set written (onnxruntime 1.32 runs up to 23; 17 covers every op our models use).
ONNX_OPSET = 17


def export_name(format: str, quantize: str | None = None) -> str:
    """The folder name of an export under `export/`: the format, then the quantisation if any."""
    return format if quantize is None else f"{format}-{quantize}"


def float32_model(model):
    """`model` itself when every layer computes in float32; otherwise the same architecture rebuilt
    with float32 layers and the same weights (mixed-precision layers keep float32 weights, so the
    copy is exact; only the computation is no longer rounded to 16 bits)."""
    import keras

    def mixed(policy) -> bool:
        return getattr(policy, "compute_dtype", "float32") != "float32"

    if not any(mixed(layer.dtype_policy) for layer in model._flatten_layers(include_self=True)):
        return model

    def to_float32(node):
        if isinstance(node, dict):
            if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(node.get("config"), dict):
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: to_float32(value) for key, value in node.items()}
        if isinstance(node, list):
            return [to_float32(value) for value in node]
        return node

    rebuilt = keras.saving.deserialize_keras_object(to_float32(keras.saving.serialize_keras_object(model)))
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def serving_functions(model, info: ModelInfo, operating_point: OperatingPoint) -> dict:
    """`{"serving_default": (function, input_signature), "images": (function, input_signature)}`:
    the first takes uint8 pixels `[batch, height, width, 3]`, the second encoded image bytes
    `[batch]`; both return `{"probabilities": float32 [batch, classes], "decision": int32 [batch]}`
    as `LoadedRun.predict` computes them (test-time views, temperature, operating point)."""
    import tensorflow as tf

    from tfx_transfer.data.augment import symmetric_view
    from tfx_transfer.data.pipeline import resize_image

    height, width = info.image_size
    views = info.test_time_views
    temperature = info.temperature
    num_classes = len(info.class_names)
    positive = operating_point.positive_index if operating_point.positive_index is not None else 1
    raw_threshold = None
    if operating_point.kind != "argmax" and operating_point.threshold is not None:
        raw_threshold = _raw_threshold(operating_point.threshold, temperature, positive)

    def calibrate(scores):
        if temperature == 1.0:
            return scores
        tiny = np.finfo("float32").tiny
        if num_classes == 2:  # as apply_temperature: from the positive column alone
            p = tf.clip_by_value(scores[:, positive], tiny, 1.0 - np.finfo("float32").eps)
            # log(1 - p), not log1p: ONNX has no Log1p, and p <= 1 - eps keeps 1 - p exact enough
            calibrated = tf.sigmoid((tf.math.log(p) - tf.math.log(1.0 - p)) / temperature)
            columns = [1.0 - calibrated, calibrated] if positive == 1 else [calibrated, 1.0 - calibrated]
            return tf.stack(columns, axis=1)
        return tf.nn.softmax(tf.math.log(tf.clip_by_value(scores, tiny, 1.0)) / temperature, axis=1)

    def score(pixels):
        if views == 1:
            scores = tf.cast(model(pixels, training=False), tf.float32)
        else:
            stacked = tf.concat([symmetric_view(pixels, view) for view in range(views)], axis=0)
            scores = tf.cast(model(stacked, training=False), tf.float32)
            scores = tf.reduce_mean(tf.reshape(scores, [views, -1, num_classes]), axis=0)
        probabilities = calibrate(scores)
        if raw_threshold is None:
            decision = tf.argmax(probabilities, axis=1, output_type=tf.int32)
        else:
            decision = tf.where(scores[:, positive] >= raw_threshold, positive, 1 - positive)
        return {"probabilities": probabilities, "decision": tf.cast(decision, tf.int32)}

    def images(encoded):
        def decode(one):
            return resize_image(tf.io.decode_image(one, channels=3, expand_animations=False), (height, width))

        return score(tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8)))

    return {"serving_default": (score, [tf.TensorSpec([None, height, width, 3], tf.uint8, name="pixels")]),
            "images": (images, [tf.TensorSpec([None], tf.string, name="images")])}


def _raw_threshold(threshold: float, temperature: float, positive: int) -> np.float32:
    """The smallest float32 raw (uncalibrated) positive score whose calibrated score reaches `threshold`.

    Two-class calibration is monotonic, so `calibrated >= threshold` is `raw >= raw_threshold`.
    Comparing the model's own float32 scores keeps each decision exactly as `predict` makes it (in
    float32 a calibrated score would carry the raw one's rounding error times 1/T): the threshold is
    mapped back in float64, then moved to the float32 where `predict`'s float64 test flips.
    """
    from tfx_transfer.evaluation.calibration import apply_temperature

    def calibrated(raw: np.float32) -> float:
        column = np.array([[1.0 - float(raw), float(raw)]] if positive == 1 else [[float(raw), 1.0 - float(raw)]])
        return float(apply_temperature(column, temperature, positive)[0, positive])

    column = np.array([[1.0 - threshold, threshold]] if positive == 1 else [[threshold, 1.0 - threshold]])
    candidate = np.float32(apply_temperature(column, 1.0 / temperature, positive)[0, positive])
    up, down = np.float32(np.inf), np.float32(-np.inf)
    while candidate < 1 and calibrated(candidate) < threshold:
        candidate = np.nextafter(candidate, up)
    while candidate > 0 and calibrated(np.nextafter(candidate, down)) >= threshold:
        candidate = np.nextafter(candidate, down)
    return candidate


def _write_saved_model(model, functions: dict, path: Path) -> None:
    """Through Keras' ExportArchive, which tracks the model's variables so that converters can
    freeze them (a plain tf.Module's SavedModel became a TFLite model reading uninitialised variables)."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (function, signature) in functions.items():
        archive.add_endpoint(name, function, input_signature=signature)
    archive.write_out(str(path), verbose=False)


def _write_tflite(model, functions: dict, path: Path, quantize: str | None, representative) -> None:
    import tensorflow as tf

    saved_model = path.parent / ".for_tflite"
    _write_saved_model(model, {"serving_default": functions["serving_default"]}, saved_model)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        # Weights and activations in int8, their ranges measured on training images; the few ops
        # without an int8 kernel (the temperature's log and sigmoid) stay in float.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
    path.write_bytes(converter.convert())
    shutil.rmtree(saved_model)


def _write_onnx(functions: dict, path: Path) -> None:
    try:
        import tf2onnx
    except ImportError as error:
        raise ExportError(f"ONNX export needs the packages {', '.join(ONNX_PACKAGES)} (not installed: {error.name}). "
                          "Install them with: pip install 'tfx-transfer[onnx]' (or pip install "
                          f"{' '.join(ONNX_PACKAGES)}).") from None
    import tensorflow as tf

    function, signature = functions["serving_default"]
    tf2onnx.convert.from_function(tf.function(function, input_signature=signature), input_signature=signature,
                                  opset=ONNX_OPSET, output_path=str(path))


def _check_options(format: str, quantize: str | None, min_agreement: float, max_metric_drop: float | None) -> float:
    """The metric drop the gate allows, after checking the options (a ValueError names the bad one)."""
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}. Expected one of {', '.join(FORMATS)}.")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantisation {quantize!r}. Expected one of {', '.join(QUANTIZATIONS)}, or none.")
    if quantize is not None and format != "tflite":
        raise ValueError(f"--quantize applies to tflite; {format} is exported in float32. Received: "
                         f"format={format!r}, quantize={quantize!r}.")
    if not 0 < min_agreement <= 1:
        raise ValueError(f"min_agreement must be in (0, 1]. Received: {min_agreement!r}")
    max_metric_drop = MAX_METRIC_DROP[quantize or "float32"] if max_metric_drop is None else float(max_metric_drop)
    if max_metric_drop < 0:
        raise ValueError(f"max_metric_drop must be 0 or more. Received: {max_metric_drop!r}")
    return max_metric_drop


def _exportable(folder: RunFolder):
    """`(loaded run, predictions.npz, test table)` of a run that can be exported, or an `ExportError` saying why not."""
    from tfx_transfer.deploy.predict import load_run

    loaded = load_run(folder.path)
    if loaded.detector is not None:
        raise ExportError(f"'{folder.path}' is an anomaly run: its score is a nearest-neighbour search in a memory bank "
                          "of good patches, which is not part of a Keras graph, so it cannot be exported yet. Score new "
                          "images with tfx-transfer predict.")
    saved = folder.read_predictions()
    if saved["test_true"].ndim != 1:
        raise ExportError("Multi-label runs cannot be exported yet (their model has no model.json).")
    test = kept_images(saved, "test", loaded.class_names, saved["test_true"])
    if test is None:
        raise ExportError(f"'{folder.path}' keeps no test image paths (its data was in memory), so the parity check "
                          "has nothing to score. Export a run made on image files.")
    return loaded, saved, test


def _staging_folder(export_dir: Path, name: str) -> Path:
    """A new private-named folder under `export/` for an export being made (leftovers of interrupted ones removed)."""
    export_dir.mkdir(exist_ok=True)
    for leftover in [*export_dir.glob(".*.tmp"), *export_dir.glob(".*.old")]:  # from an interrupted export
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=export_dir))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's folder is private; the export is as shareable as the run folder
    return staging


def _write_export(model, functions: dict, format: str, target: Path, quantize: str | None, saved: dict, loaded) -> None:
    if format == "saved_model":
        _write_saved_model(model, functions, target)
    elif format == "tflite":
        _write_tflite(model, functions, target, quantize,
                      _representative(saved, loaded.class_names, loaded.info.image_size, quantize))
    else:
        _write_onnx(functions, target)


def _export_record(name: str, format: str, quantize: str | None, target: Path, seconds: float, tolerances: dict,
                   site: str | None, point, info, figures: dict, notes: list[str], failures: list[str]) -> dict:
    """What export.json keeps of one export (passed or failed)."""
    pixels = "pixels: uint8 [batch, height, width, 3], RGB"
    return {
        "name": name, "format": format, "quantize": quantize, "passed": not failures, "failures": failures,
        "path": None, "bytes": _size(target),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "export_seconds": round(seconds, 2), "tolerances": tolerances,
        "site": site, "operating_point": point.to_dict(), "temperature": info.temperature,
        "test_time_views": info.test_time_views, "image_size": list(info.image_size),
        "class_names": list(info.class_names),
        "inputs": ({"serving_default": pixels,
                    "images": "images: string [batch], encoded JPEG/PNG/BMP/GIF (any size; resized inside; EXIF "
                              "orientation is not applied: send upright images)"}
                   if format == "saved_model" else {"serving_default": pixels}),
        "outputs": {"probabilities": "float32 [batch, classes], calibrated",
                    "decision": "int32 [batch], the class index at the run's operating point"},
        "parity": figures,
        "notes": notes,
    }


def _keep(folder: RunFolder, staging: Path, name: str, target: Path, record: dict) -> None:
    """Moves a passed export from `staging` to `export/<name>` (replacing an older one) and records it."""
    export_dir = folder.export_dir
    final = export_dir / name
    old = export_dir / f".{name}.old"
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    record["path"] = str((final / target.name).relative_to(folder.path))
    _record(folder, record)


def export_run(run_dir: str | os.PathLike, format: str = "saved_model", quantize: str | None = None,
               min_agreement: float = MIN_AGREEMENT, max_metric_drop: float | None = None, verbose: int = 0,
               site: str | None = None) -> dict:
    """Exports a finished run's model to `run_dir/export/<format>[-<quantize>]`, after its parity check.

    Args:
        run_dir: A finished run folder (with model.keras and model.json).
        format: `saved_model` (signatures `serving_default` on uint8 pixels and `images` on encoded
            bytes), `tflite` (uint8 pixels) or `onnx` (uint8 pixels; needs `ONNX_PACKAGES`).
        quantize: For `tflite`: `float16` (weights) or `int8` (weights and activations, calibrated
            on the training images the run kept); None for float32.
        min_agreement: The share of test images on which the exported decisions must equal Keras'.
        max_metric_drop: The largest allowed drop of the primary metric; by default
            `MAX_METRIC_DROP` of the export's precision.
        verbose: Print what is being done.
        site: Bake in the operating point `tfx-transfer recalibrate` chose for this site (the
            export is then named `<format>[-<quantize>]-<site>`).

    Returns:
        The export's record (also in `export/export.json`): files, sizes, seconds and `parity`.

    Raises:
        RunFolderError: for a folder without a finished run's model.
        ValueError: for an unknown format or quantisation, or a tolerance out of range.
        ExportError: when the export cannot be made or fails the parity gate (nothing is left in
            place; the failed figures are recorded in export.json).
    """
    max_metric_drop = _check_options(format, quantize, min_agreement, max_metric_drop)
    folder = RunFolder(run_dir)
    writable = folder.export_dir if folder.export_dir.is_dir() else folder.path
    if folder.path.is_dir() and not os.access(writable, os.W_OK | os.X_OK):
        raise ExportError(f"Cannot export into '{folder.export_dir}': '{writable}' is not writable by this user. Copy the "
                          "run folder where you can write, and export there.")
    loaded, saved, test = _exportable(folder)
    point, _band = loaded.decision_rule(site)
    name = export_name(format, quantize) + ("" if site is None else f"-{site}")
    started = time.perf_counter()
    model = float32_model(loaded.model)
    functions = serving_functions(model, loaded.info, point)
    staging = _staging_folder(folder.export_dir, name)
    try:
        target = staging / {"saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}[format]
        if verbose:
            print(f"Exporting {name} ...")
        _write_export(model, functions, format, target, quantize, saved, loaded)
        seconds = time.perf_counter() - started
        if verbose:
            print(f"Checking parity on {len(test)} test images ...")
        figures, notes = check_parity(loaded, format, target, test, saved, point)
        failures = [f"{signature}: {failure}" for signature, result in figures.items()
                    for failure in gate_failures(result, min_agreement, max_metric_drop)]
        record = _export_record(name, format, quantize, target, seconds,
                                {"min_agreement": min_agreement, "max_metric_drop": max_metric_drop}, site, point,
                                loaded.info, figures, notes, failures)
        if failures:
            _record(folder, record)
            raise ExportError(f"The {name} export failed its parity gate and was not kept: {'; '.join(failures)}. "
                              f"The figures are in {folder.exports_file}; the tolerances are options "
                              "(--min-agreement, --max-metric-drop).")
        _keep(folder, staging, name, target, record)
        return record
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def _representative(saved: dict, class_names, image_size, quantize):
    if quantize != "int8":
        return None
    sample = kept_images(saved, "train_sample", class_names)
    if sample is None:
        raise ExportError("int8 export calibrates on training images, and this run keeps none (made before "
                          "tfx_transfer kept a sample of their paths, or on in-memory data). Run it again, or "
                          "export with --quantize float16.")

    def images():
        for batch in image_batches(sample, image_size, batch_size=1):
            yield {"pixels": batch}

    return images


def _record(folder: RunFolder, record: dict) -> None:
    """Adds `record` to export/export.json (replacing an earlier one of the same name) and rewrites
    the run's report, which lists the exports."""
    from tfx_transfer.reporting.report import write_run_report

    folder.write_exports([r for r in folder.read_exports() if r["name"] != record["name"]] + [record])
    write_run_report(folder.path)
