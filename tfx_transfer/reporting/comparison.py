"""The comparison report: strategies x training-set sizes, with intervals and a verdict.

Built from finished run folders only (no TensorFlow), so `tfx-transfer report` can rebuild it.

report.json (comparison) holds: `kind: "comparison"`, `recipe`, `primary_metric`, `rows` (one per
run: `label`, `strategy`, `fraction`, `seed`, `n_train`, the metric names of a run report under
`metrics`, `primary`, `timing`, `trainable_params`, `epochs_to_best`, `weights` (the weights'
source), `run_dir`), `summary` (one per strategy and fraction: `mean`, `low`, `high`, `values`,
`n_train`, `seconds`), `verdict` (`per_fraction`, `text`, and with `compare --defects` `defects`:
how many defect images supervised training needs to beat the anomaly strategy), `best` (the best configuration's run
report, without history), `best_label` (its row label, e.g. "fine_tune_12, all defects") and `facts` (backbone, weights (each source with the strategies that
started from it), image size, data counts, skipped files, augmentation, device, versions, total
time).

The interval of a strategy at one size is the 95% bootstrap interval over test images (averaged
over seeds), widened to cover every seed's value: it shows both test-set and training noise.

Example:
    >>> report = write_comparison_report("runs/defects-compare", run_dirs)  # doctest: +SKIP
    >>> print(report["verdict"]["text"])  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from tfx_transfer.reporting import render
from tfx_transfer.evaluation.explain import BORDER_MARGIN
from tfx_transfer.reporting.report import write_run_report
from tfx_transfer.reporting.run_page import confusion_figure, gallery_html, heatmap_gallery_html
from tfx_transfer.runs.folder import ComparisonFolder, RunFolder, write_report_files

METRIC_NAMES = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "roc_auc", "average_precision",
                "brier", "ece", "sensitivity", "specificity")


def row_of(report: dict, run_dir) -> dict:
    """One comparison row from a run report."""
    return {
        "label": report.get("label", report["strategy"]), "strategy": report["strategy"],
        "fraction": report.get("fraction", 1.0), "seed": report.get("seed", 0),
        "n_train": report["data"]["n_train"],
        "metrics": {name: report["metrics"].get(name) for name in METRIC_NAMES},
        "primary": report["metrics"]["primary"], "timing": report["timing"],
        "trainable_params": report["trainable_params"], "epochs_to_best": report.get("epochs_to_best"),
        "epochs": report.get("epochs"), "weights": report.get("weights", {}).get("source"), "run_dir": str(run_dir),
        # Defect images the run trained on (None: all of the training split's); anomaly runs use none.
        "defects": report.get("defects"), "n_defects": _defect_count(report),
    }


def _defect_count(report: dict) -> int | None:
    positive = (report.get("evaluation") or {}).get("positive_index")
    counts = report["data"].get("train_counts")
    return None if positive is None or counts is None or report.get("multi_label") else int(counts[positive])


def defect_mode(rows: list[dict]) -> bool:
    """Whether the runs compare numbers of defect images (`compare --defects`) rather than fractions."""
    return any(row["defects"] is not None for row in rows if row["strategy"] != "anomaly")


def _defects_label(row: dict) -> str:
    if row["strategy"] == "anomaly":
        return row["label"]
    return f"{row['label']}, {'all' if row['defects'] is None else row['defects']} defects"


def _count_key(count) -> float:
    return float("inf") if count is None else float(count)


def _order(item: dict) -> tuple:
    """Rows by strategy, then by number of defect images (5 before 20 before all): anomaly first."""
    base = item["label"].split(", ")[0]
    return (base, -1.0 if item["strategy"] == "anomaly" else _count_key(item.get("defects")), item["label"])


def defects_verdict(summary: list[dict], metric: str) -> dict:
    """How many defect images supervised training needs to beat the anomaly strategy (trained on none).

    Per count of defect images: the best supervised strategy against the anomaly strategy; "clearly"
    when their intervals do not overlap.
    """
    anomaly = next((c for c in summary if c["strategy"] == "anomaly" and c["mean"] is not None), None)
    supervised = [c for c in summary if c["strategy"] != "anomaly" and c["mean"] is not None]
    entries, texts = [], []
    if anomaly:
        texts.append(f"The anomaly strategy, with no defect image, reaches {metric} {anomaly['mean']:.3f} "
                     f"[{_bound(anomaly['low'])}, {_bound(anomaly['high'])}].")
    for count in sorted({c["defects"] for c in supervised}, key=_count_key):
        best = max((c for c in supervised if c["defects"] == count), key=lambda c: c["mean"])
        shown = f"all {best['n_defects']}" if count is None else str(count)
        entry = {"defects": count, "n_defects": best["n_defects"], "supervised": best["label"], "value": best["mean"],
                 "low": best["low"], "high": best["high"], "anomaly": None if anomaly is None else anomaly["mean"]}
        text = f"With {shown} defect images, the best supervised run ({best['label']}) reaches {best['mean']:.3f}"
        if anomaly is None or None in (best["low"], best["high"], anomaly["low"], anomaly["high"]):
            entry["outcome"] = None
            text += "."
        elif best["low"] > anomaly["high"]:
            entry["outcome"] = "supervised"
            text += ": clearly better than the anomaly strategy."
        elif best["high"] < anomaly["low"]:
            entry["outcome"] = "anomaly"
            text += ": the anomaly strategy is clearly better."
        else:
            entry["outcome"] = "tie"
            text += f" ({'ahead' if best['mean'] > anomaly['mean'] else 'behind'}, within the noise)."
        entries.append(entry)
        texts.append(text)
    wins = [entry for entry in entries if entry["outcome"] == "supervised"]
    if anomaly and entries:
        texts.append(f"Supervised training wins clearly from {wins[0]['n_defects']} defect images on." if wins else
                     "No number of defect images tried made supervised training clearly better than the anomaly strategy.")
    return {"per_count": entries, "text": " ".join(texts)}


def _bound(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _defects_table(comparison: dict) -> tuple[list[str], list[list[str]]]:
    entries = comparison["verdict"]["defects"]["per_count"]
    anomaly = next((c for c in comparison["summary"] if c["strategy"] == "anomaly"), None)
    header = ["defect images for training", "best supervised", "its mean [95% interval]",
              "anomaly (no defect image)", "outcome"]
    rows = [[f"all ({e['n_defects']})" if e["defects"] is None else e["defects"], e["supervised"],
             f"{e['value']:.3f} [{_bound(e['low'])}, {_bound(e['high'])}]",
             "n/a" if anomaly is None or anomaly["mean"] is None else
             f"{anomaly['mean']:.3f} [{_bound(anomaly['low'])}, {_bound(anomaly['high'])}]",
             {"supervised": "supervised clearly better", "anomaly": "anomaly clearly better",
              "tie": "within the noise", None: "n/a"}[e["outcome"]]] for e in entries]
    return header, rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and interval of the primary metric per (strategy label, fraction)."""
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault((row["label"], row["fraction"]), []).append(row)
    summary = []
    for (label, fraction), members in sorted(cells.items(), key=lambda item: (item[0][1], item[0][0])):
        values = [m["primary"]["value"] for m in members if m["primary"]["value"] is not None]
        lows = [m["primary"]["low"] for m in members if m["primary"]["low"] is not None]
        highs = [m["primary"]["high"] for m in members if m["primary"]["high"] is not None]
        mean = float(np.mean(values)) if values else None
        low = min([float(np.mean(lows))] + values) if lows else (min(values) if values else None)
        high = max([float(np.mean(highs))] + values) if highs else (max(values) if values else None)
        summary.append({
            "label": label, "fraction": fraction, "strategy": members[0]["strategy"],
            "defects": members[0].get("defects"), "n_defects": members[0].get("n_defects"), "n_train": int(np.mean([m["n_train"] for m in members])),
            "mean": mean, "low": low, "high": high, "values": values, "seeds": len(members),
            "seconds": float(np.mean([m["timing"]["total_seconds"] for m in members])),
            "trainable_params": int(np.max([m["trainable_params"] for m in members])),
            # None for a strategy that trains no network (anomaly).
            "epochs_to_best": _mean_or_none([m["epochs_to_best"] for m in members]),
        })
    return summary


def _mean_or_none(values) -> float | None:
    values = [value for value in values if value is not None]
    return float(np.mean(values)) if values else None


def verdict(summary: list[dict], metric: str) -> dict:
    """Which strategy wins at each training-set size, by how much, and whether it is clear.

    A lead is "clear" when the winner's interval does not overlap the runner-up's. Where it
    overlaps, the cheapest strategy within the overlap is named as the sensible choice.
    """
    per_fraction = []
    for fraction in sorted({cell["fraction"] for cell in summary}):
        cells = [c for c in summary if c["fraction"] == fraction and c["mean"] is not None]
        if not cells:
            continue
        ranked = sorted(cells, key=lambda c: (-c["mean"], c["seconds"]))
        winner = ranked[0]
        entry = {"fraction": fraction, "n_train": winner["n_train"], "winner": winner["label"], "value": winner["mean"]}
        if len(ranked) == 1:
            entry.update(runner_up=None, margin=None, overlap=None, clear=None,
                         text=f"With {_share(fraction)} ({winner['n_train']} training images) only "
                              f"{winner['label']} ran: {metric} {winner['mean']:.3f}.")
            per_fraction.append(entry)
            continue
        second = ranked[1]
        overlap = winner["low"] is not None and second["high"] is not None and winner["low"] <= second["high"]
        margin = winner["mean"] - second["mean"]
        if margin < 0.0005:
            text = (f"With {_share(fraction)} ({winner['n_train']} training images), {winner['label']} and "
                    f"{second['label']} tie: {metric} {winner['mean']:.3f}. ")
        else:
            text = (f"With {_share(fraction)} ({winner['n_train']} training images), {winner['label']} wins: "
                    f"{metric} {winner['mean']:.3f} vs {second['mean']:.3f} for {second['label']} (+{margin:.3f}). ")
        if overlap:
            tied = [c for c in ranked if c["high"] is not None and winner["low"] <= c["high"]]
            cheapest = min(tied, key=lambda c: c["seconds"])
            text += "The intervals overlap, so the lead is within the noise"
            text += (f"; {cheapest['label']} is the cheapest of the tied strategies "
                     f"({cheapest['seconds']:.0f} s vs {winner['seconds']:.0f} s)." if cheapest is not winner else ".")
            entry["sensible_choice"] = cheapest["label"]
        else:
            text += "The intervals do not overlap: the lead is clear."
            entry["sensible_choice"] = winner["label"]
        entry.update(runner_up=second["label"], runner_up_value=second["mean"], margin=margin, overlap=overlap,
                     clear=not overlap, text=text)
        per_fraction.append(entry)
    summary_text = " ".join(entry["text"] for entry in per_fraction)
    winners = {entry["winner"] for entry in per_fraction}
    if len(per_fraction) > 1 and len(winners) > 1:
        summary_text += (f" The answer depends on the amount of data: {per_fraction[0]['winner']} with the least, "
                         f"{per_fraction[-1]['winner']} with the most.")
    elif len(per_fraction) > 1:
        summary_text += f" {per_fraction[0]['winner']} wins at every size tried."
    return {"per_fraction": per_fraction, "text": summary_text.strip()}


def _share(fraction: float) -> str:
    return "all the training data" if fraction == 1.0 else f"{fraction:.0%} of the training data"


def _learning_curve_figure(summary: list[dict], metric: str):
    plt = render.pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 3.8))
    for label in sorted({c["label"] for c in summary}):
        cells = sorted((c for c in summary if c["label"] == label and c["mean"] is not None), key=lambda c: c["n_train"])
        if not cells:
            continue
        x = [c["n_train"] for c in cells]
        line, = axis.plot(x, [c["mean"] for c in cells], marker="o", label=label)
        if all(c["low"] is not None for c in cells):
            axis.fill_between(x, [c["low"] for c in cells], [c["high"] for c in cells], color=line.get_color(), alpha=0.15)
    if len({c["n_train"] for c in summary}) > 1:
        axis.set_xscale("log")
    axis.set_xlabel("training images")
    axis.set_ylabel(f"test {metric}")
    axis.set_title("learning curves (mean over seeds, 95% interval)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return figure


def _validation_curves_figure(reports: dict[str, dict]):
    plt = render.pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, report in sorted(reports.items()):
        epochs = [record["epoch"] for record in report["history"]]
        for axis, key in zip(axes, ("val_loss", "val_accuracy")):
            values = [record.get(key) for record in report["history"]]
            if any(v is not None for v in values):
                axis.plot(epochs, values, marker="o", markersize=3, label=label)
    for axis, key in zip(axes, ("val_loss", "val_accuracy")):
        axis.set_xlabel("epoch")
        axis.set_title(f"{key} (largest training set, seed 0)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return figure


def _weights_by_source(rows: list[dict]) -> dict[str, list[str]]:
    """Which strategies started from which weights: `scratch` starts from random weights while the
    others load ImageNet, and a reviewer must not read one run's weights as everyone's."""
    sources: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: r["label"]):
        labels = sources.setdefault(row["weights"] or "unknown", [])
        if row["label"] not in labels:
            labels.append(row["label"])
    return sources


def _weights_text(weights: dict) -> str:
    if len(weights) == 1:
        return next(iter(weights))
    return "; ".join(f"{source} ({', '.join(labels)})" for source, labels in weights.items())


def build_comparison(run_dirs: list[str | os.PathLike], rebuild: bool = False) -> tuple[dict, dict[str, dict]]:
    """The comparison report and the run reports it was built from (keyed by run folder)."""
    reports = {}
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        # A finished run's report was built when it finished (report.json); rebuilt only when asked.
        reports[str(run_dir)] = write_run_report(run_dir) if rebuild or not RunFolder(run_dir).is_finished \
            else RunFolder(run_dir).read_report()
    if not reports:
        raise ValueError("No run to compare: pass run folders written by `tfx-transfer run` or `compare`.")
    rows = [row_of(report, run_dir) for run_dir, report in reports.items()]
    defects = defect_mode(rows)
    if defects:  # each number of defect images is its own configuration
        for row in rows:
            row["label"] = _defects_label(row)
    recipes = sorted({report["recipe"] for report in reports.values()})
    metric = next(iter(reports.values()))["metrics"]["primary"]["name"]
    summary = summarise(rows)
    largest = max(row["fraction"] for row in rows)
    at_largest = [c for c in summary if c["fraction"] == largest and c["mean"] is not None]
    best_cell = max(at_largest, key=lambda c: c["mean"]) if at_largest else summary[0]
    best_rows = [r for r in rows if r["label"] == best_cell["label"] and r["fraction"] == best_cell["fraction"]]
    best_row = max(best_rows, key=lambda r: r["primary"]["value"] if r["primary"]["value"] is not None else -1)
    best = {k: v for k, v in reports[best_row["run_dir"]].items() if k != "history"}
    first = next(iter(reports.values()))
    # The augmentation of the runs that trained a network (an anomaly run has none).
    trained = next((report for report in reports.values() if report["strategy"] != "anomaly"), first)
    data = first["data"]
    facts = {
        "recipes": recipes, "backbone": first["backbone"], "weights": _weights_by_source(rows), "image_size": first["image_size"],
        "data": {"source": data["source"], "class_names": data["class_names"], "n_train_available": data.get("n_train_available"),
                 "n_val": data["n_val"], "n_test": data["n_test"], "skipped": data["skipped"]},
        "augmentation": trained.get("augmentation"), "device": first["device"], "versions": first["versions"],
        "total_seconds": float(sum(row["timing"]["total_seconds"] for row in rows)),
        "seeds": sorted({row["seed"] for row in rows}), "fractions": sorted({row["fraction"] for row in rows}),
    }
    comparison = {
        "kind": "comparison", "recipe": ", ".join(recipes), "primary_metric": metric, "rows": rows,
        "summary": summary, "verdict": verdict(summary, metric), "best": best, "best_run_dir": best_row["run_dir"],
        "best_label": best_row["label"],
        "facts": facts,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if defects:
        comparison["verdict"]["defects"] = defects_verdict(summary, metric)
        comparison["verdict"]["text"] = comparison["verdict"]["defects"]["text"] + " " + comparison["verdict"]["text"]
    return comparison, reports


def _summary_table(comparison: dict) -> tuple[list[str], list[list[str]]]:
    summary = comparison["summary"]
    fractions = sorted({c["fraction"] for c in summary})
    labels = [c["label"] for c in sorted(summary, key=_order)]
    labels = list(dict.fromkeys(labels))
    # Training images per column; when they differ by row (compare --defects), each cell says its own.
    sizes = {f: {c["n_train"] for c in summary if c["fraction"] == f} for f in fractions}
    header = ["strategy"] + [f"{f:g} (n={next(iter(sizes[f]))})" if len(sizes[f]) == 1 else f"{f:g}" for f in fractions]
    rows = []
    for label in labels:
        row = [label]
        for fraction in fractions:
            cell = next((c for c in summary if c["label"] == label and c["fraction"] == fraction), None)
            if cell is None or cell["mean"] is None:
                row.append("n/a")
            else:
                interval = "" if cell["low"] is None else f" [{cell['low']:.3f}, {cell['high']:.3f}]"
                size = "" if len(sizes[fraction]) == 1 else f" (n={cell['n_train']})"
                row.append(f"{cell['mean']:.3f}{interval}{size}")
        rows.append(row)
    return header, rows


def _cost_table(comparison: dict) -> tuple[list[str], list[list[str]]]:
    summary = comparison["summary"]
    largest = max(c["fraction"] for c in summary)
    rows = [[c["label"], f"{c['seconds']:.1f}", f"{c['trainable_params']:,}",
             "n/a" if c["epochs_to_best"] is None else f"{c['epochs_to_best']:.1f}"]
            for c in sorted(summary, key=_order) if c["fraction"] == largest]
    return ["strategy", "time per run (s)", "trainable params", "epochs to best val"], rows


def _runs_table(comparison: dict) -> tuple[list[str], list[list[str]]]:
    header = ["strategy", "fraction", "seed", "n_train", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "seconds"]
    rows = [[r["label"], f"{r['fraction']:g}", r["seed"], r["n_train"], *(render.number(r["metrics"][k]) for k in
             ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")), f"{r['timing']['total_seconds']:.1f}"]
            for r in sorted(comparison["rows"], key=lambda r: (r["fraction"], _order(r), r["seed"]))]
    return header, rows


def _facts_rows(comparison: dict) -> list[list[str]]:
    facts = comparison["facts"]
    augmentation = facts.get("augmentation") or {"policy": "none"}
    return [
        ["recipe", comparison["recipe"]], ["backbone", facts["backbone"]], ["weights", _weights_text(facts["weights"])],
        ["image size", render.image_size_text(facts["image_size"])], ["data", facts["data"]["source"]],
        ["classes", ", ".join(facts["data"]["class_names"])],
        ["images", f"train {facts['data']['n_train_available']} (subsets: fractions "
                   f"{', '.join(f'{f:g}' for f in facts['fractions'])}), val {facts['data']['n_val']}, "
                   f"test {facts['data']['n_test']}; skipped {len(facts['data']['skipped'])}"],
        ["seeds", ", ".join(map(str, facts["seeds"]))],
        ["augmentation", ", ".join(f"{k}={v}" for k, v in augmentation.items())],
        ["device", facts["device"]], ["total time", f"{facts['total_seconds']:.0f} s"],
        ["versions", ", ".join(f"{k} {v}" for k, v in facts["versions"].items())],
    ]


def render_comparison_markdown(comparison: dict, reports: dict[str, dict] | None = None) -> str:
    metric = comparison["primary_metric"]
    best = comparison["best"]
    lines = [f"# Comparison: {comparison['recipe']}", "", f"**Verdict.** {render.markdown_text(comparison['verdict']['text'])}", "",
             f"## Test {metric} by strategy and training-set fraction (mean [95% interval])", "",
             render.markdown_table(*_summary_table(comparison)), "",
             *(["## Defect images needed: supervised vs anomaly", "", render.markdown_table(*_defects_table(comparison)), ""]
               if comparison["verdict"].get("defects") else []),
             "## Cost (largest training set)", "", render.markdown_table(*_cost_table(comparison)), "",
             f"## Best configuration: {comparison.get('best_label', best.get('label'))} at fraction {best.get('fraction'):g}, seed {best.get('seed')}", ""]
    if best.get("most_confused"):
        lines += [render.markdown_table(["true", "predicted", "count"],
                                        [[p["true"], p["predicted"], p["count"]] for p in best["most_confused"]]), ""]
    border_table = _border_table(comparison, reports) if reports else None
    if border_table:
        lines += ["## Where the models look: heat in the border (largest training set)", "", BORDER_TEXT, "",
                  render.markdown_table(*border_table), ""]
    lines += ["## Facts", "", render.markdown_table(["", ""], _facts_rows(comparison)), "",
              "## Every run", "", render.markdown_table(*_runs_table(comparison)), ""]
    return "\n".join(lines)


BORDER_TEXT = (f"The share of each strategy's Grad-CAM heat in the image's border (the outer {BORDER_MARGIN:.0%} of each side), by "
               "predicted class, on the first seed's run; well above the even share, a model decides from the edges "
               "(markers, text, fixtures).")


def _border_table(comparison: dict, reports: dict[str, dict]) -> tuple[list[str], list[list[str]]] | None:
    largest = max(r["fraction"] for r in comparison["rows"])
    first_seed = min(comparison["facts"]["seeds"])
    chosen = [(r["label"], reports[r["run_dir"]]) for r in sorted(comparison["rows"], key=_order)
              if r["fraction"] == largest and r["seed"] == first_seed]
    chosen = [(label, report) for label, report in chosen if (report.get("explanations") or {}).get("border_share")]
    if not chosen:
        return None
    names = comparison["facts"]["data"]["class_names"]
    rows = [[label, *(render.number(report["explanations"]["border_share"][name]["mean"]) for name in names),
             render.number(report["explanations"]["border_baseline"])] for label, report in chosen]
    return ["strategy", *(f"predicted {name}" for name in names), "if spread evenly"], rows


def _best_gallery(comparison: dict, level: str) -> tuple[str, str]:
    best = comparison["best"]
    arrays = RunFolder(comparison["best_run_dir"]).read_explanations() if comparison.get("best_run_dir") else {}
    if arrays:
        return (f"{level}Where the best configuration looks (Grad-CAM): confidently wrong and right test images",
                heatmap_gallery_html(arrays, best))
    return f"{level}Most confidently wrong test images (best configuration)", gallery_html(best["confidently_wrong"])


def comparison_sections(comparison: dict, reports: dict[str, dict], level: str = "") -> list[tuple[str, str]]:
    """The HTML sections of a comparison (also used by the demo's page of several recipes)."""
    metric = comparison["primary_metric"]
    best = comparison["best"]
    largest = max(r["fraction"] for r in comparison["rows"])
    border_table = _border_table(comparison, reports)
    seed0 = {r["label"]: reports[r["run_dir"]] for r in comparison["rows"] if r["fraction"] == largest and r["seed"] == min(comparison["facts"]["seeds"])}
    sections = [
        ("", f'<div class="verdict"><strong>Verdict.</strong> {render.html.escape(comparison["verdict"]["text"])}</div>'),
        (f"{level}Test {metric} by strategy and training-set fraction (mean [95% interval])",
         render.html_table(*_summary_table(comparison))),
        *([(f"{level}Defect images needed: supervised vs anomaly", render.html_table(*_defects_table(comparison)))]
          if comparison["verdict"].get("defects") else []),
        (f"{level}Learning curves", render.html_image(render.figure_to_data_uri(
            _learning_curve_figure(comparison["summary"], metric)), "learning curves")),
        (f"{level}Cost (largest training set)", render.html_table(*_cost_table(comparison))),
        (f"{level}Validation curves (convergence)", render.html_image(render.figure_to_data_uri(
            _validation_curves_figure(seed0)), "validation curves")),
        (f"{level}Best configuration: {comparison.get('best_label', best.get('label'))} at fraction {best.get('fraction'):g}, seed {best.get('seed')}",
         (render.paragraph("Multi-label: see the run's report for its per-label table.", "note") if best.get("multi_label") else
          render.html_image(render.figure_to_data_uri(confusion_figure(best["confusion_matrix"], best["data"]["class_names"])),
                            "confusion matrix of the best configuration"))
         + (render.html_table(["true", "predicted", "count"], [[p["true"], p["predicted"], p["count"]]
                                                              for p in best["most_confused"]], 2) if best["most_confused"] else "")),
        _best_gallery(comparison, level),
        *([(f"{level}Where the models look: heat in the border (largest training set)",
            render.paragraph(BORDER_TEXT) + render.html_table(*border_table))] if border_table else []),
        (f"{level}Facts", render.html_table(["", ""], _facts_rows(comparison), numeric_from=2)),
        (f"{level}Every run", render.html_table(*_runs_table(comparison), numeric_from=1)),
    ]
    return sections


def write_comparison_report(out: str | os.PathLike, run_dirs: list[str | os.PathLike], rebuild: bool = False) -> dict:
    """Builds the comparison of `run_dirs` and writes report.md, report.html, then report.json in `out`."""
    comparison, reports = build_comparison(run_dirs, rebuild)
    page = render.html_page(f"Comparison: {comparison['recipe']}", comparison_sections(comparison, reports),
                            comparison["best"].get("description", ""))
    ComparisonFolder(out).write_report(comparison, render_comparison_markdown(comparison, reports), page)
    return comparison


def find_run_dirs(folder: str | os.PathLike) -> list[Path]:
    """The finished runs of a comparison folder (`runs/*`), or the folder itself if it is a run."""
    folder = Path(folder)
    if RunFolder(folder).facts_file.is_file():
        return [folder]
    return ComparisonFolder(folder).run_dirs()


def write_overview(out: str | os.PathLike, comparisons: list[tuple[dict, dict[str, dict]]]) -> Path:
    """One page with the comparison of several recipes (the demo's final report)."""
    out = Path(out)
    sections, lines = [], ["# tfx-transfer demo: every recipe compared", ""]
    for comparison, reports in comparisons:
        sections.append((f"Recipe {comparison['recipe']}", render.paragraph(comparison["best"].get("description", ""), "note")))
        sections += comparison_sections(comparison, reports, level=f"{comparison['recipe']}: ")
        lines += [f"## {comparison['recipe']}", "", f"**Verdict.** {render.markdown_text(comparison['verdict']['text'])}", "",
                  render.markdown_table(*_summary_table(comparison)), ""]
    write_report_files(out, {"kind": "overview", "comparisons": [c for c, _ in comparisons]}, "\n".join(lines),
                       render.html_page("tfx-transfer demo: every recipe compared", sections))
    return ComparisonFolder(out).report_html_file
