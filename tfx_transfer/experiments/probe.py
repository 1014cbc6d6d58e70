"""Freeze-depth advice from layer-wise linear probes: where ImageNet features stop helping this data.

For each named block of the recipe's backbone, the block's output is average-pooled on the
training split (one forward pass through a model with one output per block, cached on disk like
the strategies' features) and a linear probe (scikit-learn's logistic regression on standardised
features) is fitted and scored on validation with the recipe's primary metric. Rising then flat or
falling, the curve shows how deep the pretrained features still serve this data. The advice:
unfreeze the blocks after the curve's peak (`training.unfreeze_blocks`); when the peak is the top
block, the top features transfer and feature extraction suffices. Peaks within `TOLERANCE` of the
best count as the best, and the deepest of them is taken (fewer blocks to train, less to overfit).

`verify=True` checks the advice: fine-tuning at the advised depth and at one block fewer and one
more, with the recipe's settings, on the same splits; the three results are reported with their
intervals, and whether the advised depth was best on validation. Everything is chosen on
validation; test results are shown beside, never used.

Example:
    >>> record = probe("product_defects", quick=True, out="runs/defects-probe")  # doctest: +SKIP
    >>> record["advice"]["unfreeze_blocks"]  # doctest: +SKIP
    4
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from tfx_transfer.reporting.probe_page import render_html, render_markdown
from tfx_transfer.evaluation.metrics import OperatingPoint, bootstrap_interval, score
from tfx_transfer.runs.folder import ComparisonFolder, write_report_files

#: Probe scores within this of the best count as the peak (the deepest such block is advised).
TOLERANCE = 0.01
#: Training images the probes use at most (a stratified sample beyond: the curve's shape is what counts).
MAX_TRAIN_IMAGES = 4000


def block_features(classifier, table, indices, image_size, verbose: int = 0) -> dict[str, np.ndarray]:
    """Average-pooled outputs of every named block of the classifier's backbone, `{block: (n, channels)}`,
    from one forward pass; cached on disk by the model's fingerprint and the rows."""
    import keras

    from tfx_transfer.config.paths import cache_dir
    from tfx_transfer.console import keras_verbose
    from tfx_transfer.data.pipeline import make_dataset
    from tfx_transfer.models.classifier import find_backbone
    from tfx_transfer.models.taps import block_outputs, tap_model
    from tfx_transfer.training.features import data_key, model_key

    backbone, spec = find_backbone(classifier)
    outputs = list(block_outputs(backbone, spec))
    taps = tap_model(classifier, outputs, name="block_probe_taps")
    extractor = keras.Model(taps.inputs, [keras.layers.GlobalAveragePooling2D(name=f"probe_{name}")(tensor)
                                          for name, tensor in zip(outputs, taps.outputs)], name="block_probe")
    key = hashlib.sha1(json.dumps({"model": model_key(extractor), "data": data_key(table, indices)}).encode()).hexdigest()
    path = cache_dir() / "probes" / f"{key}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return {name: saved[name] for name in outputs}
    arrays = extractor.predict(make_dataset(table, indices, image_size, 64), verbose=keras_verbose(verbose))
    features = dict(zip(outputs, arrays if isinstance(arrays, list) else [arrays]))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(temporary, **features)
    os.replace(temporary, path)
    return features


def probe_curve(train: dict, y_train, validation: dict, y_val, metric: str, positive_index=None,
                resamples: int = 200, seed: int = 0) -> list[dict]:
    """Per block (in order): the probe's validation `metric` with a bootstrap interval.

    Example:
        >>> rng = np.random.default_rng(0); y = np.arange(60) % 2
        >>> useful = {"low": rng.normal(size=(60, 4)), "high": rng.normal(size=(60, 4)) + y[:, None]}
        >>> curve = probe_curve(useful, y, useful, y, "accuracy")
        >>> [row["block"] for row in curve], curve[1]["value"] > curve[0]["value"]
        (['low', 'high'], True)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y_train, y_val = np.asarray(y_train), np.asarray(y_val)
    curve = []
    argmax = OperatingPoint("argmax", positive_index=positive_index)
    for name in train:
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        classifier.fit(train[name], y_train)
        y_score = np.zeros((len(y_val), int(max(y_train.max(), y_val.max())) + 1))
        y_score[:, classifier.classes_] = classifier.predict_proba(validation[name])
        value = score(metric, y_val, y_score, y_score.argmax(axis=1), positive_index)
        interval = bootstrap_interval(metric, y_val, y_score, argmax, resamples, seed) if value is not None else None
        curve.append({"block": name, "channels": int(train[name].shape[1]), "value": value,
                      "low": None if interval is None else interval[0], "high": None if interval is None else interval[1]})
    return curve


def advise(curve: list[dict], tolerance: float = TOLERANCE) -> dict:
    """The advice the curve gives (see the module documentation).

    Example:
        >>> advise([{"block": "a", "value": 0.7}, {"block": "b", "value": 0.9}, {"block": "c", "value": 0.8}])["unfreeze_blocks"]
        1
    """
    values = np.array([np.nan if row["value"] is None else row["value"] for row in curve], float)
    if np.isnan(values).all():
        raise ValueError("No probe could be scored on validation (a single class there?). Expected a validation "
                         "split holding every class.")
    best = np.nanmax(values)
    peak = int(np.flatnonzero(values >= best - tolerance)[-1])
    blocks = [row["block"] for row in curve]
    unfreeze = len(blocks) - 1 - peak
    if unfreeze == 0:
        text = (f"The probe is best at the top block ({blocks[peak]}): ImageNet's top features transfer to this data, "
                "so feature extraction suffices (fine-tuning the top block is the most to try).")
    else:
        text = (f"The probe peaks at block {blocks[peak]} ({values[peak]:.3f}; the top block gives "
                f"{values[-1]:.3f}): deeper features are more ImageNet-specific than this data needs. Unfreeze the "
                f"{unfreeze} block(s) after it ({', '.join(blocks[peak + 1:])}): training.unfreeze_blocks: {unfreeze}.")
    return {"peak_block": blocks[peak], "peak_value": float(values[peak]), "unfreeze_blocks": unfreeze,
            "strategy": "feature_extraction" if unfreeze == 0 else "fine_tune", "tolerance": tolerance, "text": text}


def probe(recipe, data: str | os.PathLike | None = None, quick: bool = False, overrides=None,
          out: str | os.PathLike | None = None, verify: bool = False, verbose: int = 1, log=print) -> dict:
    """Probes every block of the recipe's backbone on its data, advises a depth, optionally checks it.

    Args:
        recipe, data, quick, overrides: As in `tfx_transfer.run`.
        out: The folder for report.md/.html/.json (and, with `verify`, the three runs); None writes nothing.
        verify: Fine-tune at the advised depth and one block either side, and report the three.
        verbose: Progress of the forward pass and the runs.
        log: Where progress lines go.

    Returns:
        The probe record: `curve`, `advice`, and with `verify` the `verification`.
    """
    from tfx_transfer.config.recipe import as_recipe
    from tfx_transfer.experiments.prepare import prepare_data

    recipe = as_recipe(recipe, overrides, None, quick)
    prepared = prepare_data(recipe, data, scan_cache=None if out is None else ComparisonFolder(out).scan_file)
    record = probe_prepared(recipe, prepared, verbose, log)
    if verify:
        record["verification"] = _verify(recipe, prepared, record["advice"], len(record["curve"]), Path(out or "."),
                                         verbose, log)
    if out is not None:
        write_report_files(out, record, render_markdown(record), render_html(record))
    return record


def probe_prepared(recipe, prepared, verbose: int = 0, log=print) -> dict:
    """`probe` on data already read and split (`tfx_transfer.experiments.prepare.prepare_data`), without verification."""
    from tfx_transfer.models.classifier import build_classifier
    from tfx_transfer.experiments.prepare import train_config

    table, splits = prepared.table, prepared.splits
    if table.multi_label:
        raise ValueError("Probes need single-label data; this recipe's data is multi-label.")
    config = train_config(recipe, table.class_names)
    classifier = build_classifier(config.backbone, table.num_classes, config.weights, config.image_size,
                                  grayscale=config.grayscale, pooling=config.pooling, seed=config.seed)
    train = _sample(splits.train, table.labels, MAX_TRAIN_IMAGES, config.seed)
    log(f"Probing every block of {config.backbone} on {len(train)} training and {len(splits.val)} validation images ...")
    train_features = block_features(classifier, table, train, config.image_size, verbose)
    val_features = block_features(classifier, table, splits.val, config.image_size, verbose)
    metric = recipe.evaluation.primary_metric
    curve = probe_curve(train_features, table.labels[train], val_features, table.labels[splits.val], metric,
                        prepared.positive_index, seed=config.seed)
    record = {"kind": "probe", "recipe": recipe.name, "backbone": config.backbone, "weights": config.weights,
              "image_size": list(config.image_size), "metric": metric, "split": "validation",
              "data": {"source": prepared.source, "n_train": int(len(train)), "n_val": int(len(splits.val))},
              "curve": curve, "advice": advise(curve)}
    log(record["advice"]["text"])
    return record


def _sample(indices, labels, size: int, seed: int) -> np.ndarray:
    if len(indices) <= size:
        return np.asarray(indices)
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(np.asarray(indices), train_size=size, random_state=seed, stratify=labels[indices])
    return np.sort(kept)


def verification_depths(advised: int, blocks: int) -> list[int]:
    """The advised number of unfrozen blocks and one fewer and one more, within [0, blocks]
    (0 is feature extraction); at an end, the two nearest on the one side.

    Example:
        >>> verification_depths(0, 10), verification_depths(4, 10), verification_depths(10, 10)
        ([0, 1, 2], [3, 4, 5], [8, 9, 10])
    """
    low = min(max(advised - 1, 0), blocks - 2)
    return [low, low + 1, low + 2]


def _verify(recipe, prepared, advice: dict, blocks: int, out: Path, verbose: int, log) -> dict:
    from tfx_transfer.experiments.runner import run_prepared

    results = []
    for depth in verification_depths(advice["unfreeze_blocks"], blocks):
        overrides = ({"training.strategy": "feature_extraction"} if depth == 0 else
                     {"training.strategy": "fine_tune", "training.unfreeze_blocks": depth, "training.unfreeze_from": None})
        configured = recipe.with_overrides(overrides)
        label = "feature_extraction" if depth == 0 else f"fine_tune_{depth}"
        folder = ComparisonFolder(out).verification(label)
        report = run_prepared(configured, prepared, folder.path, verbose=verbose, resume=folder.is_run).report
        results.append({"unfreeze_blocks": depth, "label": label, "advised": depth == advice["unfreeze_blocks"],
                        "validation": report["validation"]["primary"]["value"], "test": report["metrics"]["primary"]})
        log(f"{label}: validation {_number(results[-1]['validation'])}, test {_number(report['metrics']['primary']['value'])}")
    best = max(results, key=lambda r: -np.inf if r["validation"] is None else r["validation"])
    held = best["advised"]
    text = (f"The advised depth ({advice['unfreeze_blocks']} blocks) was the best of the three on validation."
            if held else f"The advice did not hold here: {best['label']} was best on validation "
            f"({_number(best['validation'])} against {_number(next(r for r in results if r['advised'])['validation'])}).")
    return {"results": results, "advice_held": held, "text": text}


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
