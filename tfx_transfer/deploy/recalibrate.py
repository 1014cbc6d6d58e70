"""A new site's operating point: the threshold chosen again on a small labelled sample from there.

A threshold chosen for 90% recall on one line's validation images gives another recall on another
line (other lighting, another camera, another mix of defects). `recalibrate` scores a labelled
sample from the new site with the run's model (calibrated, with the run's test-time views), and
chooses the threshold that reaches the same target recall there, with its 95% bootstrap range. It
is written into model.json under `site_operating_points[<site>]`, beside the run's own operating
point, which is kept, and the run's report is rebuilt to list it; `predict --site <site>` uses it.

Example:
    >>> site = recalibrate("runs/line7", "samples/line9", site="line9")  # doctest: +SKIP
    >>> site["at_run_threshold"]["recall"], site["recall"]  # doctest: +SKIP
    (0.71, 0.9)
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

import numpy as np

from tfx_transfer.evaluation.metrics import choose_operating_point, threshold_band
from tfx_transfer.reporting.report import write_run_report
from tfx_transfer.runs.folder import RunFolder

#: Below this many positive images a site's threshold is a rough guess; the command says so.
FEW_POSITIVES = 20


def _rates(y_true, y_pred, positive: int) -> dict:
    positives, negatives = y_true == positive, y_true != positive
    return {"recall": float(np.mean(y_pred[positives] == positive)) if positives.any() else None,
            "specificity": float(np.mean(y_pred[negatives] != positive)) if negatives.any() else None}


def recalibrate(run_dir: str | os.PathLike, data: str | os.PathLike, site: str | None = None,
                target_recall: float | None = None, resamples: int = 1000, seed: int = 0) -> dict:
    """Chooses and records a site's operating point (see the module documentation).

    Args:
        run_dir: A finished run whose operating point is a target-recall threshold.
        data: The labelled sample: class folders named as the run's classes (`root/<class>/*`), or a
            CSV with `path` and `label` columns.
        site: The name it is recorded under; by default the data folder's name.
        target_recall: The recall to reach; by default the run's own target.
        resamples: Bootstrap resamples for the threshold's range.
        seed: Seed of the bootstrap.

    Returns:
        The site's record, as written into model.json.

    Raises:
        ValueError: for a run decided by argmax, class names the run does not know, a sample
            without positive images, or a site name that is not a plain name.
    """
    from tfx_transfer.data.pipeline import drop_unreadable
    from tfx_transfer.deploy.predict import load_run
    from tfx_transfer.data.sources import load_source

    loaded = load_run(run_dir)
    point = loaded.operating_point
    if point.kind != "target_recall":
        raise ValueError(f"recalibrate moves a target-recall threshold, and '{run_dir}' decides by {point.kind} "
                         "(its recipe's evaluation.operating_point), so it has no threshold to move. Expected a "
                         "two-class run with evaluation.operating_point: target_recall.")
    site = site or Path(data).stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", site):
        raise ValueError(f"A site name must be letters, digits, '_', '.' or '-'. Received: {site!r}; name it with --site.")
    target_recall = point.target_recall if target_recall is None else float(target_recall)
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1]. Received: {target_recall!r}")
    table = drop_unreadable(load_source(data))
    unknown = sorted(set(table.class_names) - set(loaded.class_names))
    if unknown:
        raise ValueError(f"The sample from '{data}' has classes the run does not know: {unknown}. Expected class "
                         f"folders (or labels) named as the run's classes: {loaded.class_names}.")
    y_true = np.array([loaded.class_names.index(table.class_names[label]) for label in table.labels])
    positive = point.positive_index
    positive_name = loaded.class_names[positive]
    if not (y_true == positive).any():  # the readers refuse a single class; this guards what they let through
        raise ValueError(f"The sample from '{data}' has no image of the positive class {positive_name!r}, so no "
                         "recall can be measured there. Add labelled positive images (a few dozen give a usable threshold).")
    scores = loaded.raw_scores(table, np.arange(len(table)))
    probabilities = loaded.calibrated(scores)
    chosen = choose_operating_point(y_true, probabilities, "target_recall", positive, target_recall)
    band = threshold_band(y_true, probabilities, positive, target_recall, resamples, seed)
    record = {
        **chosen.to_dict(),
        "threshold_interval": band,
        "data": str(data),
        "images": int(len(y_true)),
        "positives": int((y_true == positive).sum()),
        "skipped": len(table.skipped),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "at_run_threshold": {"threshold": point.threshold, **_rates(y_true, point.predict(probabilities), positive)},
        "at_site_threshold": _rates(y_true, chosen.predict(probabilities), positive),
    }
    folder = RunFolder(loaded.run_dir)
    folder.write_model_info(loaded.info.with_site(site, record))
    write_run_report(folder.path)  # the report lists the sites, as it lists the exports
    return record
