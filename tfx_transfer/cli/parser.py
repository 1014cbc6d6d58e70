"""The `tfx-transfer` argument parser: one sub-command per command, each shared option declared once
(`_SHARED`), and a flag per recipe setting made from `tfx_transfer.config.settings`."""

from __future__ import annotations

import argparse

from tfx_transfer.cli.commands import (_backbones, _compare, _demo, _export, _predict, _probe, _recalibrate, _report,
                                       _results, _review, _run, _showcase, _train, _weights_import, _weights_list)

DESCRIPTION = "The tfx-transfer command line: a thin argparse layer over the Python API."


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
    comparer.add_argument("--relabel", metavar="FILE", help="corrected labels (path,label CSV, or a review's "
                          "review.csv) applied on top of the data [data.relabel]")
    _shared(comparer, "keep_checkpoints")
    comparer.set_defaults(func=_compare)

    reviewer = commands.add_parser("review", parents=[common], help="likely label errors, near-duplicates and "
                                   "outliers among the training and validation images (cross-fitted, with cleanlab)")
    _recipe_options(reviewer, recipe_required=False)
    reviewer.add_argument("--folds", type=int, default=5, help="folds of the cross-fitting (default: %(default)s)")
    reviewer.add_argument("--run", metavar="RUN_DIR", help="cross-fit this finished run's strategy (its recipe and "
                          "data) instead of a linear head on frozen features")
    reviewer.set_defaults(func=_review)


def _add_model_commands(commands, common) -> None:
    predictor = commands.add_parser("predict", parents=[common], help="score new images with a finished run's model")
    predictor.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (model.keras and model.json)")
    predictor.add_argument("inputs", nargs="+", metavar="INPUT", help="folders (searched recursively), CSV files, images")
    predictor.add_argument("--out", default="predictions.csv", help="the CSV to write (default: %(default)s); an input, "
                           "or an existing file that is not a predictions CSV, is never replaced without --overwrite")
    predictor.add_argument("--overwrite", action="store_true", help="replace --out even if it is not a predictions CSV")
    predictor.add_argument("--path-column", default="path", help="a CSV input's column of image paths (default: %(default)s)")
    predictor.add_argument("--raw", action="store_true", help="the model's probabilities before calibration")
    predictor.add_argument("--site", help="decide at the operating point `recalibrate` chose for this site")
    predictor.add_argument("--select", type=int, metavar="N", help="also write to_label.csv beside --out: the N images "
                           "to label first (uncertain at the operating point, and unlike each other)")
    predictor.add_argument("--drift", action=argparse.BooleanOptionalAction, default=True,
                           help="compare the batch with the run's validation images and write drift.json beside --out "
                           "(one more forward pass for the features; default: on)")
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
    parser = argparse.ArgumentParser(prog="tfx-transfer", description=DESCRIPTION)
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
