"""The report of one run, rebuilt at any time from the run folder without TensorFlow.

`build_run_report(run_dir)` reads `run.json`, `history.json` and `predictions.npz`, calibrates the
scores by temperature scaling fitted on validation (`tfx_transfer.evaluation.calibration`), chooses
the operating point on the calibrated validation scores, applies both unchanged to test, and
computes every metric with scikit-learn (`tfx_transfer.evaluation.metrics`). `write_report_pages`
writes `report.md`, a self-contained `report.html` (`tfx_transfer.reporting.run_page`) and then
`report.json`; `write_run_report` does both. A run builds its report once, when it finishes, and
writes model.json from it (`tfx_transfer.runs.model_info`); rebuilding a report leaves model.json
as it is unless asked (`model_info=True`, for a model.json that was lost or damaged).

report.json (one run) holds: `recipe`, `strategy`, `label`, `backbone`, `weights` (`source`,
`pretrained`), `image_size` (height, width), `data` (`class_names`, `n_train`, `n_val`, `n_test`,
`skipped`, ...), `augmentation`, `metrics` (test: `accuracy`, `balanced_accuracy`, `macro_f1`,
`weighted_f1`, `roc_auc`, `average_precision`, `brier`, `ece`, `sensitivity`, `specificity`,
`primary` with its 95% interval, `operating_point`), `validation` (the same on validation),
`per_class`, `confusion_matrix`, `most_confused`, `calibration` (`temperature`, ECE and Brier score
before and after, reliability curves), `history`, `phases`, `timing`, `trainable_params`,
`epochs_to_best`, `device`, `versions`, `explanations`, `exports`, `sites`.

Example:
    >>> report = write_run_report("runs/product_defects-20261129")  # doctest: +SKIP
    >>> report["metrics"]["primary"]  # doctest: +SKIP
    {'name': 'roc_auc', 'value': 0.93, 'low': 0.90, 'high': 0.95}
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from tfx_transfer.evaluation.calibration import calibrate
from tfx_transfer.evaluation.metrics import choose_operating_point, classification_metrics, multilabel_metrics, threshold_band
from tfx_transfer.reporting.run_page import render_run_html, render_run_markdown
from tfx_transfer.runs.folder import RunFolder
from tfx_transfer.runs.model_info import ModelInfo, ModelInfoError

GALLERY_SIZE = 12


def build_run_report(run_dir: str | os.PathLike) -> dict:
    """The report of one run as a JSON-ready dict (see the module documentation)."""
    folder = RunFolder(run_dir)
    folder.check_finished_inputs()
    facts, history, predictions = folder.read_facts(), folder.read_history(), folder.read_predictions()
    evaluation = facts["evaluation"]
    class_names = facts["data"]["class_names"]
    if predictions["test_true"].ndim == 2:
        return _multilabel_report(facts, history, predictions)
    kind = evaluation["operating_point"]
    positive = evaluation.get("positive_index")
    if kind == "target_recall" and positive is None:
        kind = "argmax"  # more than two classes: no single positive class to target
    # Every metric and the operating point use calibrated scores: the temperature is fitted on
    # validation and applied to test (tfx_transfer.evaluation.calibration); predictions.npz keeps the raw ones.
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
        explanations=explanation_summary(folder.read_explanations(), class_names),
        exports=folder.read_exports(),
        sites=_site_points(folder),
    )
    return report


def explanation_summary(arrays: dict, class_names: list[str]) -> dict | None:
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


def _site_points(folder: RunFolder) -> dict:
    """The sites `recalibrate` recorded in model.json ({} without one, or with one that cannot be read)."""
    if not folder.model_info_file.is_file():
        return {}
    try:
        return ModelInfo.read(folder.model_info_file).site_operating_points
    except ModelInfoError:
        return {}


def write_report_pages(run_dir: str | os.PathLike, report: dict) -> None:
    """report.md and report.html of a built report, then report.json (each atomically)."""
    folder = RunFolder(run_dir)
    folder.write_report(report, render_run_markdown(report), render_run_html(report, folder.read_explanations()))


def write_model_info(run_dir: str | os.PathLike, report: dict) -> None:
    """model.json from a single-label run's report, keeping the sites of the one it replaces."""
    folder = RunFolder(run_dir)
    if report.get("multi_label") or not folder.model_file.is_file():
        return
    folder.write_model_info(replace(ModelInfo.from_report(report), site_operating_points=_site_points(folder)))


def write_run_report(run_dir: str | os.PathLike, model_info: bool = False) -> dict:
    """Builds the run's report and writes its pages (report.md, report.html, then report.json).

    Args:
        run_dir: A finished run folder.
        model_info: Also write model.json again from the run's files (its sites are kept): the
            way back from a model.json that was lost or damaged.
    """
    report = build_run_report(run_dir)
    if model_info:
        write_model_info(run_dir, report)
    write_report_pages(run_dir, report)
    return report
