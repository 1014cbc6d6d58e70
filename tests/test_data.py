from __future__ import annotations

import numpy as np
import pytest

from tiny_data import write_bad_folder, write_gtsrb, write_solid_folder
from tfx_transfer.data.augment import make_policy
from tfx_transfer.data.pipeline import EpochStream, class_weights, drop_unreadable, make_dataset, oversample_indices, sample_weights
from tfx_transfer.data.sources import from_arrays, load_source


def _clean(root):
    with pytest.warns(UserWarning):
        return drop_unreadable(load_source(root))


def test_pipeline_yields_raw_pixels_labels_and_sample_weights(tmp_path):
    table = drop_unreadable(load_source(write_solid_folder(tmp_path / "d", per_class=4)))
    dataset = make_dataset(table, image_size=(32, 32), batch_size=5, class_weight="balanced")
    images, labels, weights = next(iter(dataset))
    assert images.shape == (5, 32, 32, 3) and images.dtype.name == "uint8"
    assert 0.0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 255.0
    assert labels.dtype.name == "int32"
    np.testing.assert_allclose(weights.numpy(), 1.0)  # balanced classes
    colours = images.numpy().astype(float).mean(axis=(1, 2))
    for colour, label in zip(colours, labels.numpy()):
        assert np.argmax(colour) == {"blue": 2, "green": 1, "red": 0}[table.class_names[label]]


def test_image_weights_multiply_class_weights_in_training_data_only():
    from dataclasses import replace

    labels = np.array([0, 0, 0, 1])
    table = from_arrays(np.zeros((4, 8, 8, 3), np.uint8), labels)
    table = replace(table, weights=np.array([1.0, 0.5, 0.0, 1 / 3]))
    balanced = class_weights(labels, 2, "balanced")[labels]
    np.testing.assert_allclose(sample_weights(table, [0, 1, 2, 3], "balanced"), balanced * table.weights, rtol=1e-6)
    np.testing.assert_allclose(sample_weights(table, [3, 1], None), [1 / 3, 0.5], rtol=1e-6)
    np.testing.assert_allclose(sample_weights(table, [3, 1], None, image_weights=False), [1.0, 1.0])
    stream = EpochStream(table, [0, 1, 2, 3], (8, 8), batch_size=4, cache="memory")
    _, streamed_labels, weights = next(iter(stream(0)))  # training data: weighted
    order = [int(np.flatnonzero(np.isclose(table.weights, w))[0]) for w in weights.numpy()]
    assert sorted(order) == [0, 1, 2, 3] and streamed_labels.numpy().tolist() == labels[order].tolist()
    assert len(next(iter(make_dataset(table, image_size=(8, 8), batch_size=4)))) == 2  # evaluation: unweighted
    assert len(next(iter(make_dataset(table, image_size=(8, 8), batch_size=4, image_weights=True)))) == 3


def test_bad_input_folder_trains_for_an_epoch_and_lists_skipped_files(tmp_path):
    import keras

    root = write_bad_folder(tmp_path / "bad")
    with pytest.warns(UserWarning) as caught:
        table = drop_unreadable(load_source(root))
    messages = "\n".join(str(w.message) for w in caught)
    assert "empty_class" in messages and "stray_nested" in messages and "truncated.jpg" in messages
    assert sorted(p.rsplit("/", 1)[1] for p, _ in table.skipped) == ["notes.png", "truncated.jpg", "zero_bytes.png"]
    assert any("röntgen" in p for p in table.paths) and any(p.endswith("cmyk.jpg") for p in table.paths)
    dataset = make_dataset(table, image_size=(32, 32), batch_size=8, shuffle=True, augment=make_policy("defects"))
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(table.num_classes, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    seen = sum(int(labels.shape[0]) for _, labels in dataset)
    assert seen == len(table)


def test_gtsrb_pipeline_crops_rois(tmp_path):
    table = drop_unreadable(load_source(write_gtsrb(tmp_path / "g")))
    images, labels = next(iter(make_dataset(table, image_size=(16, 16), batch_size=len(table))))
    # After the ROI crop only the sign's colour remains, no dark background.
    assert float(images.numpy().min()) > 20.0


def test_shuffle_is_seeded_and_reshuffles_each_epoch(tmp_path):
    table = from_arrays(np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1).repeat(4, 1).repeat(4, 2), np.arange(40) % 2)
    def order(dataset):
        return [int(v) for images, _ in dataset for v in images.numpy()[:, 0, 0, 0]]
    first = make_dataset(table, image_size=(4, 4), batch_size=8, shuffle=True, seed=1, cache="memory")
    again = make_dataset(table, image_size=(4, 4), batch_size=8, shuffle=True, seed=1, cache="memory")
    epoch1, epoch2 = order(first), order(first)
    assert sorted(epoch1) == list(range(40))
    assert epoch1 != epoch2 and epoch1 == order(again)


def test_file_cache_is_written_and_reused(tmp_path):
    table = drop_unreadable(load_source(write_solid_folder(tmp_path / "d", per_class=2)))
    cache = tmp_path / "cache" / "train"
    dataset = make_dataset(table, image_size=(8, 8), batch_size=2, cache=cache)
    first = [images.numpy() for images, _ in dataset]
    assert list(cache.parent.glob("train*.index"))
    assert all(np.array_equal(a, b) for a, b in zip(first, [images.numpy() for images, _ in dataset]))


def test_class_weights_and_oversampling():
    labels = np.array([0, 0, 0, 0, 1])
    np.testing.assert_allclose(class_weights(labels, 2, "balanced"), [0.625, 2.5])
    np.testing.assert_allclose(class_weights(labels, 2, {"defect": 3.0}, ["defect", "good"]), [3.0, 1.0])
    with pytest.raises(ValueError, match=r"class_weight key 'scratch' is not a class\. Expected one of \['defect', 'good'\]"):
        class_weights(labels, 2, {"scratch": 2.0}, ["defect", "good"])
    chosen = oversample_indices(labels, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [4, 4]


def test_oversampled_pipeline_balances_classes(tmp_path):
    table = from_arrays(np.zeros((10, 4, 4, 3), np.uint8), [0] * 8 + [1] * 2)
    labels = np.concatenate([l.numpy() for _, l in make_dataset(table, image_size=(4, 4), batch_size=4, oversample=True)])
    assert np.bincount(labels).tolist() == [8, 8]


def test_empty_split_is_explained():
    table = from_arrays(np.zeros((4, 4, 4, 3), np.uint8), [0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"make_dataset got no rows: the split is empty"):
        make_dataset(table, np.array([], dtype=int))


def test_dicom_folder_feeds_the_pipeline(tmp_path):
    from tiny_data import write_dicom

    for label, value in (("normal", 500), ("opacity", 3000)):
        (tmp_path / label).mkdir()
        for i in range(3):
            pixels = np.full((20, 20), value + i, np.uint16)
            pixels[:2] = 0  # a black and a white band give the percentile scaling its range
            pixels[-2:] = 4000
            write_dicom(tmp_path / label / f"{i}.dcm", pixels)
    table = drop_unreadable(load_source(tmp_path))
    assert set(table.decoders) == {"pil"}
    images, labels = next(iter(make_dataset(table, image_size=(20, 20), batch_size=6)))
    centre = images.numpy()[:, 10, 10, 0].astype(int)
    assert all(centre[labels.numpy() == 1] > centre[labels.numpy() == 0].max())
