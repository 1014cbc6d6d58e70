"""Recipes: every file in recipes/ loads, validates, documents itself and runs end to end on tiny
data with a tiny backbone; errors name the file, the key and the fix."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tiny_data import write_gtsrb, write_kermany
from tfx_transfer.config.recipe import SECTIONS, Recipe, RecipeError, list_recipes, load_recipe
from tfx_transfer.experiments.runner import run

RECIPES = list_recipes()
#: A tiny backbone and one epoch per phase: what a test can afford; the recipe's own logic stays.
TINY = ["model.backbone=tiny_test", "model.weights=none", "model.image_size=32", "training.epochs=1",
        "training.fine_tune_epochs=1", "training.unfreeze_blocks=2", "training.batch_size=8", "evaluation.bootstrap=20"]


def test_the_three_domain_recipes_exist():
    assert {path.stem for path in RECIPES} >= {"chest_xray", "traffic_signs", "product_defects"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_round_trips(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    again = Recipe.from_dict(recipe.to_dict(), str(path))
    assert dataclasses.replace(again, path=recipe.path) == recipe
    assert recipe.quick_version().training.epochs <= recipe.training.epochs


def _commented(lines: list[str], index: int, value) -> bool:
    if "#" in lines[index] or lines[index - 1].strip().startswith("#"):
        return True
    if isinstance(value, dict):  # a mapping: a comment inside its block will do
        indent = len(lines[index]) - len(lines[index].lstrip())
        for line in lines[index + 1 :]:
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            if "#" in line:
                return True
    return False


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_non_default_line_says_why(path):
    lines = path.read_text().splitlines()
    mapping = yaml.safe_load(path.read_text())
    for section, section_class in SECTIONS.items():
        defaults = section_class()
        for key, value in (mapping.get(section) or {}).items():
            if value == getattr(defaults, key):
                continue
            index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:"))
            assert _commented(lines, index, value), f"{path.name}: {section}.{key} differs from the default without a comment"


def _two_class_folder(root: Path) -> Path:
    """A new inspection data set: other class names than any recipe, mixed image sizes."""
    rng = np.random.default_rng(0)
    for name, level, size in (("ok", 70, 40), ("scratched", 170, 56)):
        (root / name).mkdir(parents=True)
        for i in range(10):
            side = size + (i % 3) * 5
            pixels = np.clip(level + rng.normal(0, 20, (side, side + 4, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"part{i:02d}.png")
    return root


# One recipe in the fast tier; every recipe in the full suite.
@pytest.mark.parametrize("path", [p if p.stem == "product_defects" else pytest.param(p, marks=pytest.mark.slow) for p in RECIPES],
                         ids=lambda p: p.stem)
def test_recipe_runs_end_to_end_on_a_new_folder_with_data_alone(path, tmp_path, isolated_cache):
    data = _two_class_folder(tmp_path / "line7")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flip_map and positive_class name classes this folder lacks
        result = run(path, data=data, overrides=TINY, out=tmp_path / "run", verbose=0)
    run_dir = result.run_dir
    for name in ("recipe.yaml", "run.json", "history.json", "predictions.npz", "model.keras",
                 "report.json", "report.md", "report.html"):
        assert (run_dir / name).is_file(), name
    resolved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert resolved["model"]["image_size"] == 32 and resolved["name"] == path.stem
    assert set(resolved) == {"name", "description", "quick", *SECTIONS}
    report = json.loads((run_dir / "report.json").read_text())
    assert report["data"]["class_names"] == ["ok", "scratched"]
    assert report["pooling"] == resolved["model"]["pooling"]
    assert report["data"]["n_test"] == len(np.load(run_dir / "predictions.npz")["test_true"])
    assert 0.0 <= report["metrics"]["accuracy"] <= 1.0


@pytest.mark.slow
def test_an_ensemble_run_writes_one_model_that_averages_its_members(tmp_path, isolated_cache):
    import keras

    from tfx_transfer.data.pipeline import make_dataset
    from tfx_transfer.experiments.prepare import prepare_data

    data = _two_class_folder(tmp_path / "line7")
    overrides = TINY + ["training.ensemble_size=2", "training.seed=1", "training.strategy=fine_tune",
                        "evaluation.test_time_views=1", "data.positive_class=scratched", "data.weight_column=null"]
    result = run("product_defects", data=data, overrides=overrides, out=tmp_path / "run", verbose=0)
    run_dir, report = result.run_dir, result.report
    assert report["ensemble"] == {"size": 2, "member_seeds": [2, 3]}
    history = json.loads((run_dir / "history.json").read_text())
    assert [record["member"] for record in history] == [1] * 2 + [2] * 2  # head and fine-tune epoch each
    assert report["epochs"] == 2 and [phase["member"] for phase in report["phases"]] == [1, 1, 2, 2]
    assert "2 models trained alike from seeds 2, 3; scores are their mean" in (run_dir / "report.html").read_text()
    model = keras.models.load_model(run_dir / "model.keras")
    assert [layer.name for layer in model.layers] == ["image", "member_1", "member_2", "mean_probability"]
    prepared = prepare_data(load_recipe("product_defects").with_overrides(overrides), data)
    images = np.concatenate([batch[0] for batch in make_dataset(prepared.table, prepared.splits.test, (32, 32), 64)])
    np.testing.assert_allclose(model.predict(images, verbose=0), np.load(run_dir / "predictions.npz")["test_score"],
                               atol=1e-5)


@pytest.mark.slow
def test_chest_xray_reads_a_kermany_folder_with_patient_groups(tmp_path, isolated_cache):
    data = write_kermany(tmp_path / "chest_xray")
    result = run("chest_xray", data=data, overrides=TINY, out=tmp_path / "run", verbose=0)
    report = result.report
    assert report["data"]["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert (report["data"]["n_train"], report["data"]["n_val"], report["data"]["n_test"]) == (12, 4, 6)
    assert report["data"]["grouped"] and report["grayscale"]
    assert report["metrics"]["positive_class"] == "PNEUMONIA"
    assert report["metrics"]["operating_point"]["kind"] == "target_recall"
    import keras

    model = keras.saving.load_model(result.run_dir / "model.keras")  # the Grayscale layer round-trips
    colour = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    grey = colour @ np.array([0.299, 0.587, 0.114], "float32")
    np.testing.assert_allclose(model.predict(colour, verbose=0), model.predict(np.repeat(grey[..., None], 3, -1), verbose=0),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_traffic_signs_reads_a_gtsrb_folder_and_maps_mirror_pairs(tmp_path, isolated_cache):
    from tfx_transfer.config.recipe import load_recipe
    from tfx_transfer.experiments.prepare import train_config

    data = write_gtsrb(tmp_path / "GTSRB", tracks=3)
    result = run("traffic_signs", data=data, overrides=TINY, out=tmp_path / "run", verbose=0)
    names = result.report["data"]["class_names"]
    assert names == ["stop", "keep_right", "keep_left"]
    assert result.report["data"]["grouped"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = train_config(load_recipe("traffic_signs"), names).augment
    # keep_right <-> keep_left swap on a flip; stop is absent from the map, so never flipped.
    assert policy.horizontal_flip and policy.flip_map == {1: 2, 2: 1}


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "my_recipe.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_key_and_closest_match(tmp_path):
    path = _write(tmp_path, "name: x\ntraining:\n  epoch: 3\n")
    with pytest.raises(RecipeError, match=r"my_recipe.yaml: training.epoch: unknown key. Did you mean 'epochs'\?"):
        load_recipe(path)


def test_unknown_section_suggests_the_closest(tmp_path):
    path = _write(tmp_path, "name: x\ntrainig:\n  epochs: 3\n")
    with pytest.raises(RecipeError, match=r"trainig: unknown key. Did you mean 'training'\?"):
        load_recipe(path)


@pytest.mark.parametrize("text, expected", [
    ("training:\n  strategy: finetune\n", r"training.strategy: must be one of scratch, feature_extraction, "
                                           r"fine_tune, gradual, anomaly; received 'finetune'. Did you mean 'fine_tune'\?"),
    ("training:\n  epochs: three\n", r"training.epochs: expected an integer, received 'three'"),
    ("model:\n  backbone: mobilenetv2\n", r"model.backbone: must be one of .*Did you mean 'mobilenet_v2'\?"),
    ("model:\n  pooling: avgmax\n", r"model.pooling: must be one of avg, max, avg_max; received 'avgmax'. Did you mean 'avg_max'\?"),
    ("data:\n  validation_split: 1.5\n", r"data.validation_split: must be in \[0.0, 1.0\); received 1.5"),
    ("evaluation:\n  primary_metric: auc\n", r"evaluation.primary_metric: must be one of roc_auc, .*Did you mean 'roc_auc'\?"),
    ("augmentation:\n  policy: xray\n  overrides:\n    horizontal_flip: true\n", r"augmentation: .*unsafe for 'xray'"),
    ("evaluation:\n  operating_point: target_recall\n", r"needs data.positive_class"),
    ("quick:\n  training.epoch: 1\n", r"training.epoch: unknown key. Did you mean 'epochs'\?"),
    ("training:\n  ensemble_size: 0\n", r"training.ensemble_size: must be at least 1; received 0"),
    ("evaluation:\n  test_time_views: 3\n", r"evaluation.test_time_views: must be one of 1, 2, 4, 8; received 3"),
    ("augmentation:\n  policy: xray\nevaluation:\n  test_time_views: 4\n",
     r"evaluation.test_time_views: 4 test-time views need .*policy 'xray' lacks horizontal_flip, vertical_flip"),
])
def test_bad_values_are_named_with_the_fix(tmp_path, text, expected):
    with pytest.raises(RecipeError, match=expected):
        load_recipe(_write(tmp_path, "name: x\n" + text))


def test_invalid_yaml_and_missing_file_are_clear(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "name: x\ntraining: [unclosed\n"))
    with pytest.raises(FileNotFoundError, match=r"Recipe file not found: .*Built-in recipes .*chest_xray"):
        load_recipe(tmp_path / "nope.yaml")


def test_set_overrides_by_dotted_or_unique_name_and_rejects_typos():
    recipe = load_recipe("product_defects")
    changed = recipe.with_overrides(["training.epochs=2", "image_size=64", "augmentation.overrides={rotation: 5}"])
    assert (changed.training.epochs, changed.model.image_size, changed.augmentation.overrides) == (2, 64, {"rotation": 5})
    assert recipe.training.epochs == 8  # frozen: the original is unchanged
    with pytest.raises(RecipeError, match=r"training.epoch: unknown key. Did you mean 'epochs'\?"):
        recipe.with_overrides(["training.epoch=2"])
    with pytest.raises(RecipeError, match=r"expected --set section.field=value"):
        recipe.with_overrides(["training.epochs"])
    with pytest.raises(RecipeError, match=r"training.strategy: must be one of"):
        recipe.with_overrides(["strategy=transfer"])


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    from tfx_transfer.cli import main

    assert main(["run", "product_defects", "--data", str(tmp_path / "no_such_folder"), "--out", str(tmp_path / "run")]) == 2
    assert "error: Data not found: " in capsys.readouterr().err
    assert not (tmp_path / "run" / "model.keras").exists()


@pytest.mark.slow
def test_chest_xray_runs_multi_label_on_an_nih_csv(tmp_path, isolated_cache):
    from tiny_data import write_nih

    csv_file = write_nih(tmp_path / "nih") / "Data_Entry_2017.csv"
    overrides = TINY + ["data.options={finding: null}", "data.validation_split=0.25", "data.test_split=0.25",
                        "training.class_weight=null"]  # balanced weights are single-label only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny NIH files repeat pixel values: leak warnings
        result = run("chest_xray", data=csv_file, overrides=overrides, out=tmp_path / "run", verbose=0)
    report = result.report
    assert report["multi_label"] and report["data"]["class_names"] == ["Effusion", "Pneumonia"]
    assert set(report["per_label"]) == {"Effusion", "Pneumonia"}
    assert np.asarray(report["confusion_matrix"]).shape == (2, 2, 2)
    assert report["metrics"]["operating_point"]["kind"] == "threshold_per_label"
    with pytest.raises(RecipeError, match=r"data.options: .*unexpected keyword argument 'findings'"):
        run("chest_xray", data=csv_file, overrides=TINY + ["data.options={findings: null}"], out=tmp_path / "bad", verbose=0)


def test_data_sample_keeps_a_stratified_share_before_splitting(tmp_path):
    from tfx_transfer.experiments.prepare import prepare_data

    data = _two_class_folder(tmp_path / "line7")
    recipe = load_recipe("product_defects").with_overrides(["data.sample=0.5", "data.positive_class=scratched"])
    prepared = prepare_data(recipe, data)
    assert len(prepared.table) == 10 and np.bincount(prepared.table.labels).tolist() == [5, 5]
    assert sum(prepared.splits.sizes().values()) == 10 and prepared.positive_index == 1
    with pytest.raises(RecipeError, match=r"data.sample: must be in \(0.0, 1.0\]; received 0.0"):
        recipe.with_overrides(["data.sample=0"])


def test_weight_column_reads_the_folders_labels_csv_or_warns_without_it(tmp_path):
    from tfx_transfer.experiments.prepare import prepare_data

    data = _two_class_folder(tmp_path / "line7")
    recipe = load_recipe("product_defects").with_overrides(["data.weight_column=sure", "data.positive_class=scratched"])
    with pytest.warns(UserWarning, match=r"data.weight_column is 'sure' but '.*line7/labels.csv' does not exist: training unweighted"):
        assert prepare_data(recipe, data).table.weights is None
    files = sorted(p.relative_to(data).as_posix() for p in data.glob("*/*.png"))
    sure = {name: 1.0 if name.startswith("ok/") else 0.25 for name in files}
    (data / "labels.csv").write_text("path,sure\n" + "".join(f"{name},{sure[name]}\n" for name in files))
    table = prepare_data(recipe, data).table
    assert [table.weights[i] for i in range(len(table))] == [
        sure[Path(p).relative_to(data).as_posix()] for p in table.paths]
    # A CSV source carries the weights in its own rows, under its own path column.
    (data / "parts.csv").write_text("file,grade,sure\n" + "".join(
        f"{name},{name.split('/')[0]},{sure[name]}\n" for name in files))
    csv_recipe = recipe.with_overrides({"data.options": {"path_column": "file", "label_column": "grade"}})
    csv_table = prepare_data(csv_recipe, data / "parts.csv").table
    assert sorted(csv_table.weights.tolist()) == sorted(sure.values())
    run_dir = run(recipe, data=data, overrides=TINY, out=tmp_path / "run", verbose=0).run_dir
    facts = json.loads((run_dir / "report.json").read_text())["data"]
    below = facts["train_counts"][table.class_names.index("scratched")]  # every scratched part weighs 0.25
    assert facts["image_weights"]["column"] == "sure" and facts["image_weights"]["train_below_1"] == below > 0
    assert f"| image weights | sure: {below} training images below 1" in (run_dir / "report.md").read_text()


def test_recipe_errors_survive_pickling_to_and_from_a_worker_process():
    import pickle

    error = RecipeError("line7.yaml", "training.epoch", "unknown key. Did you mean 'epochs'?")
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again), again.key) == (RecipeError, str(error), "training.epoch")


@pytest.mark.slow
def test_a_non_editable_install_ships_the_built_in_recipes(tmp_path):
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).parents[1]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "-w", str(tmp_path / "wheel"), str(root)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "wheel").glob("tfx_transfer-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"tfx_transfer/recipes/{path.name}" for path in RECIPES} <= set(names)
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                                str(tmp_path / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    code = ("import tfx_transfer, sys; from tfx_transfer.config.recipe import list_recipes, load_recipe;"
            "assert tfx_transfer.__file__.startswith(sys.argv[1]), tfx_transfer.__file__;"
            "print(sorted(load_recipe(p.stem).name for p in list_recipes()))")
    listed = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], capture_output=True, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(tmp_path / "site")}, cwd=tmp_path, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert listed.stdout.strip() == str(sorted(path.stem for path in RECIPES))
