"""tfx_transfer: transfer learning for computer vision with Keras 3, as a decision backed by evidence.

Public names come from here (`import tfx_transfer as tt`; `tt.run`, `tt.compare`, `tt.load_run`);
they are imported on first use, so `tfx-transfer report` and the reporting layer work without
loading TensorFlow. The subpackages are layers, each importing only from those below it (a test
checks this with import-linter's contracts in setup.cfg):

    cli             the command line on top
    deploy          predict, export (+ parity gate), recalibrate
    experiments     runner (one run), sweep (a comparison), probe, review (the data), demo
    reporting | training
                    run and comparison reports, results page (TensorFlow-free) | devices,
                    checkpoint, features, train, ensemble, anomaly
    runs            RunFolder (every file of a run folder), ModelInfo (model.json), TensorFlow-free
    evaluation      metrics, calibration (TensorFlow-free), explain (Grad-CAM), scoring
    models | data   layers, weights, classifier + slicing, taps | images, sources, splits,
                    embedded, augment, tf.data pipeline
    config          settings, policies, backbones, recipe, strategies, paths (TensorFlow-free)
    startup|console TensorFlow started quietly; progress lines, plain without a terminal

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
TENSORFLOW_FREE = (
    "config.settings", "config.policies", "config.backbones", "config.recipe", "config.strategies", "config.paths",
    "runs.folder", "runs.model_info", "evaluation.metrics", "evaluation.calibration", "evaluation.explain",
    "reporting.render", "reporting.report", "reporting.run_page", "reporting.comparison", "reporting.results",
    "reporting.probe_page", "reporting.review_page", "evaluation.label_review", "evaluation.selection",
    "evaluation.drift", "models.torch_checkpoint", "startup", "console")

#: Public name -> the module that defines it.
_EXPORTS = {
    "BACKBONES": "config.backbones", "BackboneSpec": "config.backbones", "ImagePreprocessing": "models.layers",
    "get_backbone_spec": "config.backbones", "list_backbones": "config.backbones",
    "audit_frozen_weights": "models.classifier", "find_backbone": "models.classifier", "format_trainable_summary": "models.classifier",
    "freeze_backbone": "models.classifier", "load_backbone": "models.classifier", "snapshot_frozen_weights": "models.classifier",
    "trainable_summary": "models.classifier", "unfreeze_fraction": "models.classifier", "unfreeze_from_block": "models.classifier",
    "unfreeze_top_blocks": "models.classifier", "weights_info": "models.classifier", "build_classifier": "models.classifier",
    "WeightsInfo": "models.weights", "available_weights": "models.weights", "import_weights": "models.weights",
    "Recipe": "config.recipe", "load_recipe": "config.recipe", "SECTIONS": "config.settings", "Setting": "config.settings",
    "run": "experiments.runner", "compare": "experiments.sweep", "run_demo": "experiments.demo",
    "build_run_report": "reporting.report", "write_run_report": "reporting.report",
    "write_comparison_report": "reporting.comparison",
    "TrainConfig": "config.strategies", "plan_phases": "config.strategies", "train": "training.train",
    "train_ensemble": "training.ensemble", "average_models": "training.ensemble", "load_run": "deploy.predict",
    "export_run": "deploy.export", "recalibrate": "deploy.recalibrate", "gradcam": "evaluation.explain",
    "probe": "experiments.probe", "ModelInfo": "runs.model_info", "RunFolder": "runs.folder",
    "load_source": "data.sources", "drop_unreadable": "data.pipeline", "make_dataset": "data.pipeline",
    "split_table": "data.splits", "make_policy": "data.augment",
    "review": "experiments.review", "apply_corrections": "data.relabel", "select_for_labelling": "deploy.predict",
    "check_drift": "evaluation.drift",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        if _EXPORTS[name] not in TENSORFLOW_FREE:
            # As the command line does: TensorFlow's native start-up lines (cuInit, oneDNN) are captured.
            from tfx_transfer.startup import start_tensorflow

            start_tensorflow()
        value = getattr(importlib.import_module(f"tfx_transfer.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfx_transfer' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
