"""Exporting a run's model: each format scores as the Keras model does, or the export is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tfx_transfer.deploy import export as export_module
from tfx_transfer.cli import main
from tfx_transfer.deploy.export import ExportError, export_run, float32_model
from tfx_transfer.deploy.parity import gate_failures, parity
from tfx_transfer.models.classifier import build_classifier
from tfx_transfer.runs.folder import RunFolderError

@pytest.fixture
def finished_run(part_run):
    return part_run


@pytest.fixture
def run_copy(part_run, tmp_path):
    """A copy, for tests that add exports (the session's run stays as trained)."""
    return shutil.copytree(part_run, tmp_path / "run")


def test_the_toy_run_is_neither_perfect_nor_useless(finished_run):
    # The parity tests below mean something only if the model's decisions can change.
    saved = np.load(finished_run / "predictions.npz")
    positive = saved["test_score"][:, 1]
    assert 0.6 < json.loads((finished_run / "report.json").read_text())["metrics"]["primary"]["value"] <= 1.0
    assert 0.02 < positive.min() and positive.max() < 0.999 or 0.05 < np.median(positive) < 0.95


def test_a_run_keeps_a_sample_of_its_training_images_for_int8_calibration(finished_run):
    saved = np.load(finished_run / "predictions.npz")
    facts = json.loads((finished_run / "run.json").read_text())
    sample = set(saved["train_sample_paths"])
    assert len(sample) == facts["data"]["n_train"] and not sample & set(saved["test_paths"])


def test_a_saved_model_export_passes_its_gate_and_is_recorded(run_copy):
    record = export_run(run_copy, "saved_model")
    assert record["passed"] and record["failures"] == []
    for signature in ("serving_default", "images"):  # uint8 pixels, and encoded PNG bytes decoded in the graph
        figures = record["parity"][signature]
        assert figures["decision_agreement"] == 1.0 and figures["max_probability_difference"] < 1e-5
        assert figures["images"] == len(np.load(run_copy / "predictions.npz")["test_true"])
    assert record["parity"]["serving_default"]["keras_vs_run_max_difference"] < 1e-5
    assert (run_copy / record["path"] / "saved_model.pb").is_file()
    assert json.loads((run_copy / "export" / "export.json").read_text())["exports"] == [record]
    assert not list((run_copy / "export").glob(".*"))
    report = (run_copy / "report.md").read_text()
    assert "## Exports" in report and "| saved_model (images) | passed |" in report


def _damaged(scale):
    """float32_model, then noise on a copy's weights: the exported model differs, the reference does not."""
    real = export_module.float32_model

    def damaged(model):
        copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(real(model)))
        rng = np.random.default_rng(0)
        # Multiplicative noise: each weight keeps its sign (a BatchNorm variance stays positive).
        copy.set_weights([w * np.exp(rng.normal(0, scale, w.shape)).astype(w.dtype) for w in model.get_weights()])
        return copy

    return damaged


@pytest.mark.slow
def test_a_deliberately_perturbed_export_fails_the_gate_and_leaves_no_files(run_copy, monkeypatch):
    monkeypatch.setattr(export_module, "float32_model", _damaged(0.5))
    with pytest.raises(ExportError, match=r"The tflite export failed its parity gate and was not kept: serving_default: "
                                          r"(decisions agree on|roc_auc drops by)"):
        export_run(run_copy, "tflite")
    assert sorted(p.name for p in (run_copy / "export").iterdir()) == ["export.json"]
    [record] = json.loads((run_copy / "export" / "export.json").read_text())["exports"]
    assert record["passed"] is False and record["path"] is None and record["failures"]
    figures = record["parity"]["serving_default"]
    assert figures["decision_agreement"] < 0.995 or figures["metric_drop"] > 0.005
    assert figures["keras_vs_run_max_difference"] < 1e-5  # the reference is the run's own model, untouched
    assert "FAILED (not kept)" in (run_copy / "report.md").read_text()


@pytest.mark.slow
def test_the_export_command_exits_non_zero_when_the_gate_fails(run_copy, monkeypatch, capsys):
    monkeypatch.setattr(export_module, "float32_model", _damaged(0.5))
    assert main(["export", str(run_copy), "--format", "saved_model"]) == 1
    assert "failed its parity gate" in capsys.readouterr().err
    assert not (run_copy / "export" / "saved_model").exists()


@pytest.mark.slow
def test_the_export_command_reports_parity_and_where_the_model_is(run_copy, capsys):
    assert main(["export", str(run_copy), "--format", "tflite", "--quantize", "float16"]) == 0
    out = capsys.readouterr().out
    assert "parity (serving_default" in out and "decisions agree 100.00%" in out
    assert (run_copy / "export" / "tflite-float16" / "model.tflite").is_file()


def test_gate_failures_name_each_broken_tolerance():
    figures = parity([0, 1, 1, 0], [[.8, .2], [.3, .7], [.4, .6], [.6, .4]], [0, 1, 1, 0],
                     [[.8, .2], [.3, .7], [.6, .4], [.6, .4]], [0, 1, 0, 0], "accuracy", 1)
    assert figures["decision_agreement"] == 0.75 and figures["metric_drop"] == pytest.approx(0.25)
    assert figures["max_probability_difference"] == pytest.approx(0.2)
    failures = gate_failures(figures, 0.995, 0.005)
    assert len(failures) == 2 and "accuracy drops by 0.2500, from 1.0000 to 0.7500" in failures[1]
    assert gate_failures(figures, 0.7, 0.3) == []


@pytest.mark.parametrize("positive", [0, 1])
@pytest.mark.parametrize("temperature", [0.3, 1.0, 4.0])
def test_the_threshold_on_raw_scores_decides_as_the_calibrated_one(positive, temperature):
    from tfx_transfer.evaluation.calibration import apply_temperature
    from tfx_transfer.evaluation.metrics import OperatingPoint

    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, 5000).astype("float32")
    scores = np.stack([1 - raw, raw] if positive == 1 else [raw, 1 - raw], axis=1).astype("float32")
    calibrated = apply_temperature(scores, temperature, positive)
    for threshold in [*np.quantile(calibrated[:, positive], [0.1, 0.5, 0.9]), calibrated[123, positive]]:
        expected = OperatingPoint("target_recall", float(threshold), positive).predict(calibrated)
        raw_threshold = export_module._raw_threshold(float(threshold), temperature, positive)
        assert raw_threshold.dtype == np.float32
        decided = np.where(scores[:, positive] >= raw_threshold, positive, 1 - positive)
        np.testing.assert_array_equal(decided, expected)


def test_nan_scores_fail_the_gate_instead_of_breaking_it():
    figures = parity([0, 1], [[.8, .2], [.3, .7]], [0, 1], [[.8, .2], [np.nan, np.nan]], [0, 1], "roc_auc", 1)
    assert figures["non_finite"] == 1 and figures["exported_metric"] is None
    assert gate_failures(figures, 0.5, 1.0) == ["1 of 2 test images get NaN or infinite scores"]


@pytest.mark.parametrize(("arguments", "message"), [
    ({"format": "pdf"}, r"Unknown export format 'pdf'. Expected one of saved_model, tflite, onnx"),
    ({"format": "saved_model", "quantize": "int8"}, r"--quantize applies to tflite; saved_model is exported in float32"),
    ({"format": "tflite", "quantize": "int4"}, r"Unknown quantisation 'int4'. Expected one of float16, int8"),
    ({"min_agreement": 1.5}, r"min_agreement must be in \(0, 1\]"),
    ({"site": "line9"}, r"no operating point for site 'line9'. Sites: none"),
])
def test_bad_export_options_are_explained(finished_run, arguments, message):
    with pytest.raises(ValueError, match=message):
        export_run(finished_run, **arguments)


def test_a_folder_without_a_model_cannot_be_exported(tmp_path, capsys):
    with pytest.raises(RunFolderError, match="has no trained model to use: model.keras, model.json missing"):
        export_run(tmp_path)
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "has no trained model to use" in capsys.readouterr().err


def test_int8_needs_the_training_sample_and_says_so(run_copy):
    saved = dict(np.load(run_copy / "predictions.npz"))
    del saved["train_sample_paths"]
    np.savez(run_copy / "predictions.npz", **saved)
    with pytest.raises(ExportError, match="int8 export calibrates on training images, and this run keeps none"):
        export_run(run_copy, "tflite", quantize="int8")


def test_the_parity_check_needs_the_test_images_where_they_were(run_copy, finished_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(finished_run.parent / "line7", moved)
    shutil.rmtree(finished_run.parent / "line7" / "ok")
    try:
        with pytest.raises(ExportError, match=r"cannot be read now: .*Export where the run's data is"):
            export_run(run_copy, "saved_model")
    finally:
        shutil.copytree(moved / "ok", finished_run.parent / "line7" / "ok")


def test_onnx_without_its_packages_names_them(run_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ExportError, match=r"ONNX export needs the packages tf2onnx, onnx, onnxruntime .*"
                                          r"pip install 'tfx-transfer\[onnx\]'"):
        export_run(run_copy, "onnx")
    assert not list((run_copy / "export").glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize(("format", "quantize"), [("tflite", None), ("tflite", "int8"), ("onnx", None)])
def test_tflite_and_onnx_exports_are_checked_like_the_saved_model(run_copy, format, quantize):
    try:
        record = export_run(run_copy, format, quantize)
    except ExportError:  # int8 may fail its gate on this toy; the figures must still be there and honest
        [record] = json.loads((run_copy / "export" / "export.json").read_text())["exports"]
        assert quantize == "int8" and record["failures"]
    figures = record["parity"]["serving_default"]
    if quantize is None:
        assert record["passed"] and figures["decision_agreement"] == 1.0 and figures["max_probability_difference"] < 1e-5
    else:  # int8 rounds activations: close, but not float-exact
        assert 0 < figures["max_probability_difference"] < 0.2 and figures["decision_agreement"] > 0.8


@pytest.mark.slow
def test_the_saved_model_scores_image_bytes_in_a_process_without_tfx_transfer(run_copy, finished_run):
    record = export_run(run_copy, "saved_model")
    saved = np.load(finished_run / "predictions.npz")
    paths = [str(p) for p in saved["test_paths"][:6]]
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["tfx_transfer"] = None  # importing it would fail: the SavedModel must not need it
        import tensorflow as tf
        model = tf.saved_model.load({str(run_copy / record["path"])!r})
        images = [open(path, "rb").read() for path in {paths!r}]
        out = model.signatures["images"](images=tf.constant(images))
        print(json.dumps({{"probabilities": out["probabilities"].numpy().tolist(),
                          "decision": out["decision"].numpy().tolist(),
                          "loaded": sorted(m for m in sys.modules if m.startswith("tfx_transfer") and sys.modules[m])}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    from tfx_transfer.deploy.predict import load_run

    expected = load_run(finished_run).predict(paths)
    np.testing.assert_allclose(result["probabilities"], expected[["probability_ok", "probability_scratched"]], atol=1e-5)
    assert [["ok", "scratched"][k] for k in result["decision"]] == list(expected["decision"])


def test_a_mixed_precision_model_is_exported_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = build_classifier("tiny_test", 2, None, 32, 0.2, seed=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert any(layer.dtype_policy.compute_dtype == "float16" for layer in mixed._flatten_layers())
    rebuilt = float32_model(mixed)
    assert all(layer.dtype_policy.compute_dtype == "float32" for layer in rebuilt._flatten_layers())
    for before, after in zip(mixed.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(before, after)
    pixels = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3)).astype("uint8")
    np.testing.assert_allclose(rebuilt.predict(pixels, verbose=0), mixed.predict(pixels, verbose=0), atol=2e-2)
    plain = build_classifier("tiny_test", 2, None, 32, 0.2, seed=0)
    assert float32_model(plain) is plain


def test_an_export_into_a_run_folder_that_cannot_be_written_is_refused_before_any_work(run_copy, monkeypatch):
    import os

    real_access = os.access
    # Root (as here and in CI) may write anywhere, so the folder is read-only as the check sees it.
    monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode) and str(path) != str(run_copy))
    with pytest.raises(ExportError, match=r"Cannot export into '.*export': '.*run' is not writable by this user"):
        export_run(run_copy, "saved_model")
    assert not (run_copy / "export").exists()
