"""Comparisons: every (strategy, training-set fraction, seed) of a recipe run into one folder.

The runs share the splits; for one seed the subsets are nested and stratified. Each goes into
`runs/<strategy>_f<fraction>_s<seed>/`; finished runs are kept, so an interrupted comparison
continues where it stopped, but only when they were made with the recipe it runs now: a run of
another recipe is refused, or (for the demo) moved to `stale/` and trained again.

Example:
    >>> report = compare("product_defects", "feature_extraction,fine_tune", [0.1, 1.0], seeds=2)  # doctest: +SKIP
    >>> report["verdict"]["text"][:30]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tfx_transfer.config.recipe import as_recipe, recipe_changes
from tfx_transfer.config.settings import DEFAULT_FRACTIONS, DEFAULT_SEEDS
from tfx_transfer.experiments.prepare import data_digest, prepare_data, training_indices
from tfx_transfer.experiments.runner import default_out, run_prepared, strategy_label
from tfx_transfer.runs.folder import ComparisonFolder, RunFolder


#: `fine_tune:auto`'s placeholder, replaced by the probes' advice before any run.
AUTO = "auto"


def parse_strategies(text) -> list[tuple[str, dict]]:
    """`scratch,feature_extraction,fine_tune:2,fine_tune:auto` -> [(item, recipe overrides), ...]."""
    items = text.split(",") if isinstance(text, str) else list(text)
    parsed = []
    for item in (i.strip() for i in items if i.strip()):
        name, _, blocks = item.partition(":")
        overrides = {"training.strategy": name}
        if blocks == "auto" and name == "fine_tune":
            overrides["training.unfreeze_blocks"] = AUTO  # chosen by tfx_transfer.experiments.probe in `compare`
        elif blocks:
            if not blocks.isdigit():
                raise ValueError(f"Expected strategy[:unfrozen_blocks], e.g. fine_tune:4 or fine_tune:auto. "
                                 f"Received: {item!r}")
            overrides["training.unfreeze_blocks"] = int(blocks)
        parsed.append((item, overrides))
    if not parsed:
        raise ValueError("No strategy given. Expected e.g. scratch,feature_extraction,fine_tune")
    return parsed


def parse_fractions(text) -> list[float]:
    values = [float(v) for v in text.split(",")] if isinstance(text, str) else [float(v) for v in text]
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if bad or not values:
        raise ValueError(f"Fractions must be in (0, 1], e.g. 0.1,0.25,0.5,1.0. Received: {text!r}")
    return sorted(set(values))


def parse_defects(text) -> list[int | None]:
    """`0,5,20,all` -> [0, 5, 20, None] (None: every defect image of the training split)."""
    items = [item.strip() for item in (text.split(",") if isinstance(text, str) else map(str, text)) if item.strip()]
    counts = []
    for item in items:
        if item.lower() in ("all", "none"):
            counts.append(None)
        elif item.isdigit():
            counts.append(int(item))
        else:
            raise ValueError(f"Expected defect image counts like 0,5,20,all (whole numbers, or all). Received: {text!r}")
    if not counts:
        raise ValueError(f"No defect image count given. Expected e.g. 0,5,20,all. Received: {text!r}")
    return sorted(set(counts), key=lambda count: float("inf") if count is None else count)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a comparison: its recipe, its training-set fraction, its defect count, its folder."""

    recipe: object
    fraction: float
    defects: int | None
    folder: RunFolder


def plan_runs(recipe, variants: list[tuple[str, dict]], fractions: list[float], seeds: int, counts: list,
              comparison: ComparisonFolder, largest_only=()) -> list[PlannedRun]:
    """Every (seed, fraction, strategy, defect count) of a comparison, each once (`fine_tune` and
    `fine_tune:5` are one run when the recipe unfreezes 5)."""
    planned, seen = [], set()
    for seed in range(int(seeds)):
        for fraction in fractions:
            for item, variant in variants:
                if item in largest_only and fraction != fractions[-1]:
                    continue
                configured = recipe.with_overrides(dict(variant, **{"training.seed": seed}))
                anomaly = configured.training.strategy == "anomaly"
                for count in [None] if anomaly else counts:
                    if count == 0:
                        continue  # a supervised strategy has nothing to learn the defect class from
                    name = strategy_label(configured) + ("" if count is None else f"_d{count}")
                    folder = comparison.run(f"{name}_f{fraction:g}_s{seed}")
                    if folder.path not in seen:
                        seen.add(folder.path)
                        planned.append(PlannedRun(configured, fraction, count, folder))
    return planned


def _check_grid(fractions, seeds, stale: str, defects) -> tuple[list[float], list]:
    """`(fractions, defect counts)` after checking the grid's arguments (a ValueError names the bad one)."""
    fractions = parse_fractions((1.0,) if fractions is None and defects is not None else
                                DEFAULT_FRACTIONS if fractions is None else fractions)
    if int(seeds) < 1:
        raise ValueError(f"seeds must be at least 1. Received: seeds={seeds!r}")
    if stale not in ("refuse", "set_aside"):
        raise ValueError(f"stale must be 'refuse' or 'set_aside'. Received: stale={stale!r}")
    counts = [None] if defects is None else parse_defects(defects)
    if defects is not None and len(fractions) > 1:
        raise ValueError(f"--defects compares numbers of defect images at one training-set size; received fractions "
                         f"{fractions}. Give one fraction (e.g. --fractions 1.0).")
    return fractions, counts


def _keep_or_set_aside(planned: PlannedRun, prepared, comparison: ComparisonFolder, stale: str, log) -> None:
    """Refuses (or, for the demo, sets aside) a kept run made with another recipe or on other data."""
    folder = planned.folder
    changed = recipe_changes(folder.recipe_file, planned.recipe) + _data_changes(
        folder, prepared, planned.recipe, planned.fraction, planned.defects)
    if changed and stale == "refuse":
        raise ValueError(
            f"'{folder.path}' was made with another recipe ({'; '.join(changed)}), so it cannot be kept in "
            "this comparison. Compare into a new --out, or delete that run folder to train it again.")
    if changed:
        aside = _set_aside(folder.path, comparison.stale_dir)
        log(f"{folder.path.name}: made with another recipe ({'; '.join(changed)}); moved to {aside}, training it again")


def compare(recipe, strategies="scratch,feature_extraction,fine_tune", fractions=None, seeds: int = DEFAULT_SEEDS,
            data: str | os.PathLike | None = None, overrides=None, out: str | os.PathLike | None = None,
            quick: bool = False, verbose: int = 0, log=print, largest_only=(), stale: str = "refuse",
            keep_checkpoints: bool = False, defects=None) -> dict:
    """Runs every strategy at every training-set fraction and seed, then writes the comparison report.

    The splits are the same for every run; for one seed, the subsets are nested and stratified and
    are the same for every strategy. Cached pooled features make feature extraction cost seconds.

    Args:
        recipe: A `Recipe` or a recipe file.
        strategies: Comma-separated strategies; `fine_tune:N` is fine-tuning with N blocks unfrozen,
            `fine_tune:auto` with as many as the layer-wise probes advise (`tfx_transfer.experiments.probe`;
            their report goes to `out/probe`).
        fractions: Shares of the training split; default `DEFAULT_FRACTIONS` (with `defects`: 1.0).
        seeds: Seeds 0..seeds-1; each changes the subset, the head's initial weights and data order.
        data, overrides, out, quick: As in `run`.
        log: Where progress lines go.
        largest_only: Strategies run only on the largest fraction (the quick demo skips scratch on
            small subsets: building its training graph alone takes 30-50 s on a CPU).
        stale: A run already in `out` that was made with another recipe: `"refuse"` (an error
            naming the changed fields) or `"set_aside"` (moved to `out/stale/` and trained again;
            the demo does this, so a new version's recipes never stop it).
        keep_checkpoints: Keep each finished run's `training/` folder (its model is always kept).
        defects: Numbers of defect images the supervised strategies may train on, e.g. `"0,5,20,all"`
            (the anomaly strategy uses none whatever this says; supervised strategies cannot train
            on 0 and are skipped there). Validation and test keep all theirs. Needs one fraction.

    Returns:
        The comparison report (also written as report.json/.md/.html in `out`).

    Example:
        >>> report = compare("product_defects", "feature_extraction,fine_tune", [0.1, 1.0], seeds=2)  # doctest: +SKIP
        >>> report["verdict"]["text"][:30]  # doctest: +SKIP
    """
    from tfx_transfer.reporting.comparison import write_comparison_report

    recipe = as_recipe(recipe, overrides, None, quick)
    comparison = ComparisonFolder(out if out is not None else default_out(recipe, "-compare"))
    variants = parse_strategies(strategies)
    fractions, counts = _check_grid(fractions, seeds, stale, defects)
    prepared = prepare_data(recipe, data, scan_cache=comparison.scan_file)
    variants = [(item, _resolve_auto(variant, recipe, prepared, comparison, verbose, log)) for item, variant in variants]
    planned = plan_runs(recipe, variants, fractions, seeds, counts, comparison, largest_only)
    if 0 in counts:
        log("0 defect images: only the anomaly strategy can train; the supervised strategies start from the next count.")
    for number, item in enumerate(planned, start=1):
        _keep_or_set_aside(item, prepared, comparison, stale, log)
        name = item.folder.path.name
        if item.folder.is_finished:
            log(f"[{number}/{len(planned)}] {name}: done before, kept")
            continue
        # A folder without report.json was interrupted: continue it (from its checkpoint,
        # an ensemble member's included, or from the start when it has none).
        result = run_prepared(item.recipe, prepared, item.folder.path, item.fraction, verbose=verbose,
                              resume=item.folder.is_run, keep_checkpoints=keep_checkpoints,
                              defects=item.defects)
        primary = result.report["metrics"]["primary"]
        log(f"[{number}/{len(planned)}] {name}: {primary['name']} "
            f"{_format(primary['value'])}, {result.report['timing']['total_seconds']:.0f} s")
    return write_comparison_report(comparison.path, [item.folder.path for item in planned])


def _resolve_auto(variant: dict, recipe, prepared, comparison: ComparisonFolder, verbose: int, log) -> dict:
    """`fine_tune:auto` becomes the probes' advice (`tfx_transfer.experiments.probe`), written to `out/probe`."""
    if variant.get("training.unfreeze_blocks") != AUTO:
        return variant
    from tfx_transfer.experiments.probe import probe_prepared
    from tfx_transfer.reporting.probe_page import render_html, render_markdown
    from tfx_transfer.runs.folder import write_report_files

    record = probe_prepared(recipe, prepared, verbose, log)
    write_report_files(comparison.probe_dir, record, render_markdown(record), render_html(record))
    advice = record["advice"]
    if advice["unfreeze_blocks"] == 0:
        return {"training.strategy": "feature_extraction"}
    return {"training.strategy": "fine_tune", "training.unfreeze_blocks": advice["unfreeze_blocks"],
            "training.unfreeze_from": None}


def _data_changes(folder: RunFolder, prepared, recipe, fraction: float, defects: int | None = None) -> list[str]:
    """`["data: ..."]` when the run was made on other images, labels or splits than these."""
    if not folder.data_file.is_file():
        return []  # made before runs recorded their data
    before = json.loads(folder.data_file.read_text())
    now = data_digest(prepared, training_indices(prepared, fraction, recipe.training.seed, defects))
    if before.get("digest") == now["digest"]:
        return []
    return [f"data: {before.get('images')} images from {before.get('source')!r} there, {now['images']} from "
            f"{now['source']!r} now"]


def _set_aside(run_dir: Path, folder: Path) -> Path:
    """Moves a run folder into `folder` under a new name (nothing is deleted); returns where."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder / f"{run_dir.name}_{stamp}"
    number = 1
    while target.exists():
        number += 1
        target = folder / f"{run_dir.name}_{stamp}_{number}"
    os.replace(run_dir, target)
    return target


def _format(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
