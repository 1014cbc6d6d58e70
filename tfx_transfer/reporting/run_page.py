"""One run's report pages: Markdown and self-contained HTML, with their figures and tables.

`render_run_markdown(report)` and `render_run_html(report, explanations)` take the report that
`tfx_transfer.reporting.report.build_run_report` builds; nothing here computes a metric.

Example:
    >>> html = render_run_html(build_run_report("runs/cxr"))  # doctest: +SKIP
"""

from __future__ import annotations


import numpy as np

from tfx_transfer.evaluation.explain import BORDER_MARGIN
from tfx_transfer.reporting import render


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
    figures = []
    for item in items:
        uri = render.thumbnail_uri(item.get("path"))
        if uri is None:
            continue
        caption = f"true {item['true']}, predicted {item['predicted']} (probability {item['confidence']:.2f})"
        figures.append(f"<figure>{render.html_image(uri, caption)}<figcaption>{render.html.escape(caption)}"
                       "</figcaption></figure>")
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
        ["image size", render.image_size_text(report["image_size"]) + (" (grayscale)" if report.get("grayscale") else "")],
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
            f"from model.keras, average its outputs over the same views: tfx_transfer.data.augment.symmetric_view)")


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


def describe_anomaly(report: dict) -> tuple[str, list[list[str]]]:
    """The report's "Anomaly detection" section of a run: `(text, [[fact, value], ...])`."""
    facts = report["anomaly"]
    point = report["metrics"]["operating_point"]
    if point["kind"] == "good_quantile":
        rule = (f"Validation holds no defect image, so the threshold is the {point['quantile']:.1%} quantile of the good "
                f"validation images' scores: about {1 - point['quantile']:.1%} of good parts are flagged.")
    else:
        rule = (f"The threshold is the highest whose recall of defects on validation reaches {point['target_recall']:.0%}; "
                "with no defect in validation it would be a quantile of the good images' scores.")
    text = (f"Fitted on the {facts['good_images']} good training images only"
            + (f"; the training split's {facts['defects_ignored']} defect images were not used (validation and test keep "
               "theirs)" if facts.get("defects_ignored") else "")
            + ". An image's score is the largest distance from one of its patches"
            + (f" (outside the outer {facts['border_margin']:.1%} of each side)" if facts.get("border_margin") else "")
            + " to the nearest good patch in the memory bank, mapped to [0, 1] by a logistic curve centred on the good "
              f"validation images. {rule}")
    gigabytes = facts.get("peak_memory_megabytes")
    rows = [
        ["patch features", f"blocks {', '.join(facts['blocks'])} of {facts['backbone']} ({facts['weights_source']} "
                           f"weights), {facts['grid'][0]}x{facts['grid'][1]} patches per image, {facts['feature_dims']} "
                           "dimensions"],
        ["memory bank", f"{facts['bank_size']:,} of {facts['patches']:,} good patches ({facts['coreset_fraction']:.1%}, "
                        f"greedy coreset over {facts['pool']:,}), {facts['bank_megabytes']:.1f} MB"],
        ["time", f"features {facts['extract_seconds']:.1f} s, coreset {facts['coreset_seconds']:.1f} s"],
        *([["peak memory", f"{gigabytes:,.0f} MB (the process's peak resident memory at the end of scoring)"]]
          if gigabytes else []),
    ]
    return text, rows
