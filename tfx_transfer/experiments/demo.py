"""The demo: every recipe on its built-in data, strategies compared, ending with one report.

Each recipe's comparison runs in its own worker process. On a small CPU most of a quick run's time
goes into building Keras training graphs, which is single-threaded Python; with the recipes side
by side, both cores of a 2-core machine stay busy (the TensorFlow thread pools are split between
the workers so they do not fight over the cores).

Example:
    >>> page = run_demo("runs/demo", quick=True)  # doctest: +SKIP
    >>> page.name  # doctest: +SKIP
    'report.html'
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

STRATEGIES = "scratch,feature_extraction,fine_tune"


def plan(quick: bool) -> dict:
    """What each recipe's comparison runs: the quick demo skips scratch on the small subset."""
    if quick:
        return {"strategies": STRATEGIES, "fractions": (0.25, 1.0), "seeds": 1, "largest_only": ("scratch",)}
    return {"strategies": STRATEGIES, "fractions": (0.1, 0.25, 0.5, 1.0), "seeds": 2, "largest_only": ()}


def _prefixed(name: str):
    def log(line: str) -> None:
        print(f"[{name}] {line}", flush=True)
    return log


def _compare_one(recipe_path: str, out: str, quick: bool, threads: int | None) -> None:
    """One recipe's comparison; runs in a worker process (or in this one with one job)."""
    import logging

    from tfx_transfer.startup import start_tensorflow

    start_tensorflow()  # a spawned worker starts TensorFlow itself: as quietly as the CLI does
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # as the CLI does: retracing notices are noise here
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from tfx_transfer.experiments.sweep import compare

    name = Path(recipe_path).stem
    log = _prefixed(name)
    log("scratch vs feature extraction vs fine-tuning on its built-in data")
    # A demo folder from an older version may hold runs of an older recipe: set them aside and
    # train them again rather than stop, since the demo's promise is to run with no questions.
    report = compare(recipe_path, out=out, quick=quick, log=log, stale="set_aside", **plan(quick))
    log(report["verdict"]["text"])


def run_demo(out: str | os.PathLike = "runs/demo", quick: bool = False, jobs: int | None = None,
             recipes: list[str | os.PathLike] | None = None) -> Path:
    """Compares the strategies of every recipe on its built-in data; returns the overview page.

    Args:
        out: Folder for each recipe's comparison (`out/<recipe>/`) and the overview report.
        quick: The recipes' quick settings (small images, few epochs, one seed).
        jobs: Recipes compared at once, each in a worker process; default: one per recipe, at
            most one more than the CPU cores (a worker often waits on single-threaded Python).
        recipes: Recipe files; default: the built-in recipes.

    Raises:
        RuntimeError: naming every recipe whose comparison failed (the others still finish).
    """
    from tfx_transfer.reporting.comparison import build_comparison, find_run_dirs, write_overview
    from tfx_transfer.config.recipe import list_recipes

    out = Path(out)
    paths = [str(p) for p in (recipes if recipes is not None else list_recipes())]
    cores = os.cpu_count() or 1
    jobs = max(1, min(len(paths), jobs if jobs is not None else cores + 1))
    threads = max(1, cores // jobs) if jobs > 1 else None
    tasks = {path: str(out / Path(path).stem) for path in paths}
    failures = {}

    def failed(path: str, error: BaseException) -> None:
        failures[Path(path).stem] = error
        print(f"[{Path(path).stem}] failed: {type(error).__name__}: {error}", flush=True)

    if jobs == 1:
        for path, folder in tasks.items():
            try:
                _compare_one(path, folder, quick, threads)
            except Exception as error:  # noqa: BLE001 - reported with the recipe's name, the others go on
                failed(path, error)
    else:
        # spawn: a forked TensorFlow runtime is not safe to use in the child.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(_compare_one, path, folder, quick, threads): path for path, folder in tasks.items()}
            for future in as_completed(futures):
                if future.exception() is not None:
                    failed(futures[future], future.exception())
    if failures:
        raise RuntimeError(
            f"The comparison of {', '.join(sorted(failures))} failed (see the messages above); the other recipes' "
            f"reports are in {out}. Rerun the same command to continue: finished runs are kept."
        )
    comparisons = [build_comparison(find_run_dirs(folder)) for folder in tasks.values()]
    return write_overview(out, comparisons)

