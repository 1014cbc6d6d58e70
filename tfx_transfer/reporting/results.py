"""The results page: every measured run, grouped by the recipe it was made with, as Markdown.

Recipes say why a setting is what it is; the numbers behind those choices live here, generated
from run folders (`tfx-transfer results RUN_OR_COMPARISON_DIR ... --out recipes/RESULTS.md`), so a
number always names its run, its recipe's content and its split. Choices are made on validation;
test is reported.

Runs are grouped by recipe content: a digest of the resolved recipe.yaml without the fields a
comparison varies (strategy, unfrozen blocks, seed) or that change no result (description, quick).
This module imports neither TensorFlow nor Keras.

Example:
    >>> write_results(["runs/demo/product_defects"], "recipes/RESULTS.md")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from pathlib import Path

from tfx_transfer.reporting import render
from tfx_transfer.runs.folder import ComparisonFolder, RunFolder, write_atomically

#: Fields a comparison varies between its runs: they are columns of the table, not part of the key.
VARIED = {("training", "strategy"), ("training", "unfreeze_blocks"), ("training", "unfreeze_from"), ("training", "seed")}


def recipe_key(recipe: dict) -> str:
    """Ten hex digits naming a recipe's content (without `VARIED`, `description` and `quick`)."""
    kept = {section: {name: value for name, value in values.items() if (section, name) not in VARIED}
            for section, values in recipe.items() if isinstance(values, dict) and section != "quick"}
    kept["name"] = recipe.get("name")
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:10]


def find_runs(folders) -> list[Path]:
    """Finished runs in `folders`: a run folder itself, or the `runs/*` of a comparison, or the
    comparisons one level below (a demo folder)."""
    found = []
    for folder in map(Path, folders):
        if RunFolder(folder).is_finished and RunFolder(folder).recipe_file.is_file():
            found.append(folder)
            continue
        comparisons = [folder, *(sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else [])]
        for candidate in sorted(run for comparison in comparisons for run in ComparisonFolder(comparison).runs_dir.glob("*")):
            if RunFolder(candidate).is_finished and RunFolder(candidate).recipe_file.is_file():
                found.append(candidate)
    if not found:
        raise FileNotFoundError(f"No finished run in {', '.join(map(str, folders))}: expected run folders with "
                                "report.json and recipe.yaml, comparison folders (runs/*), or a demo folder.")
    return found


def _row(run: Path) -> dict:
    report = RunFolder(run).read_report()
    primary = report["metrics"]["primary"]
    validation = report["validation"]
    label = report.get("label", report["strategy"])
    defects = None if report["strategy"] == "anomaly" else report.get("defects")
    # A supervised run limited to a few defect images (compare --defects) is its own configuration.
    if defects is not None:
        label = f"{label}, {defects} defects"
    return {
        "run": str(run), "label": label, "strategy": report["strategy"], "defects": defects,
        "base_label": report.get("label", report["strategy"]), "fraction": report.get("fraction", 1.0),
        "seed": report.get("seed", 0), "n_train": report["data"]["n_train"], "metric": primary["name"],
        "validation": validation.get(primary["name"]), "test": primary["value"], "low": primary.get("low"),
        "high": primary.get("high"), "validation_accuracy": validation.get("accuracy"),
        "test_accuracy": report["metrics"].get("accuracy"), "epochs_to_best": report.get("epochs_to_best"),
        "seconds": report.get("timing", {}).get("total_seconds"),
    }


def _order(row: dict) -> tuple:
    """By strategy label, then by number of defect images (5 before 20 before all)."""
    return (row["base_label"], float("inf") if row["defects"] is None else row["defects"])


def _anomaly_settings(recipe: dict, rows: list[dict]) -> str:
    """The anomaly section's settings, when the group has an anomaly run (they set its results)."""
    if not any(row["strategy"] == "anomaly" for row in rows):
        return ""
    return "; anomaly: " + ", ".join(f"{name} {value}" for name, value in (recipe.get("anomaly") or {}).items())


def _mean(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return render.number(values[0])
    return f"{render.number(statistics.mean(values))} ± {render.number(statistics.stdev(values))}"


def results_page(folders) -> str:
    """The Markdown page of every finished run in `folders` (see the module documentation)."""
    groups: dict[str, dict] = {}
    runs = find_runs(folders)
    # Runs are named from the folder they share (e.g. `chest_xray/runs/fine_tune_5_f1_s0` in a demo).
    common = Path(os.path.commonpath([str(run.resolve().parent) for run in runs]))
    if len(runs) > 1 and all(run.resolve().parent == common for run in runs):
        common = common.parent
    for run in runs:
        recipe = RunFolder(run).read_recipe()
        key = recipe_key(recipe)
        group = groups.setdefault(key, {"recipe": recipe, "rows": []})
        group["rows"].append(_row(run))
    lines = ["# Results", "",
             "Generated by `tfx-transfer results` from run folders; do not edit by hand. Every number names its",
             "split: settings are chosen on **validation**, and **test** is reported, never used to choose.", ""]
    for key, group in sorted(groups.items(), key=lambda item: (item[1]["recipe"].get("name", ""), item[0])):
        recipe, rows = group["recipe"], group["rows"]
        metric = rows[0]["metric"]
        model, training = recipe.get("model", {}), recipe.get("training", {})
        lines += [f"## {recipe.get('name')} (recipe content {key})", "",
                  render.markdown_text(f"{model.get('backbone')} at {model.get('image_size')} px, weights "
                                       f"{model.get('weights')}, data {recipe.get('data', {}).get('source')}, "
                                       f"sample {recipe.get('data', {}).get('sample')}, epochs {training.get('epochs')}"
                                       f"/{training.get('fine_tune_epochs')}, ensemble {training.get('ensemble_size')}"
                                       + _anomaly_settings(recipe, rows) + "."),
                  ""]
        summary = {}
        for row in rows:
            summary.setdefault((row["label"], row["fraction"]), []).append(row)
        lines.append(render.markdown_table(
            ["strategy", "fraction", "seeds", f"validation {metric}", f"test {metric}", "validation accuracy",
             "test accuracy"],
            [[label, f"{fraction:g}", len(cell), _mean(r["validation"] for r in cell), _mean(r["test"] for r in cell),
              _mean(r["validation_accuracy"] for r in cell), _mean(r["test_accuracy"] for r in cell)]
             for (label, fraction), cell in sorted(summary.items(), key=lambda item: (_order(item[1][0]), item[0][1]))]))
        lines += ["", "<details><summary>Every run</summary>", ""]
        lines.append(render.markdown_table(
            ["run", "seed", "n_train", f"validation {metric}", f"test {metric} [95% CI]", "epochs to best", "seconds"],
            [[os.path.relpath(Path(r["run"]).resolve(), common), r["seed"], r["n_train"], render.number(r["validation"]),
              f"{render.number(r['test'])} [{render.number(r['low'])}, {render.number(r['high'])}]",
              "n/a" if r["epochs_to_best"] is None else r["epochs_to_best"], render.number(r["seconds"], 0)]
             for r in sorted(rows, key=lambda r: (_order(r), r["fraction"], r["seed"]))]))
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def write_results(folders, out: str | os.PathLike) -> Path:
    """Writes `results_page(folders)` to `out` atomically; returns `out`."""
    write_atomically(out, results_page(folders))
    return Path(out)
