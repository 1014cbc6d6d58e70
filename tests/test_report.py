"""Run and comparison reports, built from run folders written here by hand (no training, no
TensorFlow): required keys, self-contained HTML, the verdict against its own table."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfx_transfer.reporting.comparison import summarise, verdict, write_comparison_report
from tfx_transfer.reporting.report import write_run_report
from tfx_transfer.runs.folder import RunFolderError

CLASS_NAMES = ["good", "defective"]


def write_fake_run(folder: Path, label="fine_tune_3", fraction=1.0, seed=0, quality=0.8, n=60) -> Path:
    """A finished run folder: facts, history and predictions whose quality we choose."""
    rng = np.random.default_rng(seed * 100 + int(fraction * 10) + int(quality * 1000))
    folder.mkdir(parents=True)
    images = folder / "images"
    images.mkdir()
    paths, parts = [], {}
    for split in ("val", "test"):
        y_true = np.arange(n) % 2
        positive = np.clip(np.where(y_true == 1, quality, 1 - quality) + rng.normal(0, 0.25, n), 0.01, 0.99)
        parts[f"{split}_true"], parts[f"{split}_score"] = y_true, np.stack([1 - positive, positive], 1)
    for i in range(n):
        path = images / f"cell{i:03d}.png"
        Image.fromarray(np.full((20, 20), 40 * (i % 5), np.uint8)).save(path)
        paths.append(str(path))
    np.savez(folder / "predictions.npz", test_paths=np.array(paths), **parts)
    history = [{"loss": 0.7 - 0.05 * e, "accuracy": 0.6 + 0.02 * e, "val_loss": 0.72 - 0.04 * e,
                "val_accuracy": 0.6 + 0.03 * e, "phase": "head" if e < 2 else "fine_tune", "epoch": e + 1,
                "seconds": 1.0} for e in range(4)]
    (folder / "history.json").write_text(json.dumps(history))
    facts = {
        "recipe": "product_defects", "description": "test", "strategy": label.rsplit("_", 1)[0] if label[-1].isdigit() else label,
        "label": label, "backbone": "mobilenet_v2", "weights": {"requested": "imagenet", "source": "imagenet: offline", "pretrained": True}
        if label != "scratch" else {"requested": None, "source": "random", "pretrained": False},
        "image_size": 96, "grayscale": False, "seed": seed, "fraction": fraction,
        "data": {"source": "embedded:elpv", "reader": "folder", "class_names": CLASS_NAMES, "n_train": int(200 * fraction),
                 "n_train_available": 200, "n_val": n, "n_test": n, "skipped": [["bad.png", "truncated"]],
                 "grouped": False, "leaks": 0, "train_counts": [100, 100]},
        "augmentation": {"policy": "defects", "rotate90": True},
        "evaluation": {"primary_metric": "roc_auc", "operating_point": "target_recall", "target_recall": 0.9,
                       "positive_index": 1, "bootstrap": 100},
        "phases": [], "trainable_params": 1000 if label == "feature_extraction" else 500_000, "epochs_to_best": 3, "epochs": 4,
        "timing": {"train_seconds": 10.0, "predict_seconds": 1.0, "total_seconds": 5.0 if label == "feature_extraction" else 50.0},
        "device": "CPU (2 cores)", "versions": {"tfx_transfer": "0.1.0"},
    }
    (folder / "run.json").write_text(json.dumps(facts))
    return folder


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.references = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "action", "poster") and value is not None:
                self.references.append((tag, name, value))


def check_self_contained(html_text: str) -> _Collector:
    collector = _Collector()
    collector.feed(html_text)
    collector.close()
    assert "script" not in collector.tags and "link" not in collector.tags and "iframe" not in collector.tags
    outside = [ref for ref in collector.references if not ref[2].startswith("data:image/png;base64,")]
    assert outside == [], f"external references: {outside}"
    assert "url(" not in html_text and "@import" not in html_text
    return collector


def test_run_report_has_the_documented_keys(tmp_path):
    report = write_run_report(write_fake_run(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    for dotted in ("recipe", "strategy", "backbone", "weights.source", "weights.pretrained", "data.class_names",
                   "data.n_train", "data.n_val", "data.n_test", "data.skipped", "metrics.accuracy",
                   "metrics.balanced_accuracy", "metrics.macro_f1", "metrics.roc_auc", "per_class", "confusion_matrix",
                   "timing", "trainable_params", "versions", "metrics.primary.low", "metrics.sensitivity"):
        value = saved
        for part in dotted.split("."):
            assert part in value, dotted
            value = value[part]
    assert saved["metrics"]["operating_point"]["kind"] == "target_recall"
    assert saved["metrics"]["primary"]["low"] <= saved["metrics"]["roc_auc"] <= saved["metrics"]["primary"]["high"]
    assert report["confidently_wrong"] and all(item["true"] != item["predicted"] for item in report["confidently_wrong"])
    confidences = [item["confidence"] for item in report["confidently_wrong"]]
    assert confidences == sorted(confidences, reverse=True)
    assert "Test roc_auc" in (tmp_path / "run" / "report.md").read_text()


def test_run_report_html_is_self_contained_with_plots_and_gallery(tmp_path):
    write_run_report(write_fake_run(tmp_path / "run"))
    collector = check_self_contained((tmp_path / "run" / "report.html").read_text())
    images = [ref for ref in collector.references if ref[0] == "img"]
    assert len(images) >= 3  # confusion matrix, training curves, gallery thumbnails


def test_training_curves_draw_one_line_per_ensemble_member():
    from tfx_transfer.reporting.run_page import _history_figure

    history = [{"loss": 1.0 / (e + 1), "val_loss": 1.1 / (e + 1), "accuracy": 0.5, "val_accuracy": 0.5,
                "phase": "head" if e < 2 else "fine_tune", "epoch": e + 1, "member": member}
               for member in (1, 2) for e in range(3 + member)]  # member 2 trained one epoch longer
    loss_axis = _history_figure(history).axes[0]
    # Phase boundaries are unlabelled vertical lines ("_child..."): left out.
    lines = {line.get_label(): list(line.get_xdata()) for line in loss_axis.get_lines()
             if not line.get_label().startswith("_")}
    assert lines == {"loss, model 1": [1, 2, 3, 4], "val_loss, model 1": [1, 2, 3, 4],
                     "loss, model 2": [1, 2, 3, 4, 5], "val_loss, model 2": [1, 2, 3, 4, 5]}
    single = _history_figure([{k: v for k, v in record.items() if k != "member"} for record in history[:4]])
    assert [line.get_label() for line in single.axes[0].get_lines() if not line.get_label().startswith("_")] == \
        ["loss", "val_loss"]


def test_a_folder_that_is_not_a_run_is_explained(tmp_path):
    with pytest.raises(RunFolderError, match=r"not a finished tfx-transfer run: run.json, predictions.npz missing"):
        write_run_report(tmp_path)


def test_markdown_report_prints_class_names_as_written(tmp_path):
    import tfx_transfer.reporting.run_page as report_module

    run = write_fake_run(tmp_path / "run")
    facts = json.loads((run / "run.json").read_text())
    facts["data"]["class_names"] = ["*good*", "cracked|chipped"]
    (run / "run.json").write_text(json.dumps(facts))
    write_run_report(run)
    markdown = (run / "report.md").read_text()
    assert "| \\*good\\* |" in markdown and "| cracked\\|chipped |" in markdown
    per_class = markdown.split("## Per class (test)")[1].split("##")[0]
    rows = [line for line in per_class.splitlines() if line.startswith("| ") and "chipped" in line]
    # The per-class row keeps its five cells: an unescaped | would have made six.
    assert len(rows) == 1 and len(re.split(r"(?<!\\)\|", rows[0])) == 7
    assert report_module.render.markdown_text("a_b _c_ [x](y)") == "a_b \\_c\\_ [x\\](y)"


def test_the_report_calibrates_on_validation_and_keeps_every_decision(tmp_path):
    from tfx_transfer.evaluation.calibration import apply_temperature
    from tfx_transfer.evaluation.metrics import choose_operating_point

    run = write_fake_run(tmp_path / "run", quality=0.75, n=200)
    with np.load(run / "predictions.npz") as saved:
        raw = {key: saved[key] for key in saved.files}
    # The fake run's scores, made over-confident as fine-tuned networks' often are.
    sharpened = dict(raw, val_score=apply_temperature(raw["val_score"], 0.4), test_score=apply_temperature(raw["test_score"], 0.4))
    np.savez(run / "predictions.npz", **sharpened)
    report = write_run_report(run)
    calibration = report["calibration"]
    assert calibration["temperature"] > 1.2  # softened
    assert calibration["test"]["ece_after"] < calibration["test"]["ece_before"]
    assert report["metrics"]["ece"] == pytest.approx(calibration["test"]["ece_after"])
    # The threshold is chosen on calibrated validation scores; as calibration keeps the ranking,
    # it makes the same decisions as the one chosen on the raw scores.
    raw_point = choose_operating_point(sharpened["val_true"], sharpened["val_score"], "target_recall", 1, 0.9)
    raw_decisions = raw_point.predict(sharpened["test_score"])
    assert report["metrics"]["sensitivity"] == pytest.approx((raw_decisions[sharpened["test_true"] == 1] == 1).mean())
    assert report["metrics"]["specificity"] == pytest.approx((raw_decisions[sharpened["test_true"] == 0] == 0).mean())
    assert report["metrics"]["roc_auc"] == pytest.approx(_roc_auc_of_raw_scores(sharpened))
    assert "## Calibration (temperature scaling)" in (run / "report.md").read_text()
    assert 'alt="reliability diagram"' in (run / "report.html").read_text()


def _roc_auc_of_raw_scores(predictions):
    import sklearn.metrics as skm

    return skm.roc_auc_score(predictions["test_true"], predictions["test_score"][:, 1])


def _cell(label, fraction, mean, low, high, seconds=10.0, n_train=100):
    return {"label": label, "fraction": fraction, "mean": mean, "low": low, "high": high, "seconds": seconds,
            "n_train": n_train, "values": [mean], "seeds": 1, "trainable_params": 1, "epochs_to_best": 1.0}


def test_verdict_clear_lead_overlap_and_a_change_with_data_size():
    summary = [
        _cell("feature_extraction", 0.1, 0.80, 0.76, 0.84, seconds=5, n_train=20),
        _cell("fine_tune_3", 0.1, 0.78, 0.72, 0.83, seconds=60, n_train=20),
        _cell("scratch", 0.1, 0.55, 0.50, 0.60, seconds=90, n_train=20),
        _cell("feature_extraction", 1.0, 0.84, 0.81, 0.86, seconds=8, n_train=200),
        _cell("fine_tune_3", 1.0, 0.92, 0.90, 0.94, seconds=300, n_train=200),
        _cell("scratch", 1.0, 0.60, 0.55, 0.66, seconds=400, n_train=200),
    ]
    result = verdict(summary, "roc_auc")
    small, full = result["per_fraction"]
    assert (small["winner"], small["runner_up"], small["overlap"], small["clear"]) == ("feature_extraction", "fine_tune_3", True, False)
    assert small["sensible_choice"] == "feature_extraction"
    assert (full["winner"], full["runner_up"], full["clear"]) == ("fine_tune_3", "feature_extraction", True)
    assert full["margin"] == pytest.approx(0.08)
    assert "intervals overlap" in small["text"] and "lead is clear" in full["text"]
    assert "depends on the amount of data: feature_extraction with the least, fine_tune_3 with the most" in result["text"]


def test_verdict_names_the_cheapest_tied_strategy():
    summary = [_cell("fine_tune_3", 1.0, 0.90, 0.86, 0.94, seconds=300), _cell("feature_extraction", 1.0, 0.89, 0.85, 0.93, seconds=8)]
    entry = verdict(summary, "roc_auc")["per_fraction"][0]
    assert entry["winner"] == "fine_tune_3" and entry["sensible_choice"] == "feature_extraction"
    assert "feature_extraction is the cheapest of the tied strategies (8 s vs 300 s)" in entry["text"]


def test_verdict_calls_equal_means_a_tie():
    summary = [_cell("fine_tune_3", 1.0, 0.636, 0.55, 0.72, seconds=30), _cell("feature_extraction", 1.0, 0.636, 0.55, 0.72, seconds=10)]
    entry = verdict(summary, "roc_auc")["per_fraction"][0]
    assert entry["winner"] == "feature_extraction"  # equal scores: the cheaper one first
    assert "feature_extraction and fine_tune_3 tie: roc_auc 0.636" in entry["text"] and "wins" not in entry["text"]


def test_comparison_report_verdict_matches_its_own_table(tmp_path):
    runs = []
    for seed in (0, 1):
        for fraction, qualities in ((0.1, {"feature_extraction": 0.75, "fine_tune_3": 0.62}),
                                    (1.0, {"feature_extraction": 0.72, "fine_tune_3": 0.9})):
            for label, quality in qualities.items():
                runs.append(write_fake_run(tmp_path / "runs" / f"{label}_f{fraction:g}_s{seed}", label, fraction, seed, quality))
    report = write_comparison_report(tmp_path, runs)
    assert len(report["rows"]) == 8 and {row["seed"] for row in report["rows"]} == {0, 1}
    for entry in report["verdict"]["per_fraction"]:
        cells = [c for c in report["summary"] if c["fraction"] == entry["fraction"]]
        assert entry["winner"] == max(cells, key=lambda c: c["mean"])["label"]
        best = max(cells, key=lambda c: c["mean"])
        assert all(best["low"] <= value <= best["high"] for value in best["values"])
    assert [e["winner"] for e in report["verdict"]["per_fraction"]] == ["feature_extraction", "fine_tune_3"]
    assert report["best"]["label"] == "fine_tune_3" and report["best"]["fraction"] == 1.0
    html_text = (tmp_path / "report.html").read_text()
    collector = check_self_contained(html_text)
    assert sum(1 for ref in collector.references if ref[0] == "img") >= 4  # curves, validation, confusion, gallery
    markdown = (tmp_path / "report.md").read_text()
    assert report["verdict"]["text"] in markdown
    assert summarise(report["rows"]) == report["summary"]
    assert "| weights | imagenet: offline |" in markdown  # one source: said once


def test_a_defects_comparison_orders_rows_by_count_and_names_each_configuration(tmp_path):
    runs = []
    for defects, quality in ((20, 0.7), (5, 0.6), (None, 0.9), (0, 0.8)):
        label = "anomaly" if defects == 0 else "feature_extraction"
        run = write_fake_run(tmp_path / "runs" / f"{label}_d{defects}", label, quality=quality)
        facts = json.loads((run / "run.json").read_text())
        defective = 100 if defects is None else defects
        facts["data"].update(n_train=100 + defective, train_counts=[100, defective])
        facts.update(defects=defects)
        if label == "anomaly":  # trains no network: no augmentation, no epochs
            facts.update(augmentation=None, epochs_to_best=None, phases=[], trainable_params=0)
        (run / "run.json").write_text(json.dumps(facts))
        runs.append(run)
    report = write_comparison_report(tmp_path, runs)
    markdown = (tmp_path / "report.md").read_text()
    table = markdown.split("mean [95% interval])\n\n")[1].split("\n\n")[0].splitlines()
    assert table[0] == "| strategy | 1 |"  # the training images differ by row: each cell says its own
    assert [line.split(" | ")[0] for line in table[2:]] == [
        "| anomaly", "| feature_extraction, 5 defects", "| feature_extraction, 20 defects", "| feature_extraction, all defects"]
    assert table[3].endswith("(n=105) |") and table[5].endswith("(n=200) |")
    assert report["best_label"] == "feature_extraction, all defects"
    assert "## Best configuration: feature_extraction, all defects at fraction 1" in markdown
    assert "| anomaly | 50.0 | 0 | n/a |" in markdown  # no epochs to best, not 0
    assert "| augmentation | policy=defects, rotate90=True |" in markdown  # the supervised runs' augmentation


def test_comparison_facts_name_the_weights_of_each_strategy(tmp_path):
    # A scratch run listed first must not make the whole comparison read "weights: random".
    runs = [write_fake_run(tmp_path / "runs" / label, label, quality=quality)
            for label, quality in (("scratch", 0.6), ("feature_extraction", 0.7), ("fine_tune_3", 0.8))]
    report = write_comparison_report(tmp_path, runs)
    assert report["facts"]["weights"] == {"random": ["scratch"], "imagenet: offline": ["feature_extraction", "fine_tune_3"]}
    assert [row["weights"] for row in report["rows"]] == ["random", "imagenet: offline", "imagenet: offline"]
    text = "| weights | imagenet: offline (feature_extraction, fine_tune_3); random (scratch) |"
    assert text in (tmp_path / "report.md").read_text()


def test_report_command_rebuilds_without_importing_tensorflow(tmp_path):
    for seed in (0, 1):
        write_fake_run(tmp_path / "compare" / "runs" / f"feature_extraction_f1_s{seed}", "feature_extraction", seed=seed)
    code = (
        "import sys\n"
        "from tfx_transfer.cli import main\n"
        f"assert main(['report', {str(tmp_path / 'compare')!r}]) == 0\n"
        "loaded = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "Report: " in completed.stdout
    assert (tmp_path / "compare" / "report.html").is_file()
    assert (tmp_path / "compare" / "runs" / "feature_extraction_f1_s0" / "report.html").is_file()


def _chromium() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine")
def test_report_renders_in_headless_chromium(tmp_path):
    write_run_report(write_fake_run(tmp_path / "run"))
    screenshot = tmp_path / "page.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={screenshot}",
                    "--window-size=1100,2000", (tmp_path / "run" / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(screenshot).convert("L"))
    assert pixels.std() > 10  # something was drawn, not a blank page


def test_report_command_on_one_run_and_on_several(tmp_path, capsys):
    from tfx_transfer.cli import main

    first = write_fake_run(tmp_path / "a", "feature_extraction", quality=0.7)
    second = write_fake_run(tmp_path / "b", "fine_tune_3", quality=0.9)
    assert main(["report", str(first)]) == 0
    assert capsys.readouterr().out.startswith(f"{first}: Test roc_auc ")
    assert main(["report", str(first), str(second), "--out", str(tmp_path / "both")]) == 0
    assert "fine_tune_3 wins" in capsys.readouterr().out
    assert json.loads((tmp_path / "both" / "report.json").read_text())["verdict"]["per_fraction"][0]["winner"] == "fine_tune_3"
    assert main(["report", str(tmp_path / "empty_folder")]) == 2
    assert "holds no run" in capsys.readouterr().err
