"""tfx_transfer: transfer learning for computer vision with Keras 3, as a decision backed by evidence.

Names are imported on first use, so `tfx-transfer report` and the metrics/report modules work
without loading TensorFlow. The modules in layers, each depending only on those above it:

    configuration   settings, policies, backbones (registry data), recipe, strategies
    run folders     run_folder; reports: metrics, calibration, render, report, comparison, results
    models          layers, weights, offline_weights, torch_checkpoint, model
    data            sources, images, splits, embedded, synthetic_*, augment, data, features
    training        devices, checkpoint, train, ensemble
    experiments     runner, sweep, demo
    using models    explain, predict, export, recalibrate; startup and cli on top

`TENSORFLOW_FREE` lists the modules that import without TensorFlow (a test checks it).

Example:
    >>> import tfx_transfer
    >>> model = tfx_transfer.load_backbone("mobilenet_v2", weights=None, image_size=64)
    >>> tfx_transfer.unfreeze_top_blocks(model, 2)
    ['block_16', 'top']
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Modules that import neither TensorFlow nor Keras: reading recipes, run folders and reports.
TENSORFLOW_FREE = ("settings", "policies", "backbones", "recipe", "run_folder", "metrics", "render", "report",
                   "comparison", "results", "startup", "torch_checkpoint", "strategies", "calibration", "explain")

#: Public name -> the module that defines it.
_EXPORTS = {
    "BACKBONES": "backbones", "BackboneSpec": "backbones", "ImagePreprocessing": "layers",
    "get_backbone_spec": "backbones", "list_backbones": "backbones",
    "audit_frozen_weights": "model", "find_backbone": "model", "format_trainable_summary": "model",
    "freeze_backbone": "model", "load_backbone": "model", "snapshot_frozen_weights": "model",
    "trainable_summary": "model", "unfreeze_fraction": "model", "unfreeze_from_block": "model",
    "unfreeze_top_blocks": "model", "weights_info": "model", "build_classifier": "model",
    "WeightsInfo": "weights", "available_weights": "weights", "import_weights": "weights",
    "Recipe": "recipe", "load_recipe": "recipe", "SECTIONS": "settings", "Setting": "settings",
    "run": "runner", "compare": "sweep", "run_demo": "demo",
    "build_run_report": "report", "write_run_report": "report",
    "write_comparison_report": "comparison",
    "TrainConfig": "strategies", "plan_phases": "strategies", "train": "train",
    "train_ensemble": "ensemble", "average_models": "ensemble", "load_run": "predict",
    "export_run": "export", "recalibrate": "recalibrate", "gradcam": "explain",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"tfx_transfer.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfx_transfer' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
