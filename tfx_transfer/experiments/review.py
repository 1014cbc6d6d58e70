"""Reviewing a recipe's data before blaming the model: likely wrong labels, near-duplicates, outliers.

Every training and validation image gets an out-of-fold probability for each class, from k-fold
cross-fitting (folds stratified and group-aware, as the splits are) of a linear head on the frozen
backbone's pooled features (cached, so a review costs one forward pass, then seconds), or, with
`run_dir`, of that finished run's own strategy (k trainings). cleanlab then ranks the images whose
given label the held-out model finds least likely (`tfx_transfer.evaluation.label_review`).

The review folder holds `review.csv` (`path,given_label,suggested_label,label_quality,issue`, every
reviewed image, the likely label errors first: what a labelling tool reads), `exclude_flagged.csv`
(the suspects as `path,exclude` corrections), `review.npz` (the out-of-fold probabilities and
scores) and report.md/.html/.json with thumbnails. After a look, `--relabel review.csv` (or an
edited copy) makes a later run or comparison use the corrections; without one, `--relabel
exclude_flagged.csv` leaves the suspects out (safer: the model that doubts a label is often wrong
about the hard images, see bench/bench_review.py).

Example:
    >>> record = review("product_defects", out="runs/defects-review")  # doctest: +SKIP
    >>> record["counts"]["label_issues"]  # doctest: +SKIP
    131
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfx_transfer.evaluation.label_review import (LabelIssues, find_label_issues, near_duplicates,
                                                  out_of_fold_probabilities, outlier_scores, review_folds)
from tfx_transfer.reporting.review_page import render_html, render_markdown
from tfx_transfer.runs.folder import RunFolder, write_atomically, write_report_files

#: The columns of review.csv, in order.
CSV_COLUMNS = ("path", "given_label", "suggested_label", "label_quality", "issue")
#: Rows of each kind the report lists (review.csv has them all).
REPORT_ROWS = 100


def review(recipe=None, data: str | os.PathLike | None = None, quick: bool = False, overrides=None,
           out: str | os.PathLike | None = None, folds: int = 5, run_dir: str | os.PathLike | None = None,
           verbose: int = 1, log=print) -> dict:
    """Reviews the labels of a recipe's training and validation images; see the module documentation.

    Args:
        recipe, data, quick, overrides: As in `tfx_transfer.run` (with `run_dir`, the run's own recipe
            is used and `recipe` may be None).
        out: The review folder (default `runs/<recipe>-review-<time>`).
        folds: Folds of the cross-fitting (5 by default; each fold's images are scored by a model
            trained without them).
        run_dir: A finished run whose strategy is cross-fitted (k trainings with its settings) instead
            of a linear head on frozen features.
        verbose: Progress of the forward passes and trainings.
        log: Where progress lines go.

    Returns:
        The review record (also report.json): counts, per-class counts, the ranked label issues,
        near-duplicates and outliers.
    """
    from tfx_transfer.config.recipe import as_recipe, load_recipe
    from tfx_transfer.experiments.prepare import prepare_data

    if run_dir is not None:
        if folds < 3:  # before any forward pass
            raise ValueError(f"Cross-fitting a run's strategy needs at least 3 folds (each model trains on the others "
                             f"but one, which it watches for early stopping); received folds={folds}. Use --folds 3 "
                             "or more.")
        recipe = load_recipe(RunFolder(run_dir).recipe_file)
    if recipe is None:
        raise ValueError("review needs a recipe, or a finished run (run_dir / --run RUN_DIR) whose recipe it uses.")
    recipe = as_recipe(recipe, overrides, None, quick)
    folder = Path(out) if out is not None else Path("runs") / f"{recipe.name}-review-{time.strftime('%Y%m%d-%H%M%S')}"
    check_review_folder(folder)
    started = time.perf_counter()
    prepared = prepare_data(recipe, data)
    table = prepared.table
    if table.multi_label:
        raise ValueError("review needs single-label data; this recipe's data is multi-label.")
    indices = np.sort(np.concatenate([prepared.splits.train, prepared.splits.val]))
    labels = table.labels[indices]
    groups = None if table.groups is None else table.groups[indices]
    fold_of = review_folds(labels, groups, folds, recipe.training.seed)
    features = _frozen_features(recipe, prepared, indices, verbose)
    if run_dir is None:
        log(f"Cross-fitting a linear head on frozen {recipe.model.backbone} features: {len(indices)} images, "
            f"{folds} folds{' (groups kept whole)' if groups is not None else ''} ...")
        probabilities = out_of_fold_probabilities(features, labels, fold_of, recipe.training.seed, table.num_classes)
        method = f"linear head on frozen {recipe.model.backbone} features"
    else:
        probabilities = _cross_fit_strategy(recipe, prepared, indices, fold_of, verbose, log)
        method = f"the run's strategy ({recipe.training.strategy}), trained {folds} times"
    findings = find_issues(labels, probabilities, features)
    record = review_record(recipe, prepared, indices, fold_of, findings, method)
    record["seconds"] = time.perf_counter() - started
    write_review(folder, record, findings, table, indices, fold_of, probabilities)
    log(record["summary"])
    log(f"Review written to {folder}/: report.html, and for a later run --relabel {folder / 'review.csv'} (its "
        f"suggestions, after a look: edit its suggested_label column) or --relabel {folder / 'exclude_flagged.csv'} "
        "(the suspects left out)")
    return record


def check_review_folder(folder: Path) -> None:
    """Refuses a folder that holds something other than a review (a run's or a comparison's report
    would be replaced), before any work is done."""
    report = folder / "report.json"
    kind = None
    if report.is_file():
        try:
            kind = json.loads(report.read_text()).get("kind")
        except (OSError, ValueError):
            kind = "unreadable"
    if (folder / "recipe.yaml").exists() or (folder / "runs").is_dir() or (report.is_file() and kind != "review"):
        raise ValueError(f"--out '{folder}' holds a run, a comparison or another report, which a review would "
                         "overwrite. Name a new folder for the review, e.g. --out runs/my-review.")


def _frozen_features(recipe, prepared, indices: np.ndarray, verbose: int) -> np.ndarray:
    """Pooled features of the recipe's backbone (its weights, image size, grayscale), cached on disk."""
    from tfx_transfer.experiments.prepare import train_config
    from tfx_transfer.models.classifier import build_classifier
    from tfx_transfer.training.features import extract_features

    config = train_config(recipe, prepared.table.class_names)
    classifier = build_classifier(config.backbone, prepared.table.num_classes, config.weights, config.image_size,
                                  grayscale=config.grayscale, pooling=config.pooling, seed=config.seed)
    return extract_features(classifier, prepared.table, indices, config, verbose=verbose)


def _cross_fit_strategy(recipe, prepared, indices: np.ndarray, fold_of: np.ndarray, verbose: int, log) -> np.ndarray:
    """Out-of-fold probabilities from the recipe's own strategy: for each fold, a model trained on the
    others (the next fold watched for early stopping) scores it."""
    from dataclasses import replace

    from tfx_transfer.config.settings import image_shape
    from tfx_transfer.evaluation.scoring import score_images
    from tfx_transfer.experiments.prepare import train_config
    from tfx_transfer.training.ensemble import train_ensemble

    config = train_config(recipe, prepared.table.class_names)
    folds = int(fold_of.max()) + 1
    probabilities = np.zeros((len(indices), prepared.table.num_classes))
    for fold in range(folds):
        held_out, watched = fold_of == fold, fold_of == (fold + 1) % folds
        log(f"Fold {fold + 1}/{folds}: training {recipe.training.strategy} on {int((~held_out & ~watched).sum())} "
            f"images, scoring {int(held_out.sum())} ...")
        splits = replace(prepared.splits, train=indices[~held_out & ~watched], val=indices[watched],
                         test=indices[held_out])
        result = train_ensemble(prepared.table, splits, config, recipe.training.ensemble_size, verbose=verbose)
        probabilities[held_out] = score_images(result.model, prepared.table, indices[held_out],
                                               image_shape(recipe.model.image_size), recipe.evaluation.test_time_views)
    return probabilities


def _path(table, index: int) -> str:
    return str(table.paths[index]) if table.paths is not None else f"#{index}"


@dataclass(frozen=True)
class Findings:
    """What the review found for the reviewed rows (`indices` order): cleanlab's label issues, the
    near-duplicate pairs and the outlier scores."""

    issues: LabelIssues
    duplicates: list
    outlier: np.ndarray
    is_outlier: np.ndarray


def find_issues(labels, probabilities, features) -> Findings:
    """Label issues (from the out-of-fold probabilities), near-duplicates and outliers (from features)."""
    return Findings(find_label_issues(labels, probabilities), near_duplicates(features), *outlier_scores(features))


def review_record(recipe, prepared, indices, fold_of, findings: Findings, method: str) -> dict:
    """The review's findings as a JSON-ready record (the report's source)."""
    table = prepared.table
    names = table.class_names
    labels = table.labels[indices]
    issues, duplicates, outlier, is_outlier = findings.issues, findings.duplicates, findings.outlier, findings.is_outlier
    train = set(prepared.splits.train.tolist())
    row = lambda k: {"path": _path(table, int(indices[k])), "given_label": names[int(labels[k])],  # noqa: E731
                     "suggested_label": names[int(issues.suggested[k])], "label_quality": float(issues.label_quality[k]),
                     "split": "train" if int(indices[k]) in train else "val"}
    per_class = [{"class": name, "images": int((labels == c).sum()),
                  "suspected": int((issues.is_issue & (labels == c)).sum()),
                  "suggested_from_other_classes": int((issues.is_issue & (issues.suggested == c)).sum())}
                 for c, name in enumerate(names)]
    counts = {"images": int(len(indices)), "label_issues": int(issues.is_issue.sum()),
              "near_duplicate_pairs": len(duplicates), "outliers": int(is_outlier.sum())}
    summary = (f"Review of {counts['images']} training and validation images ({method}, {int(fold_of.max()) + 1} folds): "
               f"{counts['label_issues']} likely label errors ({counts['label_issues'] / max(counts['images'], 1):.1%}), "
               f"{counts['near_duplicate_pairs']} near-duplicate pairs, {counts['outliers']} outliers.")
    return {
        "kind": "review", "recipe": recipe.name, "backbone": recipe.model.backbone, "weights": recipe.model.weights,
        "image_size": recipe.model.image_size, "method": method, "folds": int(fold_of.max()) + 1,
        "grouped": table.groups is not None, "source": prepared.source, "class_names": list(names),
        "counts": counts, "per_class": per_class, "summary": summary,
        "label_issues": [row(k) for k in issues.ranked[:REPORT_ROWS]],
        "near_duplicates": [{"first": _path(table, int(indices[i])), "second": _path(table, int(indices[j])),
                             "first_label": names[int(labels[i])], "second_label": names[int(labels[j])],
                             "distance": d} for i, j, d in duplicates[:REPORT_ROWS]],
        "outliers": [dict(row(int(k)), outlier_score=float(outlier[k]))
                     for k in np.argsort(outlier, kind="stable")[:REPORT_ROWS] if is_outlier[k]],
    }


def review_rows(findings: Findings, table, indices: np.ndarray) -> list[dict]:
    """review.csv's rows: every reviewed image, the likely label errors first (most likely wrong first),
    then the rest by label quality; `issue` is `;`-joined from label, near_duplicate, outlier."""
    issues, names = findings.issues, table.class_names
    kinds = [[] for _ in indices]
    for k in np.flatnonzero(issues.is_issue):
        kinds[k].append("label")
    for i, j, _ in findings.duplicates:
        for k in (i, j):
            if "near_duplicate" not in kinds[k]:
                kinds[k].append("near_duplicate")
    for k in np.flatnonzero(findings.is_outlier):
        kinds[k].append("outlier")
    rest = np.flatnonzero(~issues.is_issue)
    order = np.concatenate([issues.ranked, rest[np.argsort(issues.label_quality[rest], kind="stable")]])
    labels = table.labels[indices]
    return [{"path": _path(table, int(indices[k])), "given_label": names[int(labels[k])],
             "suggested_label": names[int(issues.suggested[k])], "label_quality": f"{issues.label_quality[k]:.4f}",
             "issue": ";".join(kinds[k])} for k in order]


def write_review(folder: Path, record: dict, findings: Findings, table, indices, fold_of, probabilities) -> None:
    """review.csv, review.npz and the report files, each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    rows = review_rows(findings, table, indices)
    writer.writerows(rows)
    write_atomically(folder / "review.csv", buffer.getvalue())
    # Unreviewed suspects are safer left out than relabelled by the model that doubts them (measured on
    # ELPV: bench/bench_review.py): a corrections file that excludes them is ready beside the review.
    excluded = [row["path"] for row in rows if "label" in row["issue"].split(";")]
    write_atomically(folder / "exclude_flagged.csv", "path,label\n" + "".join(f"{path},exclude\n" for path in excluded))
    temporary = folder / f".review.{os.getpid()}.tmp.npz"
    np.savez(temporary, indices=indices, folds=fold_of, probabilities=probabilities,
             label_quality=findings.issues.label_quality, is_issue=findings.issues.is_issue,
             outlier_score=findings.outlier,
             paths=np.array([_path(table, int(i)) for i in indices], dtype=str))
    os.replace(temporary, folder / "review.npz")
    write_report_files(folder, record, render_markdown(record), render_html(record))
