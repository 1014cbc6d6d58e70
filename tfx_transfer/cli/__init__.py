"""The `tfx-transfer` command line: a thin argparse layer over the Python API.

The parser is declared in `parser` (each shared option once), the commands run in `commands`.

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

import os
import sys

from tfx_transfer.cli.parser import build_parser

__all__ = ["build_parser", "main"]


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
