"""The results page: generated from run folders, grouped by recipe content, every number with its split."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from test_report import write_fake_run
from tfx_transfer.config.recipe import load_recipe
from tfx_transfer.reporting.report import write_run_report
from tfx_transfer.reporting.results import find_runs, recipe_key, results_page, write_results


def _finished_run(folder, recipe: dict, **options):
    write_fake_run(folder, **options)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    write_run_report(folder)
    return folder


def test_runs_of_one_recipe_content_share_a_section_and_name_their_split(tmp_path):
    recipe = load_recipe("product_defects").to_dict()
    changed = load_recipe("product_defects").with_overrides(["model.image_size=224"]).to_dict()
    for seed in (0, 1):
        for label in ("feature_extraction", "fine_tune_3"):
            _finished_run(tmp_path / "compare" / "runs" / f"{label}_f1_s{seed}",
                          dict(recipe, training=dict(recipe["training"], seed=seed)), label=label, seed=seed,
                          quality=0.7 + 0.1 * seed)
    _finished_run(tmp_path / "other", changed, label="fine_tune_3")
    page = results_page([tmp_path / "compare", tmp_path / "other"])
    sections = {section.splitlines()[0]: section for section in page.split("\n## ")[1:]}
    compared = f"product_defects (recipe content {recipe_key(recipe)})"
    assert set(sections) == {compared, f"product_defects (recipe content {recipe_key(changed)})"}
    assert "| strategy | fraction | seeds | validation roc_auc | test roc_auc | validation accuracy | test accuracy |" in page
    two_seeds = [line for line in sections[compared].splitlines() if line.startswith("| feature_extraction | 1 | 2 |")]
    assert len(two_seeds) == 1 and " ± " in two_seeds[0]  # mean and spread over the seeds
    assert "chosen on **validation**" in page and "never used to choose" in page


def test_runs_limited_to_a_few_defect_images_are_rows_of_their_own(tmp_path):
    recipe = load_recipe("product_defects").to_dict()
    for defects in (5, 20, None):
        run = _finished_run(tmp_path / "compare" / "runs" / f"feature_extraction_d{defects}_f1_s0", recipe,
                            label="feature_extraction")
        report = json.loads((run / "report.json").read_text())
        (run / "report.json").write_text(json.dumps(dict(report, defects=defects)))
    rows = [line for line in results_page([tmp_path / "compare"]).splitlines() if line.startswith("| feature_extraction")]
    assert [row.split(" | ")[0] for row in rows] == ["| feature_extraction, 5 defects", "| feature_extraction, 20 defects",
                                                     "| feature_extraction"]  # by count, all last
    assert all(row.split(" | ")[2] == "1" for row in rows)  # one run each, not three seeds of one
    assert "; anomaly:" not in results_page([tmp_path / "compare"])  # no anomaly run: its settings set nothing
    _finished_run(tmp_path / "compare" / "runs" / "anomaly_f1_s0", recipe, label="anomaly")
    page = results_page([tmp_path / "compare"])
    line = next(line for line in page.splitlines() if line.startswith("mobilenet_v2 at"))
    assert "ensemble 2; anomaly: " in line and "border_margin 0.125" in line and "coreset_fraction 0.01" in line


def test_the_key_ignores_what_a_comparison_varies_and_nothing_else():
    recipe = load_recipe("chest_xray").to_dict()
    seed_and_strategy = load_recipe("chest_xray").with_overrides(["training.seed=3", "training.strategy=scratch"]).to_dict()
    epochs = load_recipe("chest_xray").with_overrides(["training.epochs=3"]).to_dict()
    assert recipe_key(seed_and_strategy) == recipe_key(recipe) != recipe_key(epochs)


def test_no_finished_run_is_explained_and_the_command_needs_no_tensorflow(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No finished run in .*expected run folders with report.json and recipe.yaml"):
        find_runs([tmp_path])
    run = _finished_run(tmp_path / "run", load_recipe("product_defects").to_dict())
    code = ("import sys; from tfx_transfer.cli import main; status = main(['results', sys.argv[1], '--out', sys.argv[2]]);"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; sys.exit(status)")
    completed = subprocess.run([sys.executable, "-c", code, str(run), str(tmp_path / "RESULTS.md")],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "RESULTS.md").read_text() == results_page([run])
    write_results([run], tmp_path / "again.md")
    assert json.loads((run / "report.json").read_text())["recipe"] == "product_defects"
