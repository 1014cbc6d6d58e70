"""Built-in data for the recipes, prepared offline on first use into the toolkit's cache.

    elpv            real electroluminescence images of solar cells (ELPV, Deitsch et al. 2019,
                    CC BY-NC-SA 4.0, from the `elpv-dataset` package): `good/` and `defective/`
                    folders, defective when the experts' defect probability is at least 0.5;
                    `labels.csv` records each cell's probability, module type (mono/poly) and
                    label confidence |2p - 1| (1 for p = 0 or 1, 1/3 for the unsure 1/3 and 2/3)
    traffic_signs   generated signs in the GTSRB official layout (`synthetic_signs`)
    chest_xray      generated radiographs in the Kermany layout (`synthetic_xray`)

A recipe names one as `data.source: embedded:<name>`. Preparation is deterministic (fixed seeds)
and atomic: files are written to a staging folder that is renamed when complete, so an
interrupted preparation is redone, never half-used.

Example:
    >>> prepare("chest_xray")  # doctest: +SKIP
    PosixPath('/home/me/.cache/tfx_transfer/embedded/chest_xray-v1')
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tfx_transfer.config.paths import cache_dir

PREFIX = "embedded:"
#: Bump a version when its generator changes, so stale caches are not reused.
VERSIONS = {"elpv": 2, "traffic_signs": 1, "chest_xray": 1}


def _write_elpv(root: Path) -> None:
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        raise FileNotFoundError(
            "The built-in product-defect data is the ELPV data set: pip install elpv-dataset==1.0.0.post1 "
            "(`make install` does it)."
        ) from None
    images, probabilities, types = load_dataset()
    rows = []
    for index, (image, probability, module_type) in enumerate(zip(images, probabilities, types)):
        label = "defective" if probability >= 0.5 else "good"
        name = f"cell{index:04d}_{module_type}.png"
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image, np.uint8)).save(root / label / name)
        # How far the experts were from undecided (0.5): a training weight for `data.weight_column`.
        confidence = abs(2 * float(probability) - 1)
        rows.append({"path": f"{label}/{name}", "label": label, "defect_probability": f"{float(probability):.4f}",
                     "module_type": str(module_type), "label_confidence": f"{confidence:.4f}"})
    with open(root / "labels.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_traffic_signs(root: Path) -> None:
    from tfx_transfer.data.synthetic_signs import write_gtsrb

    write_gtsrb(root, seed=20261129)


def _write_chest_xray(root: Path) -> None:
    from tfx_transfer.data.synthetic_xray import write_kermany

    write_kermany(root, seed=20261129)


_WRITERS = {"elpv": _write_elpv, "traffic_signs": _write_traffic_signs, "chest_xray": _write_chest_xray}


def prepare(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of built-in data set `name`, written on first use.

    Args:
        name: `elpv`, `traffic_signs` or `chest_xray` (an `embedded:` prefix is accepted).
        root: Where to keep it; by default `<cache>/embedded/` (`TFX_TRANSFER_CACHE`).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if name not in _WRITERS:
        import difflib

        close = difflib.get_close_matches(name, list(_WRITERS), n=1)
        hint = f" Did you mean {PREFIX}{close[0]}?" if close else ""
        raise ValueError(f"Unknown built-in data set {name!r}.{hint} Available: "
                         f"{', '.join(PREFIX + n for n in _WRITERS)}")
    base = Path(root) if root is not None else cache_dir() / "embedded"
    target = base / f"{name}-v{VERSIONS[name]}"
    if target.is_dir():
        return target
    staging = base / f".{target.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _WRITERS[name](staging)
    try:
        staging.rename(target)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_source(source: str) -> str:
    """A recipe's `data.source` as something `load_source` reads: built-in names become folders."""
    if source.startswith(PREFIX):
        return str(prepare(source))
    return source
