"""The report of one run, rebuilt at any time from the run folder without TensorFlow.

`build_run_report(run_dir)` reads `run.json`, `history.json` and `predictions.npz`, calibrates the
scores by temperature scaling fitted on validation (`tfx_transfer.calibration`), chooses the
operating point on the calibrated validation scores, applies both unchanged to test, and computes
every metric with scikit-learn (`tfx_transfer.metrics`). `write_run_report` writes `report.json`,
`report.md` and a self-contained `report.html` next to them.

report.json (one run) holds: `recipe`, `strategy`, `label`, `backbone`, `weights` (`source`,
`pretrained`), `image_size`, `data` (`class_names`, `n_train`, `n_val`, `n_test`, `skipped`, ...),
`augmentation`, `metrics` (test: `accuracy`, `balanced_accuracy`, `macro_f1`, `weighted_f1`,
`roc_auc`, `average_precision`, `brier`, `ece`, `sensitivity`, `specificity`, `primary` with its
95% interval, `operating_point`), `validation` (the same on validation), `per_class`,
`confusion_matrix`, `most_confused`, `calibration` (`temperature`, ECE and Brier score before and
after, reliability curves), `history`, `phases`, `timing`, `trainable_params`, `epochs_to_best`,
`device`, `versions`.

Example:
    >>> report = write_run_report("runs/product_defects-20261129")  # doctest: +SKIP
    >>> report["metrics"]["primary"]  # doctest: +SKIP
    {'name': 'roc_auc', 'value': 0.93, 'low': 0.90, 'high': 0.95}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tfx_transfer import render
from tfx_transfer.anomaly import describe as describe_anomaly
from tfx_transfer.calibration import calibrate
from tfx_transfer.explain import BORDER_MARGIN
from tfx_transfer.metrics import choose_operating_point, classification_metrics, multilabel_metrics, threshold_band
from tfx_transfer.run_folder import MODEL_INFO_VERSION, RunFolder, RunFolderError  # noqa: F401  (RunFolderError: raised by load_run)

GALLERY_SIZE = 12


def load_run(run_dir: str | os.PathLike) -> tuple[dict, list[dict], dict]:
    """`(facts, history, predictions)` of a run folder (see `tfx_transfer.run_folder`)."""
    folder = RunFolder(run_dir)
    folder.check_finished_inputs()
    return folder.read_facts(), folder.read_history(), folder.read_predictions()


def build_run_report(run_dir: str | os.PathLike) -> dict:
    """The report of one run as a JSON-ready dict (see the module documentation)."""
    facts, history, predictions = load_run(run_dir)
    evaluation = facts["evaluation"]
    class_names = facts["data"]["class_names"]
    if predictions["test_true"].ndim == 2:
        return _multilabel_report(facts, history, predictions)
    kind = evaluation["operating_point"]
    positive = evaluation.get("positive_index")
    if kind == "target_recall" and positive is None:
        kind = "argmax"  # more than two classes: no single positive class to target
    # Every metric and the operating point use calibrated scores: the temperature is fitted on
    # validation and applied to test (tfx_transfer.calibration); predictions.npz keeps the raw ones.
    calibration, val_score, test_score = calibrate(predictions["val_true"], predictions["val_score"],
                                                   predictions["test_true"], predictions["test_score"], positive)
    predictions = dict(predictions, val_score=val_score, test_score=test_score)
    point = choose_operating_point(predictions["val_true"], val_score, kind, positive, evaluation["target_recall"],
                                   evaluation.get("good_quantile", 0.99))
    primary = evaluation["primary_metric"]
    test = classification_metrics(predictions["test_true"], test_score, class_names, point, primary,
                                  evaluation.get("bootstrap", 1000), seed=facts.get("seed", 0))
    validation = classification_metrics(predictions["val_true"], val_score, class_names, point, primary, bootstrap=0)
    report = dict(facts)
    report.update(
        metrics={k: v for k, v in test.items() if k not in ("per_class", "confusion_matrix", "most_confused")},
        validation={k: v for k, v in validation.items() if k not in ("per_class", "confusion_matrix", "most_confused")},
        per_class=test["per_class"],
        confusion_matrix=test["confusion_matrix"],
        most_confused=test["most_confused"],
        confidently_wrong=confidently_wrong(predictions, point, class_names),
        calibration=calibration,
        # Scores in this range would be decided otherwise on a slightly different validation sample.
        review_band=None if point.kind == "argmax" else threshold_band(
            predictions["val_true"], val_score, point.positive_index, evaluation["target_recall"], seed=facts.get("seed", 0)),
        history=history,
        explanations=_explanation_summary(RunFolder(run_dir).read_explanations(), class_names),
        exports=RunFolder(run_dir).read_exports(),
        sites=_site_points(run_dir),
    )
    return report


def _explanation_summary(arrays: dict, class_names: list[str]) -> dict | None:
    """What report.json keeps of explanations.npz: the block, the method, the border shares per class."""
    if not arrays:
        return None
    summary = {"block": str(arrays["block"]), "method": str(arrays["method"]),
               "gallery": [{"index": int(i), "explained": class_names[int(k)]}
                           for i, k in zip(arrays["gallery_index"], arrays["gallery_class"])]}
    if "border_share" in arrays:
        summary["border_baseline"] = float(arrays["border_baseline"])
        summary["border_block"] = str(arrays["border_block"])
        summary["border_share"] = {}
        for k, name in enumerate(class_names):
            shares = arrays["border_share"][arrays["border_class"] == k]
            heated = shares[np.isfinite(shares)]  # a map without any heat has no share
            summary["border_share"][name] = {"images": int(len(shares)), "without_heat": int(len(shares) - len(heated)),
                                             "mean": float(heated.mean()) if len(heated) else None}
    return summary


def _border_rows(summary: dict) -> list[list[str]]:
    return [[name, row["images"], render.number(row["mean"]), render.number(summary["border_baseline"])]
            for name, row in summary["border_share"].items()]


_BORDER_HEADER = ["predicted class", "test images", "heat in the border", "if spread evenly"]


def _explanation_title(summary: dict) -> str:
    return "Where the parts look unlike good ones (anomaly maps)" if summary["method"] == "anomaly_map" else \
        "Where the model looks (Grad-CAM)"


def _explanation_text(summary: dict) -> str:
    if summary["method"] == "anomaly_map":
        text = (f"Anomaly maps from blocks {summary['block']}: red is where patches lie far from every good patch in the "
                "memory bank, on one scale for all images (so a good part stays calm). ")
    else:
        text = (f"Grad-CAM at the backbone's block {summary['block']}: red is where the evidence for the predicted "
                "class lies. ")
    if "border_share" in summary:
        text += (f"The table gives the share of that heat in the border (the outer {BORDER_MARGIN:.0%} of each side; "
                 f"measured at block {summary['border_block']}, whose finer map keeps heat at the edge where it is); "
                 "well above the even share, the model decides from the image's edges (markers, text, fixtures): "
                 "check for a shortcut.")
    return text


def heatmap_gallery_html(arrays: dict, report: dict) -> str:
    """Each explained test image with its heatmap laid over it (alpha grows with the heat)."""
    import matplotlib

    class_names = report["data"]["class_names"]
    truth = {item["index"]: item for item in report["confidently_wrong"]}
    colour = matplotlib.colormaps["jet"]
    figures = []
    for index, pixels, heat, explained in zip(arrays["gallery_index"], arrays["gallery_pixels"], arrays["gallery_heat"],
                                              arrays["gallery_class"]):
        weight = heat[..., None] / 255.0
        overlay = (1 - 0.6 * weight) * pixels + 0.6 * weight * colour(heat)[..., :3] * 255
        item = truth.get(int(index))
        caption = (f"wrong: true {item['true']}, predicted {item['predicted']} ({item['confidence']:.2f})" if item
                   else f"right: {class_names[int(explained)]}")
        figures.append(f"<figure>{render.html_image(render.image_to_data_uri(overlay.astype('uint8')), caption)}"
                       f"<figcaption>{render.html.escape(caption)}</figcaption></figure>")
    return f'<div class="gallery">{"".join(figures)}</div>'


def _site_points(run_dir) -> dict:
    folder = RunFolder(run_dir)
    if not folder.model_info_file.is_file():
        return {}
    return json.loads(folder.model_info_file.read_text()).get("site_operating_points", {})


def _exports_table(exports: list[dict]) -> tuple[list[str], list[list[str]]]:
    rows = []
    for record in exports:
        for signature, figures in record["parity"].items():
            rows.append([record["name"] + ("" if signature == "serving_default" else f" ({signature})"),
                         "passed" if record["passed"] else "FAILED (not kept)", figures["images"],
                         f"{figures['decision_agreement']:.2%}", f"{figures['max_probability_difference']:.1e}",
                         render.number(figures["keras_metric"]), render.number(figures["exported_metric"]),
                         f"{record['bytes'] / 1e6:.1f} MB"])
    return ["export", "parity gate", "test images", "decisions agree", "largest probability difference",
            "metric, Keras", "metric, exported", "size"], rows


def _sites_table(sites: dict) -> tuple[list[str], list[list[str]]]:
    rows = []
    for name, site in sorted(sites.items()):
        interval = site.get("threshold_interval")
        rows.append([name, f"{site['images']} ({site['positives']} positive)",
                     render.number(site["at_run_threshold"]["recall"]), render.number(site["threshold"])
                     + ("" if not interval else f" [{render.number(interval[0])}, {render.number(interval[1])}]"),
                     render.number(site["at_site_threshold"]["recall"]), render.number(site["at_site_threshold"]["specificity"])])
    return ["site", "sample", "recall at the run's threshold", "site threshold [95% range]", "recall there",
            "specificity there"], rows


_EXPORTS_TEXT = ("Each export was scored against the Keras model on the run's test images (tfx-transfer export); "
                 "one that fails its gate is not kept.")
_SITES_TEXT = ("Thresholds chosen again for the same target recall on labelled samples from other sites "
               "(tfx-transfer recalibrate); the run's own operating point is unchanged. tfx-transfer predict --site NAME uses them.")


def _multilabel_report(facts: dict, history: list[dict], predictions: dict) -> dict:
    """Multi-label runs: per-label ROC-AUC and average precision, 0.5 per label as the decision."""
    evaluation, class_names = facts["evaluation"], facts["data"]["class_names"]
    test = multilabel_metrics(predictions["test_true"], predictions["test_score"], class_names,
                              primary_metric=evaluation["primary_metric"], bootstrap=evaluation.get("bootstrap", 1000),
                              seed=facts.get("seed", 0))
    validation = multilabel_metrics(predictions["val_true"], predictions["val_score"], class_names,
                                    primary_metric=evaluation["primary_metric"], bootstrap=0)
    details = ("per_class", "per_label", "confusion_matrix", "most_confused")
    report = dict(facts)
    report.update(
        metrics={k: v for k, v in test.items() if k not in details},
        validation={k: v for k, v in validation.items() if k not in details},
        per_class=test["per_class"], per_label=test["per_label"], confusion_matrix=test["confusion_matrix"],
        most_confused=[], confidently_wrong=[], history=history, multi_label=True,
    )
    return report


def confidently_wrong(predictions: dict, point, class_names: list[str], count: int = GALLERY_SIZE) -> list[dict]:
    """The test images the model got wrong with the highest confidence in its wrong answer."""
    y_true, y_score = predictions["test_true"].astype(int), predictions["test_score"]
    y_pred = point.predict(y_score)
    paths = predictions.get("test_paths")
    wrong = np.flatnonzero(y_pred != y_true)
    confidence = y_score[wrong, y_pred[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:count]
    return [{
        "index": int(i), "path": str(paths[i]) if paths is not None and len(paths) > i else None,
        "true": class_names[y_true[i]], "predicted": class_names[y_pred[i]],
        "confidence": float(y_score[i, y_pred[i]]),
    } for i in order]


def _history_figure(history: list[dict], monitor_names=("loss", "accuracy")):
    plt = render.pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    # An ensemble's members (tagged `member`) each start at epoch 1: one curve per member.
    members = list(dict.fromkeys(record.get("member") for record in history))
    first = [record for record in history if record.get("member") == members[0]]
    epochs = [record["epoch"] for record in first]
    for axis, name in zip(axes, monitor_names):
        for member in members:
            records = [record for record in history if record.get("member") == member]
            for key, style in ((name, "-"), (f"val_{name}", "--")):
                values = [record.get(key) for record in records]
                if any(v is not None for v in values):
                    label = key if member is None else f"{key}, model {member}"
                    axis.plot([record["epoch"] for record in records], values, style, marker="o", markersize=3,
                              label=label)
        phases = [record["phase"] for record in first]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                axis.axvline(epochs[i] - 0.5, color="grey", linewidth=0.8)
                axis.text(epochs[i] - 0.4, axis.get_ylim()[1], phases[i], fontsize=7, va="top", color="grey")
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    return figure


def confusion_figure(matrix, class_names: list[str], title: str = "confusion matrix (test)"):
    plt = render.pyplot()
    matrix = np.asarray(matrix)
    side = min(9.0, 2.2 + 0.38 * len(class_names))
    figure, axis = plt.subplots(figsize=(side + 1, side))
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(class_names)), class_names, rotation=70, ha="right", fontsize=7)
    axis.set_yticks(range(len(class_names)), class_names, fontsize=7)
    if len(class_names) <= 20:
        for i in range(len(class_names)):
            for j in range(len(class_names)):
                if matrix[i, j]:
                    axis.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                              color="white" if shares[i, j] > 0.6 else "black")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    return figure


def gallery_html(items: list[dict]) -> str:
    """Thumbnails of confidently wrong images, read from their files (nothing if files are gone)."""
    from PIL import Image

    from tfx_transfer.images import read_image

    figures = []
    for item in items:
        if not item.get("path") or not Path(item["path"]).is_file():
            continue
        try:
            pixels = read_image(item["path"])
        except (OSError, ValueError):
            continue
        thumbnail = Image.fromarray(pixels)
        thumbnail.thumbnail((160, 160))
        caption = f"true {item['true']}, predicted {item['predicted']} (probability {item['confidence']:.2f})"
        figures.append(f"<figure>{render.html_image(render.image_to_data_uri(np.asarray(thumbnail)), caption)}"
                       f"<figcaption>{render.html.escape(caption)}</figcaption></figure>")
    if not figures:
        return render.paragraph("No wrong test image to show (or the image files are not available).", "note")
    return f'<div class="gallery">{"".join(figures)}</div>'


def _metric_rows(report: dict) -> list[list[str]]:
    names = ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "roc_auc", "average_precision",
             "brier", "ece", "sensitivity", "specificity"]
    rows = [[name, render.number(report["metrics"].get(name)), render.number(report["validation"].get(name))]
            for name in names if name in report["metrics"]]
    for name, value in report["metrics"].get("argmax", {}).items():
        rows.append([f"{name} (argmax, no threshold)", render.number(value),
                     render.number(report["validation"].get("argmax", {}).get(name))])
    return rows


def _facts_rows(report: dict) -> list[list[str]]:
    data = report["data"]
    augmentation = report.get("augmentation") or {"policy": "none"}
    trained_by_steps = not report.get("anomaly")
    return [
        ["recipe", report["recipe"]], ["strategy", report.get("label", report["strategy"])],
        ["backbone", report["backbone"]], ["weights", report["weights"]["source"]],
        ["image size", f"{report['image_size']} px" + (" (grayscale)" if report.get("grayscale") else "")],
        ["data", f"{data['source']} ({data.get('reader', '')})"],
        ["classes", ", ".join(data["class_names"])],
        ["images", f"train {data['n_train']} (of {data.get('n_train_available', data['n_train'])}), "
                   f"val {data['n_val']}, test {data['n_test']}; skipped {len(data['skipped'])}"],
        *([["image weights", f"{data['image_weights']['column']}: {data['image_weights']['train_below_1']} training "
                             f"images below 1, mean {data['image_weights']['train_mean']:.3f}"]]
          if data.get("image_weights") else []),
        *([] if trained_by_steps else [["training", "none: a memory bank of good patches (see Anomaly detection)"]]),
        *([["augmentation", ", ".join(f"{k}={v}" for k, v in augmentation.items())]] if trained_by_steps else []),
        ["scores", _scores_fact(report.get("evaluation") or {})],
        *([["ensemble", f"{report['ensemble']['size']} models trained alike from seeds "
                        f"{', '.join(map(str, report['ensemble']['member_seeds']))}; scores are their mean"]]
          if report.get("ensemble") else []),
        *([["trainable parameters", f"{report['trainable_params']:,}" + (" per model" if report.get("ensemble") else "")],
           ["epochs (to best)", f"{report.get('epochs')} ({report.get('epochs_to_best')})"]] if trained_by_steps else []),
        ["time", f"{report['timing']['total_seconds']:.1f} s"],
        ["device", report["device"]],
        ["versions", ", ".join(f"{k} {v}" for k, v in report["versions"].items())],
    ]


def _scores_fact(evaluation: dict) -> str:
    views = evaluation.get("test_time_views", 1)
    if views == 1:
        return "one pass per image"
    return (f"mean over {views} mirrored/turned views per image (test-time augmentation; to reproduce them "
            f"from model.keras, average its outputs over the same views: tfx_transfer.augment.symmetric_view)")


def headline(report: dict) -> str:
    primary = report["metrics"]["primary"]
    interval = "" if primary["low"] is None else f" (95% CI {primary['low']:.3f}-{primary['high']:.3f})"
    text = f"Test {primary['name']} {render.number(primary['value'])}{interval}"
    point = report["metrics"]["operating_point"]
    if point["kind"] in ("target_recall", "good_quantile") and point["threshold"] is not None:
        rule = (f"for recall {point['target_recall']:.2f}" if point["kind"] == "target_recall" else
                f"the {point['quantile']:.1%} quantile of good images")
        text += (f"; at the operating point chosen on validation (threshold {point['threshold']:.3f}, {rule}): sensitivity {render.number(report['metrics'].get('sensitivity'))}, "
                 f"specificity {render.number(report['metrics'].get('specificity'))}")
    return text + "."


def render_run_markdown(report: dict) -> str:
    per_class = [[name, *(render.number(row[k]) for k in ("precision", "recall", "f1-score")), int(row["support"])]
                 for name, row in report["per_class"].items()]
    lines = [f"# {report['recipe']}: {report.get('label', report['strategy'])}", "", render.markdown_text(headline(report)), "",
             "## Facts", "", render.markdown_table(["", ""], _facts_rows(report)), "",
             "## Metrics", "", render.markdown_table(["metric", "test", "validation"], _metric_rows(report)), "",
             "## Per class (test)", "", render.markdown_table(["class", "precision", "recall", "f1", "support"], per_class), ""]
    if report["most_confused"]:
        lines += ["## Most confused (test)", "", render.markdown_table(
            ["true", "predicted", "count"], [[p["true"], p["predicted"], p["count"]] for p in report["most_confused"]]), ""]
    if report.get("calibration"):
        lines += ["## Calibration (temperature scaling)", "", render.markdown_text(_calibration_text(report["calibration"])),
                  "", render.markdown_table(*_calibration_table(report["calibration"])), ""]
    if report.get("anomaly"):
        text, rows = describe_anomaly(report)
        lines += ["## Anomaly detection (good parts only)", "", render.markdown_text(text), "",
                  render.markdown_table(["", ""], rows), ""]
    if report.get("explanations"):
        summary = report["explanations"]
        lines += [f"## {_explanation_title(summary)}", "", render.markdown_text(_explanation_text(summary)), ""]
        if "border_share" in summary:
            lines += [render.markdown_table(_BORDER_HEADER, _border_rows(summary)), ""]
        lines += [f"Heatmaps over {len(summary['gallery'])} test images are in report.html.", ""]
    if report.get("exports"):
        lines += ["## Exports", "", _EXPORTS_TEXT, "", render.markdown_table(*_exports_table(report["exports"])), ""]
        lines += [f"- {record['name']}: {render.markdown_text(note)}" for record in report["exports"]
                  for note in record.get("notes", [])] + [""]
    if report.get("sites"):
        lines += ["## Site operating points", "", _SITES_TEXT, "", render.markdown_table(*_sites_table(report["sites"])), ""]
    if report["metrics"]["notes"]:
        lines += ["## Notes", ""] + [f"- {render.markdown_text(note)}" for note in report["metrics"]["notes"]] + [""]
    return "\n".join(lines)


def _calibration_text(calibration: dict) -> str:
    if calibration.get("note"):
        return calibration["note"].capitalize() + "."
    return (f"Scores are divided (as logits) by a temperature of {calibration['temperature']:.2f}, fitted on validation "
            "and applied unchanged to test; every metric above and the operating point use the calibrated scores. "
            "It leaves the most probable class as it was (and, with two classes, the ranking of images).")


def _calibration_table(calibration: dict) -> tuple[list[str], list[list[str]]]:
    test, validation = calibration["test"], calibration["validation"]
    return (["", "before", "after"], [
        ["test ECE", render.number(test["ece_before"]), render.number(test["ece_after"])],
        ["test Brier score", render.number(test["brier_before"]), render.number(test["brier_after"])],
        ["validation ECE", render.number(validation["ece_before"]), render.number(validation["ece_after"])],
        ["validation negative log-likelihood", render.number(validation["nll_before"]),
         render.number(validation["nll_after"])],
    ])


def reliability_figure(calibration: dict):
    """Accuracy against confidence on test, before and after temperature scaling (the diagonal is perfect)."""
    plt = render.pyplot()
    figure, axis = plt.subplots(figsize=(4.2, 4.0))
    axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="perfectly calibrated")
    for key, style in (("before", "o--"), ("after", "s-")):
        curve = calibration["reliability"][key]
        axis.plot([b["confidence"] for b in curve], [b["accuracy"] for b in curve], style, markersize=4,
                  label=f"{key} (ECE {calibration['test'][f'ece_{key}']:.3f})")
    axis.set_xlabel("confidence of the most probable class")
    axis.set_ylabel("accuracy")
    axis.set_title("reliability (test)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return figure


def render_run_html(report: dict, explanations: dict | None = None) -> str:
    per_class = [[name, *(render.number(row[k]) for k in ("precision", "recall", "f1-score")), int(row["support"])]
                 for name, row in report["per_class"].items()]
    sections = [
        ("", f'<div class="verdict">{render.html.escape(headline(report))}</div>'),
        ("Facts", render.html_table(["", ""], _facts_rows(report), numeric_from=2)),
        ("Metrics", render.html_table(["metric", "test", "validation"], _metric_rows(report))),
        ("Per class (test)", render.html_table(["class", "precision", "recall", "f1", "support"], per_class)),
    ]
    if report.get("multi_label"):
        sections.append(("Per label (test)", render.html_table(
            ["label", "roc_auc", "average_precision", "balanced_accuracy"],
            [[name, *(render.number(row[k]) for k in ("roc_auc", "average_precision", "balanced_accuracy"))]
             for name, row in report["per_label"].items()])))
    else:
        sections.append(("Confusion matrix", render.html_image(render.figure_to_data_uri(
            confusion_figure(report["confusion_matrix"], report["data"]["class_names"])), "confusion matrix")))
    if report["most_confused"]:
        sections.append(("Most confused pairs", render.html_table(
            ["true", "predicted", "count"], [[p["true"], p["predicted"], p["count"]] for p in report["most_confused"]], 2)))
    if report["history"]:
        sections.append(("Training curves", render.html_image(render.figure_to_data_uri(_history_figure(report["history"])),
                                                             "training curves")))
    sections.append(("Most confidently wrong test images", gallery_html(report["confidently_wrong"])))
    if report.get("calibration"):
        sections.append(("Calibration (temperature scaling)",
                         render.paragraph(_calibration_text(report["calibration"]))
                         + render.html_table(*_calibration_table(report["calibration"]))
                         + render.html_image(render.figure_to_data_uri(reliability_figure(report["calibration"])),
                                             "reliability diagram")))
    if report.get("anomaly"):
        text, rows = describe_anomaly(report)
        sections.append(("Anomaly detection (good parts only)", render.paragraph(text)
                         + render.html_table(["", ""], rows, numeric_from=2)))
    if report.get("explanations") and explanations:
        summary = report["explanations"]
        sections.append((_explanation_title(summary), render.paragraph(_explanation_text(summary))
                         + (render.html_table(_BORDER_HEADER, _border_rows(summary)) if "border_share" in summary else "")
                         + heatmap_gallery_html(explanations, report)))
    if report.get("exports"):
        sections.append(("Exports", render.paragraph(_EXPORTS_TEXT) + render.html_table(*_exports_table(report["exports"]), 2)
                         + "".join(render.paragraph(f"{record['name']}: {note}", "note") for record in report["exports"]
                                   for note in record.get("notes", []))))
    if report.get("sites"):
        sections.append(("Site operating points", render.paragraph(_SITES_TEXT) + render.html_table(*_sites_table(report["sites"]), 1)))
    if report["metrics"]["notes"]:
        sections.append(("Notes", "".join(render.paragraph(note, "note") for note in report["metrics"]["notes"])))
    return render.html_page(f"{report['recipe']}: {report.get('label', report['strategy'])}", sections,
                            report.get("description", ""))


def model_info(report: dict) -> dict:
    """What model.json holds, from a run's report (single-label runs): what `tfx_transfer.predict`
    needs beside the model to decide as the run's own evaluation did."""
    calibration = report.get("calibration") or {}
    return {
        "schema_version": MODEL_INFO_VERSION,
        "recipe": report["recipe"],
        "label": report.get("label", report["strategy"]),
        "class_names": list(report["data"]["class_names"]),
        "image_size": [report["image_size"], report["image_size"]],  # run.json holds the square's side
        "input": "raw RGB pixels in [0, 255], uint8 or float, any size (resized to image_size)",
        "temperature": calibration.get("temperature", 1.0),
        "operating_point": report["metrics"]["operating_point"],
        "review_band": report.get("review_band"),
        "test_time_views": report.get("evaluation", {}).get("test_time_views", 1),
        # A classifier's model.keras gives probabilities; an anomaly run's gives patch features,
        # scored against anomaly.npz (tfx_transfer.anomaly).
        "model": "anomaly" if report.get("anomaly") else "classifier",
    }


def write_run_report(run_dir: str | os.PathLike) -> dict:
    """Builds the run's report and writes report.md, report.html and then report.json, each atomically."""
    report = build_run_report(run_dir)
    folder = RunFolder(run_dir)
    if folder.model_file.is_file() and not report.get("multi_label"):
        info = model_info(report)
        if folder.model_info_file.is_file():  # the operating points of recalibrated sites are kept
            sites = json.loads(folder.model_info_file.read_text()).get("site_operating_points")
            if sites:
                info["site_operating_points"] = sites
        folder.write_model_info(info)
    folder.write_report(report, render_run_markdown(report), render_run_html(report, folder.read_explanations()))
    return report
