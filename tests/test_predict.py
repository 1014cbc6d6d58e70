"""Using a trained model: a run folder's model scores new images as the run's own evaluation did."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tfx_transfer.evaluation.calibration import apply_temperature
from tfx_transfer.cli import main
from tfx_transfer.evaluation.metrics import OperatingPoint
from tfx_transfer.deploy.predict import collect_inputs, load_run
from tfx_transfer.evaluation.scoring import score_images
from tfx_transfer.runs.folder import RunFolderError
from tfx_transfer.experiments.runner import run

TINY = ["model.backbone=tiny_test", "model.weights=none", "model.image_size=32", "training.epochs=2",
        "training.strategy=feature_extraction", "training.batch_size=8", "evaluation.bootstrap=20",
        "data.weight_column=null", "data.positive_class=scratched", "evaluation.test_time_views=1"]


def _parts(root, count=12):
    rng = np.random.default_rng(0)
    for name, level in (("ok", 70), ("scratched", 170)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(level + rng.normal(0, 25, (36, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"part{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    data = _parts(root / "line7")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run("product_defects", data=data, overrides=TINY, out=root / "run", verbose=0)
    return result.run_dir


def test_a_finished_run_keeps_its_model_and_what_using_it_needs_but_not_its_checkpoints(finished_run):
    info = json.loads((finished_run / "model.json").read_text())
    report = json.loads((finished_run / "report.json").read_text())
    assert info["class_names"] == ["ok", "scratched"] and info["image_size"] == [32, 32]
    assert info["temperature"] == report["calibration"]["temperature"]
    assert info["operating_point"] == report["metrics"]["operating_point"]
    assert info["operating_point"]["kind"] == "target_recall"
    assert info["review_band"] is None or info["review_band"][0] <= info["review_band"][1]
    assert not (finished_run / "training").exists()


def test_predict_on_the_test_files_reproduces_the_runs_scores_and_decisions(finished_run):
    saved = np.load(finished_run / "predictions.npz")
    loaded = load_run(finished_run)
    raw = loaded.predict(list(saved["test_paths"]), calibrated=False)
    calibrated = loaded.predict(list(saved["test_paths"]))
    assert list(raw["path"]) == list(saved["test_paths"])
    columns = ["probability_ok", "probability_scratched"]
    np.testing.assert_allclose(raw[columns].to_numpy(), saved["test_score"], atol=1e-5)
    point = loaded.info.operating_point
    expected = apply_temperature(saved["test_score"], loaded.info.temperature, point.positive_index)
    np.testing.assert_allclose(calibrated[columns].to_numpy(), expected, atol=1e-5)
    decisions = [loaded.class_names[i] for i in point.predict(expected)]
    assert list(calibrated["decision"]) == decisions
    report = json.loads((finished_run / "report.json").read_text())
    positives = saved["test_true"] == point.positive_index
    recall = np.mean(np.array(decisions)[positives] == "scratched")
    assert recall == pytest.approx(report["metrics"]["sensitivity"])


def test_unreadable_files_are_listed_with_their_reason_and_the_rest_scored(finished_run, tmp_path):
    incoming = _parts(tmp_path / "incoming", count=2)
    (incoming / "ok" / "truncated.png").write_bytes((incoming / "ok" / "part00.png").read_bytes()[:60])
    (incoming / "nested").mkdir()
    (incoming / "nested" / "notes.jpg").write_text("not an image")
    predictions = load_run(finished_run).predict(incoming)
    failed = predictions[predictions["error"] != ""]
    assert sorted(p.rsplit("/", 1)[1] for p in failed["path"]) == ["notes.jpg", "truncated.png"]
    assert failed["decision"].isna().all() and (failed["error"].str.len() > 0).all()
    scored = predictions[predictions["error"] == ""]
    assert len(scored) == 4 and scored["decision"].isin(["ok", "scratched"]).all()
    np.testing.assert_allclose(scored[["probability_ok", "probability_scratched"]].sum(axis=1), 1.0, atol=1e-6)


def test_inputs_are_folders_csv_files_or_images_and_bad_ones_are_explained(tmp_path):
    folder = _parts(tmp_path / "a", count=1)
    pd.DataFrame({"file": ["ok/part00.png", "scratched/part00.png"]}).to_csv(folder / "list.csv", index=False)
    assert collect_inputs([folder / "list.csv"], "file") == [str(folder / "ok" / "part00.png"), str(folder / "scratched" / "part00.png")]
    assert collect_inputs(folder / "ok" / "part00.png") == [str(folder / "ok" / "part00.png")]
    assert len(collect_inputs(folder)) == 2
    with pytest.raises(FileNotFoundError, match=r"Input not found: '.*nowhere'\. Expected a folder of images, a CSV file"):
        collect_inputs(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"CSV '.*list.csv' has no column 'path'\. Found columns: \['file'\]\. .*--path-column"):
        collect_inputs(folder / "list.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"'.*empty' holds no image file"):
        collect_inputs(tmp_path / "empty")


def test_a_folder_without_a_model_is_explained(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(RunFolderError, match=r"'.*run' has no trained model to use: model.keras, model.json missing"):
        load_run(tmp_path / "run")


def test_the_predict_command_writes_a_csv_and_counts_what_it_could_not_read(finished_run, tmp_path, capsys):
    incoming = _parts(tmp_path / "incoming", count=1)
    (incoming / "ok" / "empty.png").write_bytes(b"")
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(finished_run), str(incoming), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "2 images scored" in printed and "1 unreadable" in printed and "empty.png" in printed
    # Not a terminal (captured, as in CI or `| tee`): plain progress lines, no bar redrawn with escape codes.
    assert "scored 2 of 2 images (100%)" in captured.err
    assert not any(code in captured.out + captured.err for code in ("\x1b", "\r", "\b"))
    written = pd.read_csv(out)
    assert list(written.columns) == ["path", "probability_ok", "probability_scratched", "decision", "review", "error"]
    assert len(written) == 3
    assert main(["predict", str(tmp_path), str(incoming)]) == 2
    assert "has no trained model to use" in capsys.readouterr().err


@pytest.mark.slow  # trains its own grayscale run: 19 s, the fast tier's longest test
def test_a_grayscale_model_loads_in_safe_mode_and_scores(tmp_path):
    data = _parts(tmp_path / "line7", count=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run("product_defects", data=data, overrides=TINY + ["model.grayscale=true"], out=tmp_path / "run", verbose=0)
    # A fresh process, as a user's: load_run itself must make the toolkit's layers known to Keras.
    code = ("import sys; from tfx_transfer.deploy.predict import load_run; loaded = load_run(sys.argv[1]); "
            "loaded.model.get_layer('grayscale'); print(len(loaded.predict(sys.argv[2])))")
    completed = subprocess.run([sys.executable, "-c", code, str(result.run_dir), str(data / "ok")],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == "8"


def test_resuming_a_finished_run_returns_it_without_training_again(finished_run):
    stamp = (finished_run / "model.keras").stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = run("product_defects", data=finished_run.parent / "line7", overrides=TINY, out=finished_run,
                    resume=True, verbose=0)
    assert (finished_run / "model.keras").stat().st_mtime_ns == stamp
    assert again.report["metrics"] == json.loads((finished_run / "report.json").read_text())["metrics"]


def test_test_time_views_average_the_model_over_mirrored_images():
    import keras

    from tfx_transfer.data.sources import from_arrays

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)  # full batches and a partial one
    table = from_arrays(images, np.arange(70) % 2, ["good", "defective"])
    # Position-sensitive on purpose (a dense layer over all pixels): every mirror scores differently.
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(seed=1))])
    indices = np.arange(3, 70)  # not starting at 0: rows must follow `indices`
    mirrors = [images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]
    expected = np.mean([model.predict(view[indices], verbose=0) for view in mirrors], axis=0)
    single = score_images(model, table, indices, (32, 32))
    averaged = score_images(model, table, indices, (32, 32), views=4)
    np.testing.assert_allclose(single, model.predict(images[indices], verbose=0), atol=1e-5)
    np.testing.assert_allclose(averaged, expected, atol=1e-5)
    assert not np.allclose(averaged, single, atol=1e-4)  # the views did change the scores


def test_a_csv_with_crop_boxes_is_scored_on_the_crops_as_training_did(finished_run, tmp_path):
    # GTSRB's annotation files: semicolon-separated, a Filename column, Roi.X1..Y2 (inclusive) per image.
    rng = np.random.default_rng(3)
    rows, crops = [], []
    for i in range(4):
        pixels = rng.integers(0, 255, (36, 40, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"sign{i}.png")
        x1, y1, x2, y2 = 3 + i, 2, 26 + i, 30
        rows.append(f"sign{i}.png;{x1};{y1};{x2};{y2}")
        Image.fromarray(pixels[y1:y2 + 1, x1:x2 + 1]).save(tmp_path / f"crop{i}.png")
        crops.append(str(tmp_path / f"crop{i}.png"))
    (tmp_path / "GT-final_test.csv").write_text("Filename;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2\n" + "\n".join(rows) + "\n")
    # One image without a box beside them keeps its whole picture.
    loaded = load_run(finished_run)
    boxed = loaded.predict([tmp_path / "GT-final_test.csv", tmp_path / "sign0.png"], path_column="Filename")
    expected = loaded.predict(crops + [str(tmp_path / "sign0.png")])
    columns = ["probability_ok", "probability_scratched"]
    np.testing.assert_allclose(boxed[columns].to_numpy(), expected[columns].to_numpy(), atol=1e-6)
    assert not np.allclose(boxed[columns].to_numpy()[0], boxed[columns].to_numpy()[-1])


def test_predict_never_replaces_its_input_or_a_file_that_is_not_its_own(finished_run, tmp_path, capsys):
    incoming = _parts(tmp_path / "incoming", count=1)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"path": [str(p) for p in sorted(incoming.rglob("*.png"))], "label": "ok"}).to_csv(labels, index=False)
    before = labels.read_bytes()
    assert main(["predict", str(finished_run), str(labels), "--out", str(labels)]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert main(["predict", str(finished_run), str(labels), "--out", str(labels), "--overwrite"]) == 2
    assert labels.read_bytes() == before
    other = tmp_path / "notes.csv"
    other.write_text("name,comment\na,b\n")
    assert main(["predict", str(finished_run), str(incoming), "--out", str(other)]) == 2
    assert "is not a predictions file of tfx-transfer" in capsys.readouterr().err
    assert other.read_text() == "name,comment\na,b\n"
    # Its own predictions file is replaced without asking; another file only with --overwrite.
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(finished_run), str(incoming), "--out", str(out)]) == 0
    assert main(["predict", str(finished_run), str(incoming), "--out", str(out)]) == 0
    assert main(["predict", str(finished_run), str(incoming), "--out", str(other), "--overwrite"]) == 0
    assert pd.read_csv(other).columns[0] == "path"


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "folder", "is a folder; expected the CSV file to write"),
    (lambda tmp: tmp / "no" / "such" / "p.csv", "the folder '.*such' does not exist"),
])
def test_a_predict_output_that_cannot_be_written_is_refused_before_scoring(tmp_path, make, message):
    from tfx_transfer.deploy.predict import check_output

    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match=message):
        check_output(make(tmp_path), [str(tmp_path / "incoming")])


def test_links_loops_and_folders_named_like_images_get_a_row_with_the_reason(finished_run, tmp_path):
    import os

    incoming = _parts(tmp_path / "incoming", count=1)
    os.symlink(tmp_path / "gone.png", incoming / "dangling.png")
    os.symlink(incoming / "loop_b.png", incoming / "loop_a.png")
    os.symlink(incoming / "loop_a.png", incoming / "loop_b.png")
    (incoming / "album.png").mkdir()
    rows = load_run(finished_run).predict(incoming).set_index("path")["error"].fillna("")
    reasons = {os.path.basename(path): reason for path, reason in rows.items() if reason}
    assert reasons == {"album.png": "not an image file: a folder named like an image",
                       "dangling.png": "not an image file: a dangling link (its target does not exist)",
                       "loop_a.png": "not an image file: a symlink loop", "loop_b.png": "not an image file: a symlink loop"}
    assert (rows == "").sum() == 2  # the two real images are scored


def test_a_bad_crop_box_costs_its_row_only(finished_run, tmp_path):
    incoming = _parts(tmp_path / "incoming", count=2)
    paths = sorted(str(p) for p in incoming.rglob("*.png"))
    boxes = [(2, 2, 20, 20), (20, 2, 5, 20), (0, 0, 500, 500), (-1, -1, -1, -1)]  # good, inverted, outside, none
    frame = pd.DataFrame({"path": paths, **{name: [box[k] for box in boxes] for k, name in
                                            enumerate(("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))}})
    frame.to_csv(tmp_path / "boxes.csv", index=False)
    rows = load_run(finished_run).predict(tmp_path / "boxes.csv").set_index("path")
    errors = rows["error"].fillna("")
    assert errors[paths[0]] == "" and errors[paths[3]] == ""
    assert errors[paths[1]].startswith("crop box (x1, y1, x2, y2) = (20, 2, 5, 20) is empty or outside the 40x36 image")
    assert "(0, 0, 500, 500)" in errors[paths[2]] and rows["decision"].notna().sum() == 2


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "model.json").write_text('{"recipe": \n'), r"model.json' is not valid JSON .*--model-info"),
    (lambda run: (run / "model.keras").write_bytes((run / "model.keras").read_bytes()[:2000]),
     r"model.keras' cannot be loaded .* It is damaged"),
    (lambda run: (run / "model.json").write_text(json.dumps(dict(json.loads((run / "model.json").read_text()),
                                                                 class_names=["ok", "scratched", "dented"]))),
     r"model.json' names 3 classes \(ok, scratched, dented\), but .*model.keras' has 2 outputs"),
])
def test_a_damaged_run_folder_names_the_file_and_the_way_back(finished_run, tmp_path, damage, message):
    import shutil

    copy = shutil.copytree(finished_run, tmp_path / "run")
    damage(copy)
    with pytest.raises(RunFolderError, match=message):
        load_run(copy)


def test_report_model_info_writes_a_lost_model_json_again_keeping_its_sites(finished_run, tmp_path):
    import shutil

    copy = shutil.copytree(finished_run, tmp_path / "run")
    before = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text("{")
    assert main(["report", str(copy), "--model-info"]) == 0
    assert json.loads((copy / "model.json").read_text()) == before
    assert len(load_run(copy).predict(_parts(tmp_path / "incoming", count=1))) == 2


def test_the_documented_way_to_load_model_keras_with_keras_alone(finished_run):
    # Keras imports only its own packages when it reads a saved model; the toolkit's layers must be known first.
    code = ("import sys, keras, numpy as np\n"
            "import tfx_transfer.models.layers\n"
            "model = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
            "print(model(np.zeros((1, 32, 32, 3), 'uint8')).shape)\n")
    result = subprocess.run([sys.executable, "-c", code, str(finished_run / "model.keras")], capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("(1, 2)")


@pytest.fixture(scope="module")
def loaded_run(finished_run):
    return load_run(finished_run)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM"]),
                                st.binary(max_size=512), st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".dcm"])),
                      min_size=1, max_size=4))
def test_predict_on_random_bytes_gives_every_file_a_row_and_never_stops(loaded_run, files):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        _parts(Path(folder), count=1)  # two real images among the junk
        for index, (header, body, suffix) in enumerate(files):
            (Path(folder) / f"junk{index}{suffix}").write_bytes(header + body)
        rows = loaded_run.predict(folder)
    assert len(rows) == len(files) + 2
    errors = rows["error"].fillna("")
    assert ((errors != "") | rows["decision"].notna()).all()
    assert rows["decision"].notna().sum() >= 2


def _line(root, seed: int, count: int, levels=(70, 170), noise: float = 25):
    rng = np.random.default_rng(seed)
    for name, level in zip(("ok", "scratched"), levels):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(level + rng.normal(0, noise, (36, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"part{i:02d}.png")
    return root


def test_predict_says_when_the_line_has_changed_and_which_images_to_label_first(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_dir = run("product_defects", data=_line(tmp_path / "line7", 0, 60), overrides=TINY, out=tmp_path / "run",
                      verbose=0).run_dir
    reference = np.load(run_dir / "reference.npz")
    assert reference["val_features"].shape[0] == len(reference["val_score"]) > 0
    same, changed = _line(tmp_path / "same", 1, 20), _line(tmp_path / "changed", 2, 20, levels=(225, 245), noise=5)
    assert main(["predict", str(run_dir), str(same), "--out", str(tmp_path / "same-out" / "p.csv"), "--select", "6"]
                ) == 2  # the output folder does not exist: refused before scoring
    (tmp_path / "same-out").mkdir()
    (tmp_path / "changed-out").mkdir()
    assert main(["predict", str(run_dir), str(same), "--out", str(tmp_path / "same-out" / "p.csv"), "--select", "6"]) == 0
    printed = capsys.readouterr().out
    unchanged = json.loads((tmp_path / "same-out" / "drift.json").read_text())
    assert unchanged["drifted"] is False and "No drift" in printed
    chosen = pd.read_csv(tmp_path / "same-out" / "to_label.csv")
    assert list(chosen.columns) == ["rank", "path", "uncertainty", "decision"] and chosen["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert chosen["path"].is_unique and set(chosen["path"]) <= set(pd.read_csv(tmp_path / "same-out" / "p.csv")["path"])
    assert main(["predict", str(run_dir), str(changed), "--out", str(tmp_path / "changed-out" / "p.csv"), "--no-drift"]) == 0
    assert not (tmp_path / "changed-out" / "drift.json").exists()
    assert main(["predict", str(run_dir), str(changed), "--out", str(tmp_path / "changed-out" / "p.csv")]) == 0
    flagged = json.loads((tmp_path / "changed-out" / "drift.json").read_text())
    assert flagged["drifted"] is True and "DRIFT" in capsys.readouterr().out and "recalibrate" in flagged["text"]
    assert flagged["feature_p_value"] < 1e-3 or flagged["score_p_value"] < 1e-3
