"""The parity gate of an export: the exported model and the Keras model score the run's test images,
and the export is kept only when their decisions agree and the primary metric holds.

`check_parity` runs the exported file (SavedModel, TFLite or ONNX; for a SavedModel also its
encoded-bytes signature) on the images the run kept as its test split and returns the figures per
signature; `gate_failures` says why figures fail the tolerances (`MIN_AGREEMENT`,
`MAX_METRIC_DROP`).

Example:
    >>> figures = parity([0, 1], [[.8, .2], [.3, .7]], [0, 1], [[.7, .3], [.6, .4]], [0, 0], "accuracy", 1)
    >>> gate_failures(figures, MIN_AGREEMENT, MAX_METRIC_DROP["float32"])[0]
    'decisions agree on 50.00% of 2 test images (at least 99.50% needed)'
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from tfx_transfer.runs.folder import RunFolder

#: Decisions of the exported model and the Keras model must agree on at least this share of test images.
MIN_AGREEMENT = 0.995
#: The largest drop of the primary metric an export may show, by the precision of its weights.
MAX_METRIC_DROP = {"float32": 0.005, "float16": 0.005, "int8": 0.02}


class ExportError(RuntimeError):
    """An export that cannot be made or did not pass its parity gate; nothing was left in place."""


def exported_runner(format: str, path: Path):
    """A function `pixels -> (probabilities, decisions)` for the exported file at `path`."""
    if format == "saved_model":
        import tensorflow as tf

        serve = tf.saved_model.load(str(path)).signatures["serving_default"]

        def run(pixels):
            out = serve(pixels=tf.constant(pixels))
            return out["probabilities"].numpy(), out["decision"].numpy()

        return run
    if format == "tflite":
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's notice that it moves to ai_edge_litert
            interpreter = tf.lite.Interpreter(model_path=str(path))
        serve = interpreter.get_signature_runner()

        def run(pixels):
            out = serve(pixels=np.ascontiguousarray(pixels))
            return out["probabilities"], out["decision"]

        return run
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    def run(pixels):
        out = dict(zip(names, session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(pixels)})))
        probabilities = next(value for name, value in out.items() if "probabilities" in name)
        decision = next(value for name, value in out.items() if "decision" in name)
        return probabilities, decision

    return run


def _bytes_runner(path: Path):
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["images"]

    def run(encoded: list[bytes]):
        out = serve(images=tf.constant(encoded))
        return out["probabilities"].numpy(), out["decision"].numpy()

    return run


def kept_images(saved: dict, name: str, class_names: list[str], labels=None):
    """An ImageTable of the images a run kept as `<name>_paths` (and `<name>_rois`)."""
    from tfx_transfer.data.images import scan_images
    from tfx_transfer.data.sources import ImageTable

    paths = [str(path) for path in saved.get(f"{name}_paths", [])]
    if not paths:
        return None
    scan = scan_images(paths)
    if not scan.ok.all():
        bad = [f"{path} ({reason})" for path, reason in scan.problems[:3]]
        raise ExportError(f"The parity check reads the run's {name.replace('_', ' ')} images again, and "
                          f"{int((~scan.ok).sum())} of {len(paths)} cannot be read now: {'; '.join(bad)}. "
                          "Export where the run's data is (at the same paths).")
    rois = saved.get(f"{name}_rois")
    return ImageTable(labels=np.zeros(len(paths), int) if labels is None else np.asarray(labels),
                      class_names=class_names, paths=np.array(paths, dtype=object), source=name,
                      decoders=scan.decoders, image_sizes=scan.sizes, rois=rois)


def image_batches(table, image_size, batch_size: int = 32):
    from tfx_transfer.data.pipeline import make_dataset

    for images, _labels in make_dataset(table, np.arange(len(table)), image_size, batch_size):
        yield images.numpy()


def parity(y_true, reference_probabilities, reference_decisions, probabilities, decisions, metric: str,
           positive_index: int | None) -> dict:
    """The figures the gate reads: largest probability difference, decision agreement, and the
    primary metric of the reference (Keras) and of the exported model on the same images.

    Example:
        >>> parity([0, 1], [[.8, .2], [.3, .7]], [0, 1], [[.7, .3], [.6, .4]], [0, 0], "accuracy", 1)["decision_agreement"]
        0.5
    """
    from tfx_transfer.evaluation.metrics import score

    reference_probabilities = np.asarray(reference_probabilities, float)
    probabilities = np.asarray(probabilities, float)
    finite = np.isfinite(probabilities).all(axis=1)
    reference_metric = score(metric, np.asarray(y_true), reference_probabilities, np.asarray(reference_decisions),
                             positive_index)
    # A model that gives NaN or infinite scores has no metric; the gate fails it for those scores alone.
    exported_metric = score(metric, np.asarray(y_true), probabilities, np.asarray(decisions),
                            positive_index) if finite.all() else None
    return {
        "images": int(len(probabilities)),
        "non_finite": int((~finite).sum()),
        "max_probability_difference": float(np.abs(probabilities - reference_probabilities)[finite].max(initial=0.0)),
        "decision_agreement": float(np.mean(np.asarray(decisions) == np.asarray(reference_decisions))),
        "metric": metric,
        "keras_metric": reference_metric,
        "exported_metric": exported_metric,
        "metric_drop": None if reference_metric is None or exported_metric is None else reference_metric - exported_metric,
    }


def gate_failures(figures: dict, min_agreement: float, max_metric_drop: float) -> list[str]:
    """Why `figures` (from `parity`) fail the gate; empty when they pass."""
    failures = []
    if figures.get("non_finite"):
        failures.append(f"{figures['non_finite']} of {figures['images']} test images get NaN or infinite scores")
    if figures["decision_agreement"] < min_agreement:
        failures.append(f"decisions agree on {figures['decision_agreement']:.2%} of {figures['images']} test images "
                        f"(at least {min_agreement:.2%} needed)")
    if figures["metric_drop"] is not None and figures["metric_drop"] > max_metric_drop:
        failures.append(f"{figures['metric']} drops by {figures['metric_drop']:.4f}, from {figures['keras_metric']:.4f} "
                        f"to {figures['exported_metric']:.4f} (at most {max_metric_drop} allowed)")
    return failures


def check_parity(loaded, format: str, target: Path, test, saved: dict, point) -> tuple[dict, list[str]]:
    """Parity figures per signature (the exported model vs the Keras model on the run's test
    images), and notes on what could not be checked."""
    from tfx_transfer.evaluation.scoring import score_images

    image_size = loaded.info.image_size
    reference = loaded.calibrated(score_images(loaded.model, test, np.arange(len(test)), image_size,
                                               loaded.info.test_time_views))
    reference_decisions = point.predict(reference)
    run = exported_runner(format, target)
    outputs = [run(batch) for batch in image_batches(test, image_size)]
    probabilities = np.concatenate([o[0] for o in outputs])
    decisions = np.concatenate([o[1] for o in outputs])
    metric = RunFolder(loaded.run_dir).read_report()["metrics"]["primary"]["name"]
    y_true = np.asarray(saved["test_true"])
    notes: list[str] = []
    figures = {"serving_default": parity(y_true, reference, reference_decisions, probabilities, decisions, metric,
                                         point.positive_index)}
    figures["serving_default"]["keras_vs_run_max_difference"] = float(np.abs(
        loaded.calibrated(saved["test_score"]) - reference).max())
    if format == "saved_model":
        encoded = _encoded_test_images(test)
        if encoded is None:
            notes.append("The images signature (encoded bytes) was not checked: no test image is a whole JPEG/PNG/BMP/GIF "
                         "file (crop boxes or other formats); the pixels signature was.")
        else:
            run_bytes = _bytes_runner(target)
            picked, files = encoded
            outputs = [run_bytes(files[start:start + 32]) for start in range(0, len(files), 32)]
            figures["images"] = parity(y_true[picked], reference[picked], reference_decisions[picked],
                                       np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs]),
                                       metric, point.positive_index)
            figures["images"]["skipped"] = int(len(test) - len(picked))
            if figures["images"]["skipped"]:
                notes.append(f"The images signature was checked on the {len(picked)} test images that are whole "
                             f"JPEG/PNG/BMP/GIF files; {figures['images']['skipped']} others (crop boxes, other formats, or "
                             "an EXIF orientation, which TensorFlow's decoder in that signature does not apply: send it "
                             "upright images) were checked through the pixels signature only.")
    return figures, notes


def _encoded_test_images(test):
    """`(indices, bytes)` of the test images the bytes signature can take as they are: whole files
    (no crop box) that TensorFlow decodes itself (JPEG, PNG, BMP, GIF, without an EXIF orientation);
    None if there are none."""
    from tfx_transfer.data.images import NATIVE_DECODER

    usable = np.flatnonzero((test.decoders == NATIVE_DECODER)
                            & (np.ones(len(test), bool) if test.rois is None else (test.rois[:, 0] < 0)))
    if len(usable) == 0:
        return None
    return usable, [Path(test.paths[index]).read_bytes() for index in usable]
