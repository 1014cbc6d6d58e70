from __future__ import annotations

import json
import re

import pytest
import yaml

from tfx_transfer.config.backbones import list_backbones
from tfx_transfer.cli import main


@pytest.mark.slow
def test_backbones_prints_one_row_per_backbone(capsys):
    assert main(["backbones"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["backbone", "image_size", "preprocessing", "blocks", "params"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert sorted(rows) == list_backbones()
    assert rows["vgg16"].split()[1:4] == ["224x224", "caffe", "5"]
    assert "14.7M" in rows["vgg16"]


def test_weights_list_names_the_fix_for_missing_weights(capsys, isolated_cache):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "tfx-transfer weights import FILE --backbone resnet50" in out


def test_weights_import_reports_errors_without_a_traceback(capsys, tmp_path, isolated_cache):
    bad = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    bad.write_bytes(b"garbage")
    assert main(["weights", "import", str(bad), "--backbone", "vgg16"]) == 2
    assert "error: Hash mismatch" in capsys.readouterr().err


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit):
        main(["frobnicate"])


@pytest.mark.slow
def test_train_command_is_a_run_of_a_minimal_recipe_and_resumes(tmp_path, capsys, monkeypatch):
    import json

    import keras
    import numpy as np

    from tiny_data import write_solid_folder

    monkeypatch.setenv("TFX_TRANSFER_CACHE", str(tmp_path / "cache"))
    data = write_solid_folder(tmp_path / "data", per_class=8)
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(run), "--strategy", "fine_tune", "--backbone", "tiny_test",
            "--weights", "none", "--image-size", "32", "--epochs", "2", "--fine-tune-epochs", "1",
            "--unfreeze-blocks", "1", "--batch-size", "6", "--validation-split", "0.25", "--test-split", "0.25",
            "--fine-tune-learning-rate", "0.00001", "--augment", "defects", "--bootstrap", "20"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"Test accuracy \d\.\d{3} \(95% CI", out) and f"Model: {run / 'model.keras'}" in out
    model = keras.saving.load_model(run / "model.keras")
    assert model.predict(np.zeros((1, 32, 32, 3), "uint8"), verbose=0).shape == (1, 3)
    assert len(json.loads((run / "history.json").read_text())) == 3
    # The same run folder as `run` writes: the flags became the recipe, and the report was made.
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert (recipe["model"]["backbone"], recipe["augmentation"]["policy"], recipe["data"]["source"]) == (
        "tiny_test", "defects", str(data.resolve()))
    assert json.loads((run / "report.json").read_text())["strategy"] == "fine_tune"
    assert main(["train", "--resume", str(run)]) == 0  # a finished run resumes to the same end
    assert len(json.loads((run / "history.json").read_text())) == 3
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    assert "Cannot resume" in capsys.readouterr().err


def test_train_command_explains_missing_arguments(capsys, tmp_path):
    assert main(["train", "--data", str(tmp_path)]) == 2
    assert "train needs --data PATH and --out RUN_DIR" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "is not a tfx-transfer run folder (it has no recipe.yaml and data.json" in capsys.readouterr().err


def test_setting_flags_are_made_from_the_declarations():
    from tfx_transfer.cli import build_parser
    from tfx_transfer.cli.commands import _flag_overrides
    from tfx_transfer.config.settings import SECTIONS

    parser = build_parser()
    args = parser.parse_args(["run", "product_defects", "--epochs", "3", "--learning-rate", "1e-2", "--grayscale",
                              "--unfreeze-from", "5", "--class-weight", "none", "--pooling", "avg_max"])
    assert _flag_overrides(args) == {"training.epochs": 3, "training.learning_rate": 0.01, "model.grayscale": True,
                                     "training.unfreeze_from": "5", "training.class_weight": None,
                                     "model.pooling": "avg_max"}
    # Settings that take true, false or auto are value flags, not on/off switches.
    assert _flag_overrides(parser.parse_args(["run", "product_defects", "--jit-compile", "false",
                                              "--mixed-precision", "auto"])) == {
        "training.jit_compile": False, "training.mixed_precision": "auto"}
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    for section, items in SECTIONS.items():
        for item in items:
            if dict not in item.types and item.name != "source":
                assert f"[{section}.{item.name}]" in help_text, item.name


@pytest.mark.slow
def test_compare_command_writes_the_report_and_continues_where_it_stopped(tmp_path, capsys, monkeypatch):
    import json

    from tiny_data import write_solid_folder

    monkeypatch.setenv("TFX_TRANSFER_CACHE", str(tmp_path / "cache"))
    data = write_solid_folder(tmp_path / "data", per_class=10)
    out = tmp_path / "compare"
    tiny = ["--set", "model.backbone=tiny_test", "--set", "model.weights=none", "--set", "model.image_size=32",
            "--set", "training.epochs=1", "--set", "training.fine_tune_epochs=1", "--set", "evaluation.bootstrap=20"]
    argv = ["compare", "product_defects", "--data", str(data), "--strategies", "feature_extraction,fine_tune:1",
            "--fractions", "0.5,1.0", "--seeds", "1", "--out", str(out), *tiny]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert sorted((row["label"], row["fraction"]) for row in report["rows"]) == [
        ("feature_extraction", 0.5), ("feature_extraction", 1.0), ("fine_tune_1", 0.5), ("fine_tune_1", 1.0)]
    small = next(r for r in report["rows"] if r["fraction"] == 0.5)
    assert small["n_train"] < next(r for r in report["rows"] if r["fraction"] == 1.0)["n_train"]
    assert report["verdict"]["text"] in printed and (out / "report.html").is_file()
    for written in out.glob("runs/*/recipe.yaml"):  # as if made by a version before model.pooling existed
        resolved = yaml.safe_load(written.read_text())
        del resolved["model"]["pooling"]
        written.write_text(yaml.safe_dump(resolved))
    assert main(argv) == 0  # finished runs are kept, not trained again (a field they lack had its default)
    assert capsys.readouterr().out.count("done before, kept") == 4
    # ... but only when the recipe is the same: a changed one must not mix into the kept runs.
    assert main([*argv, "--set", "training.fine_tune_epochs=2"]) == 2
    assert re.search(r"fine_tune_1_f0.5_s0' was made with another recipe \(training.fine_tune_epochs: 1 there, 2 now\)"
                     r".*Compare into a new --out, or delete that run folder", capsys.readouterr().err)


def test_run_command_reports_recipe_errors_without_a_traceback(capsys):
    assert main(["run", "product_defects", "--set", "training.epoch=2"]) == 2
    assert "error: " in (err := capsys.readouterr().err) and "Did you mean 'epochs'?" in err
    assert main(["compare", "product_defects", "--fractions", "0,1"]) == 2
    assert "Fractions must be in (0, 1]" in capsys.readouterr().err


def _demo_recipes(tmp_path, monkeypatch, texts: dict) -> None:
    """Built-in recipes replaced by `{name: text}`; `{data}` in a text is a tiny class-folder set."""
    from tiny_data import write_solid_folder

    monkeypatch.setenv("TFX_TRANSFER_CACHE", str(tmp_path / "cache"))
    data = write_solid_folder(tmp_path / "data", per_class=8)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for name, text in texts.items():
        (recipes / f"{name}.yaml").write_text(text.replace("{data}", str(data)))
    monkeypatch.setattr("tfx_transfer.config.recipe.recipes_dir", lambda: recipes)


@pytest.mark.slow
def test_demo_compares_every_recipe_and_ends_with_one_report(tmp_path, capsys, monkeypatch):
    import json

    _demo_recipes(tmp_path, monkeypatch, {
        name: f"name: {name}\ndata:\n  source: {{data}}\nmodel:\n  backbone: {backbone}\n  weights: none\n"
              "quick:\n  model.image_size: 32\n  training.epochs: 1\n  training.fine_tune_epochs: 1\n"
              "  training.unfreeze_blocks: 1\n  evaluation.bootstrap: 20\n"
        for name, backbone in (("tiny", "tiny_test"), ("wee", "tiny_test"))})
    # Two jobs: the recipes run side by side in spawned worker processes.
    assert main(["demo", "--quick", "--jobs", "2", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert f"Report of all recipes: {tmp_path / 'demo' / 'report.html'}" in out.splitlines()[-1]
    overview = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert [c["recipe"] for c in overview["comparisons"]] == ["tiny", "wee"]
    page = (tmp_path / "demo" / "report.html").read_text()
    for comparison in overview["comparisons"]:
        rows = comparison["rows"]
        assert {row["label"] for row in rows} == {"scratch", "feature_extraction", "fine_tune_1"}
        # --quick: scratch (the costliest graph to build) runs on the full training split only.
        assert sorted(row["fraction"] for row in rows if row["label"] == "scratch") == [1.0] and len(rows) == 5
        assert comparison["verdict"]["text"].split(".")[0] in page.replace("&#x27;", "'")


@pytest.mark.slow
def test_demo_names_the_recipe_that_failed_and_keeps_the_others(tmp_path, capsys, monkeypatch):
    import json

    _demo_recipes(tmp_path, monkeypatch, {
        "good": "name: good\ndata:\n  source: {data}\nmodel:\n  weights: none\n"
                "quick:\n  model.image_size: 32\n  training.epochs: 1\n  evaluation.bootstrap: 20\n",
        "lost": f"name: lost\ndata:\n  source: {tmp_path / 'nowhere'}\n"})
    monkeypatch.setattr("tfx_transfer.experiments.demo.STRATEGIES", "feature_extraction")
    assert main(["demo", "--quick", "--jobs", "1", "--out", str(tmp_path / "demo")]) == 1
    captured = capsys.readouterr()
    assert "[lost] failed: FileNotFoundError: Data not found" in captured.out
    assert re.search(r"error: The comparison of lost failed .*Rerun the same command to continue", captured.err)
    rows = json.loads((tmp_path / "demo" / "good" / "report.json").read_text())["rows"]
    assert {row["label"] for row in rows} == {"feature_extraction"}

    # After an upgrade that changed a recipe, the demo sets the older runs aside and trains them again.
    recipe = tmp_path / "recipes" / "good.yaml"
    recipe.write_text(recipe.read_text().replace("training.epochs: 1", "training.epochs: 2"))
    (tmp_path / "recipes" / "lost.yaml").unlink()
    assert main(["demo", "--quick", "--jobs", "1", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\[good\] feature_extraction_f1_s0: made with another recipe \(training.epochs: 1 there, 2 now\); "
                     r"moved to .*stale.feature_extraction_f1_s0_\d{8}-\d{6}, training it again", out)
    assert len(list((tmp_path / "demo" / "good" / "stale").glob("feature_extraction_f*"))) == 2
    for run in (tmp_path / "demo" / "good" / "runs").glob("*"):
        assert yaml.safe_load((run / "recipe.yaml").read_text())["training"]["epochs"] == 2


def test_ctrl_c_ends_in_a_message_and_status_130_not_a_traceback(capsys, monkeypatch):
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt("resume with: tfx-transfer run product_defects --out runs/x --resume")

    monkeypatch.setattr("tfx_transfer.experiments.runner.run", stopped)
    assert main(["run", "product_defects", "--out", "runs/x"]) == 130
    assert capsys.readouterr().err.strip() == "Stopped; resume with: tfx-transfer run product_defects --out runs/x --resume"


def test_a_run_into_a_folder_that_holds_one_is_refused(tmp_path, capsys, monkeypatch):
    from tiny_data import write_solid_folder

    data = write_solid_folder(tmp_path / "data", per_class=8)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text("{}")
    assert main(["run", "product_defects", "--data", str(data), "--out", str(tmp_path / "old")]) == 2
    assert "already holds a run (report.json)" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["report.json", "scan.json"]


@pytest.mark.slow
def test_the_command_line_does_not_print_tensorflows_start_up_noise(tmp_path):
    import os
    import subprocess
    import sys

    from tiny_data import write_solid_folder

    data = write_solid_folder(tmp_path / "data", per_class=8)
    # A fresh process, as a user starts it (TensorFlow's native logs appear on import), at the log
    # level the Makefile exports, training through tf.data (which logs "NodeDef mentions ...").
    env = {key: value for key, value in os.environ.items() if key != "TFX_TRANSFER_VERBOSE"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", TFX_TRANSFER_CACHE=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "tfx_transfer.cli", "train", "--data", str(data), "--out", str(tmp_path / "run"),
               "--backbone", "tiny_test", "--weights", "none", "--image-size", "32", "--epochs", "1",
               "--strategy", "feature_extraction", "--bootstrap", "20"]
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "Test accuracy" in quiet.stdout
    assert [line for line in quiet.stderr.splitlines() if line[:5] in ("I0000", "W0000", "E0000")] == []
    loud = subprocess.run([sys.executable, "-m", "tfx_transfer.cli", "--verbose", "weights", "list"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 0 and "I0000" in loud.stderr  # the same logs, shown on request


def test_demo_plans_by_quickness_and_names_a_recipe_that_cannot_start(tmp_path, capsys):
    from tfx_transfer.experiments.demo import plan, run_demo

    assert plan(True)["fractions"] == (0.25, 1.0) and plan(True)["largest_only"] == ("scratch",)
    assert plan(False)["seeds"] == 2 and len(plan(False)["fractions"]) == 4
    lost = tmp_path / "lost.yaml"
    lost.write_text(f"name: lost\ndata:\n  source: {tmp_path / 'nowhere'}\n")
    with pytest.raises(RuntimeError, match=r"The comparison of lost failed .*Rerun the same command to continue"):
        run_demo(tmp_path / "demo", quick=True, jobs=1, recipes=[lost])
    assert "[lost] failed: FileNotFoundError: Data not found" in capsys.readouterr().out


@pytest.mark.slow
def test_the_resume_command_printed_after_ctrl_c_resumes(tmp_path, capsys, monkeypatch):
    import shlex

    import tfx_transfer.training.train as train_module
    from tiny_data import write_solid_folder

    monkeypatch.setenv("TFX_TRANSFER_CACHE", str(tmp_path / "cache"))
    data = write_solid_folder(tmp_path / "data", per_class=8)
    real_save = train_module.save_checkpoint

    def interrupt_after_first(*args, **kwargs):
        path = real_save(*args, **kwargs)
        if path.name == "epoch-0001":
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(train_module, "save_checkpoint", interrupt_after_first)
    flags = ["--backbone", "tiny_test", "--weights", "none", "--image-size", "32", "--epochs", "2", "--strategy",
             "scratch", "--bootstrap", "20", "--set", "data.weight_column=null", "--batch-size", "8"]
    with pytest.warns(UserWarning, match="Stopped by Ctrl-C"):
        assert main(["run", "product_defects", "--data", str(data), "--out", str(tmp_path / "run"), *flags]) == 130
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message == f"Stopped; resume with: tfx-transfer run --resume {tmp_path / 'run'}"
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    # The printed command, as typed: the run's own recipe.yaml holds the flags and the data.
    assert main(shlex.split(message.split("resume with: ")[1])[1:]) == 0
    assert json.loads((tmp_path / "run" / "report.json").read_text())["epochs"] == 2


def test_resume_into_a_folder_that_is_no_run_or_missing_is_refused_and_touches_nothing(tmp_path, capsys):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "holiday.tmp").write_text("mine")
    assert main(["run", "product_defects", "--out", str(user), "--resume"]) == 2
    assert "is not a tfx-transfer run folder" in capsys.readouterr().err
    assert main(["run", "--resume", str(user)]) == 2
    assert [p.name for p in user.iterdir()] == ["holiday.tmp"]
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "Nothing to resume: '" in capsys.readouterr().err and not (tmp_path / "missing").exists()


@pytest.mark.parametrize("argument, message", [
    ("data.options={path_column: [", r"data.options: the value .* of --set is not valid YAML .*quote a text"),
    ("training.learning_rate=.inf", r"training.learning_rate: must be in \(0.0, 1.0\]; received inf"),
    ("model.image_size=100000", r"model.image_size: must be in \[32, 2048\]; received 100000"),
])
def test_bad_set_values_are_clear_errors_not_tracebacks(argument, message, capsys):
    assert main(["run", "product_defects", "--set", argument]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_numbers_read_the_same_in_set_and_in_flags():
    from tfx_transfer.cli import build_parser
    from tfx_transfer.cli.commands import _flag_overrides
    from tfx_transfer.config.recipe import load_recipe

    by_set = load_recipe("product_defects").with_overrides(["training.learning_rate=1e-4"])
    by_flag = _flag_overrides(build_parser().parse_args(["run", "product_defects", "--learning-rate", "1e-4"]))
    assert by_set.training.learning_rate == by_flag["training.learning_rate"] == 1e-4
