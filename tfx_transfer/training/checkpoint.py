"""Run checkpoints that survive `kill -9`: every file is complete or absent, never half-written.

A checkpoint is a folder `checkpoints/epoch-NNNN/` holding the classifier's weights, the
optimizer's variables and `state.json` (phase, epoch, trainable blocks, history, best score). It is
written under a temporary name and renamed into place, and `checkpoints/latest` (a one-line file,
itself replaced atomically) names the newest complete one. Older folders are pruned.

Weight files hold the layers' weights only. Keras writes a compiled model's optimizer variables
into its `.weights.h5` too, which more than doubled every fine-tuning checkpoint (Adam keeps two
slots per unfrozen weight; ResNet50 with its top block unfrozen: 215 MB instead of 95 MB), and
loads them back into whatever optimizer the model has when it reads the file, so reading an older
epoch's best weights would have rewound the optimizer. The optimizer's state lives in
`optimizer.npz` alone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np

from tfx_transfer.runs.folder import current_umask, write_atomically


def _layers_only(model: keras.Model) -> keras.Model:
    """An uncompiled view over the same layers, so Keras saves and loads no optimizer state."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


def save_model_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Writes `model`'s layer weights, without optimizer state, to a `.weights.h5` file atomically.

    Example:
        >>> save_model_weights(model, run_dir / "best.weights.h5")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}")  # Keras insists on the .weights.h5 ending
    _layers_only(model).save_weights(staging)
    os.replace(staging, path)


def load_model_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Reads layer weights written by `save_model_weights` (or by Keras) into `model`; any
    optimizer state in the file is ignored and the model's own optimizer is left as it is."""
    _layers_only(model).load_weights(path)


def save_checkpoint(run_dir: Path, model: keras.Model, optimizer, state: dict, keep: int = 2) -> Path:
    """Saves weights, optimizer variables and `state` as the newest checkpoint of `run_dir`."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{state['global_epoch']:04d}"
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's folder is private; a kept checkpoint follows the umask
    save_model_weights(model, staging / "model.weights.h5")
    variables = [np.asarray(keras.ops.convert_to_numpy(v)) for v in optimizer.variables] if optimizer is not None else []
    np.savez(staging / "optimizer.npz", *variables)
    (staging / "state.json").write_text(json.dumps(state, indent=2))
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    write_atomically(root / "latest", name)
    for old in sorted(p for p in root.glob("epoch-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    return folder if (folder / "state.json").is_file() else None


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether a training folder holds a complete checkpoint to resume from: its own, or an
    ensemble member's (`member-N/checkpoints/`). A `checkpoints/` folder alone is not enough: a run
    killed while writing its first checkpoint leaves one without `latest`.
    """
    run_dir = Path(run_dir)
    folders = [run_dir, *sorted(run_dir.glob("member-*"))]
    return any(latest_checkpoint(folder) is not None for folder in folders)


def load_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "state.json").read_text())


def restore_optimizer(optimizer, model: keras.Model, checkpoint: Path) -> None:
    """Builds the optimizer for the model's trainable variables and restores its saved variables."""
    with np.load(checkpoint / "optimizer.npz") as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if not values:
        return
    optimizer.build(model.trainable_variables)
    if len(values) != len(optimizer.variables):
        raise ValueError(
            f"Checkpoint {checkpoint} has {len(values)} optimizer variables; the rebuilt optimizer has "
            f"{len(optimizer.variables)}. The run's configuration changed since it was saved."
        )
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)
