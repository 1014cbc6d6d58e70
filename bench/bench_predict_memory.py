"""Does `predict` stream? Peak memory of scoring 1,000 images against 20,000 (ELPV cells repeated).

Trains a small product_defects run (feature extraction at 64 px), links the real ELPV cells into
two folders of `--small` and `--large` files, and runs `tfx-transfer predict` on each in a fresh
process, reporting its peak resident memory (ru_maxrss) and time. The ratio is measured in one run
on this machine. Run:

    python bench/bench_predict_memory.py [--small 1000] [--large 20000] [--work /tmp/bench_predict]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def _folder(cells: list[Path], count: int, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        link = folder / f"cell{index:06d}{cells[index % len(cells)].suffix}"
        if not link.exists():
            link.symlink_to(cells[index % len(cells)])
    return folder


def _predict(run_dir: Path, folder: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one `tfx-transfer predict` in a fresh process."""
    code = ("import resource, sys; from tfx_transfer.cli import main; status = main(sys.argv[1:]); "
            "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(status)")
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", code, "predict", str(run_dir), str(folder), "--out", str(out)],
                               capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    peak_kb = int(next(line for line in completed.stdout.splitlines() if line.startswith("peak_kb")).split()[1])
    return peak_kb / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--work", default="/tmp/bench_predict")
    args = parser.parse_args()
    os.environ.setdefault("TFX_TRANSFER_OFFLINE", "1")
    from tfx_transfer.data.embedded import resolve_source
    from tfx_transfer.experiments.runner import run

    work = Path(args.work)
    run_dir = work / "run"
    if not (run_dir / "model.json").is_file():
        run("product_defects", strategy="feature_extraction", quick=True, out=run_dir, verbose=0,
            overrides=["evaluation.test_time_views=1"])
    cells = sorted(p for p in Path(resolve_source("embedded:elpv")).rglob("*.png"))
    print(f"{len(cells)} real ELPV cells, repeated")
    results = {}
    for count in (args.small, args.large):
        folder = _folder(cells, count, work / f"cells_{count}")
        results[count] = _predict(run_dir, folder, work / f"predictions_{count}.csv")
        print(f"{count:>6} images: peak RSS {results[count][0]:.0f} MB, {results[count][1]:.0f} s")
    small, large = results[args.small][0], results[args.large][0]
    print(f"peak RSS ratio {args.large} / {args.small} images: {large / small:.3f}")


if __name__ == "__main__":
    main()
