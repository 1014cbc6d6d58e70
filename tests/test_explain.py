"""Grad-CAM: maps for every registry backbone, and maps that find the evidence a model was taught."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import small_image_size

from tfx_transfer.config.backbones import BACKBONES
from tfx_transfer.reporting.comparison import write_comparison_report
from tfx_transfer.training.ensemble import average_models
from tfx_transfer.evaluation.explain import BORDER_MIN_CELLS, MIN_CELLS, border_share, gradcam, peak, target_block
from tfx_transfer.models.classifier import build_classifier, feature_extractor, find_backbone


def _images(count, size, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (count, size, size, 3)).astype("uint8")


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_maps_have_the_images_size_and_lie_in_zero_one(method):
    model = build_classifier("tiny_test", 3, None, 48, 0.2, seed=0)
    maps = gradcam(model, _images(5, 48), method=method, batch_size=2)
    assert maps.shape == (5, 48, 48) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and np.allclose(maps.reshape(5, -1).max(axis=1), 1.0)
    cells = gradcam(model, _images(5, 48), method=method, upsample=False)
    assert cells.shape[1] < 48 and cells.shape[1] == cells.shape[2]


def test_an_ensembles_map_is_the_mean_of_its_members():
    first = build_classifier("tiny_test", 2, None, 32, 0.2, seed=0)
    second = build_classifier("tiny_test", 2, None, 32, 0.2, seed=1)
    first.name, second.name = "member_1", "member_2"  # as train_ensemble names them
    ensemble = average_models([first, second])
    images = _images(3, 32)
    raw = [gradcam(member, images, class_index=1, upsample=False) for member in (first, second)]
    both = gradcam(ensemble, images, class_index=1, upsample=False)
    mean = (raw[0] + raw[1]) / 2  # each member's maps are already scaled to [0, 1]
    np.testing.assert_allclose(both, mean / mean.reshape(3, -1).max(axis=1)[:, None, None], atol=1e-6)


def test_the_default_block_is_the_last_unless_its_map_is_too_coarse():
    assert target_block(build_classifier("mobilenet_v2", 2, None, 224, seed=0)) == "top"  # 7x7 cells
    small = build_classifier("mobilenet_v2", 2, None, 64, seed=0)  # the last block has 2x2 cells
    assert target_block(small) == "block_5"  # 8x8 cells at 64 px
    assert target_block(small, "block_3") == "block_3"
    assert MIN_CELLS == 7


def test_bad_requests_are_explained():
    model = build_classifier("tiny_test", 2, None, 32, 0.2, seed=0)
    with pytest.raises(ValueError, match=r"Unknown method 'cam'. Expected one of gradcam, gradcam\+\+"):
        gradcam(model, _images(1, 32), method="cam")
    with pytest.raises(ValueError, match=r"tiny_test has no block 'conv9' with a spatial output. Its blocks: stem, "):
        gradcam(model, _images(1, 32), block="conv9")
    with pytest.raises(ValueError, match=r"Expected images of shape \(n, 32, 32, 3\) for this model. Received: \(1, 40, 40, 3\)"):
        gradcam(model, _images(1, 40))


def test_border_share_counts_heat_by_where_each_cells_centre_lies():
    heat = np.zeros((3, 7, 7))
    heat[0, 0, :] = 1.0  # top row of cells: border
    heat[1, 3, 3] = 1.0  # the centre
    heat[2] = 1.0  # evenly spread: the border's share of the cells
    shares = border_share(heat)
    assert shares[0] == 1.0 and shares[1] == 0.0 and shares[2] == pytest.approx(24 / 49)
    assert np.isnan(border_share(np.zeros((1, 4, 4)))[0])
    assert peak(np.pad(np.ones((2, 2)), ((0, 6), (3, 3)))) == (0.5, 3.5)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_registry_backbone_gives_maps_through_its_nested_model(backbone):
    size = small_image_size(backbone)
    model = build_classifier(backbone, 2, None, size, 0.2, seed=0)
    for method in ("gradcam", "gradcam++"):
        maps = gradcam(model, _images(2, size), method=method)
        assert maps.shape == (2, size, size) and np.isfinite(maps).all()


def _patch_data(count, size, seed, border=False):
    """Textured images; the odd ones carry a red patch (a third of the side), the class's only
    evidence: anywhere in the image, or (`border`) as a marker along the top or bottom edge."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(60, 190, (count, size // 8, size // 8, 3))
    images = np.kron(coarse, np.ones((1, 8, 8, 1))) + rng.normal(0, 12, (count, size, size, 3))
    labels = np.arange(count) % 2
    boxes = np.zeros((count, 4), int)
    side = size // 3
    for i in np.flatnonzero(labels):
        if border:
            top = rng.integers(0, 4) if rng.random() < 0.5 else size - side // 2 - rng.integers(0, 4)
            boxes[i] = (top, rng.integers(0, size - side), 0, 0)
            boxes[i, 2:] = boxes[i, :2] + (side // 2, side)
        else:
            boxes[i, :2] = rng.integers(0, size - side, 2)
            boxes[i, 2:] = boxes[i, :2] + side
        images[i, boxes[i, 0]:boxes[i, 2], boxes[i, 1]:boxes[i, 3]] = (235, 30, 30)
    return np.clip(images, 0, 255).astype("uint8"), labels, boxes


def _taught(backbone, weights, size, border=False, epochs=0):
    """A classifier that learned the patch: a new head on frozen ImageNet features, or (no offline
    ImageNet weights) the whole network trained from scratch for `epochs`."""
    keras.utils.set_random_seed(0)
    images, labels, _ = _patch_data(240, size, 0, border)
    model = build_classifier(backbone, 2, weights, size, 0.0, seed=0, train_batchnorm=weights is None)
    if weights is None:
        # Every layer, BatchNorm included (setting `trainable` on a Keras 3 model leaves layers
        # that were frozen one by one frozen).
        for layer in find_backbone(model)[0].layers:
            layer.trainable = True
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        model.fit(images, labels, epochs=epochs, batch_size=16, verbose=0)
    else:
        head = model.get_layer("head")
        head.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        head.fit(feature_extractor(model).predict(images, verbose=0), labels, epochs=150, batch_size=32, verbose=0)
    return model


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(("backbone", "weights", "size", "epochs"), [
    ("mobilenet_v2", "imagenet", 224, 0),
    ("xception", "imagenet", 224, 0),
    ("resnet50", None, 64, 8),  # no offline ImageNet weights: trained from scratch
    # efficientnet_b0 (no offline weights either) trained from scratch the same way reaches test
    # accuracy 1.0, but its peak falls in the patch for only about half the images at any block:
    # left out until it can be taught differently (issue 19 stays open for it).
])
def test_the_peak_falls_in_the_patch_that_decides_the_class(backbone, weights, size, epochs):
    model = _taught(backbone, weights, size, epochs=epochs)
    images, labels, boxes = _patch_data(80, size, 1)
    assert (model.predict(images, verbose=0).argmax(axis=1) == labels).mean() >= 0.9  # it learned the patch
    positive = np.flatnonzero(labels == 1)
    maps = gradcam(model, images[positive], class_index=1)
    inside = [top <= row < bottom and left <= column < right
              for (row, column), (top, left, bottom, right) in zip(map(peak, maps), boxes[positive])]
    assert np.mean(inside) >= 0.9


@pytest.mark.slow
@pytest.mark.integration
def test_a_model_that_reads_a_border_marker_gets_a_high_border_share():
    size = 224
    images, labels, _ = _patch_data(80, size, 1, border=True)
    marker = _taught("mobilenet_v2", "imagenet", size, border=True)
    block = target_block(marker, min_cells=BORDER_MIN_CELLS)  # as the run's report measures it
    assert block == "block_12"  # 14x14 cells
    assert (marker.predict(images, verbose=0).argmax(axis=1) == labels).mean() >= 0.9
    shares = border_share(gradcam(marker, images[labels == 1], class_index=1, block=block, upsample=False))
    central_images, central_labels, _ = _patch_data(80, size, 1)
    central = _taught("mobilenet_v2", "imagenet", size)
    central_shares = border_share(gradcam(central, central_images[central_labels == 1], class_index=1, block=block,
                                          upsample=False))
    assert np.nanmean(shares) >= 0.65 and np.nanmean(shares) > np.nanmean(central_shares) + 0.15


def test_a_finished_run_reports_where_its_model_looks(part_run):
    report = json.loads((part_run / "report.json").read_text())
    summary = report["explanations"]
    wrong = [item["index"] for item in report["confidently_wrong"]]
    shown = [item["index"] for item in summary["gallery"]]
    assert shown[:len(wrong)] == wrong  # every confidently wrong image, then a few right ones per class
    assert 0 < len(shown) - len(wrong) <= 2 * len(report["data"]["class_names"])
    assert set(summary["border_share"]) == {"ok", "scratched"} and 0 < summary["border_baseline"] < 1
    for row in summary["border_share"].values():
        assert row["images"] > 0 and 0 <= row["mean"] <= 1
    arrays = np.load(part_run / "explanations.npz")
    assert arrays["gallery_pixels"].shape[0] == arrays["gallery_heat"].shape[0] == len(shown)
    html = (part_run / "report.html").read_text()
    assert "Where the model looks (Grad-CAM)" in html and html.count("<figure>") >= len(shown)
    assert "| scratched |" in (part_run / "report.md").read_text().split("## Where the model looks")[1]


def test_a_comparison_shows_the_best_runs_heatmaps_and_each_strategys_border_share(part_run, tmp_path):
    comparison = write_comparison_report(tmp_path / "comparison", [part_run])
    assert comparison["best_run_dir"] == str(part_run)
    html = (tmp_path / "comparison" / "report.html").read_text()
    assert "Where the best configuration looks (Grad-CAM)" in html and "heat in the border" in html
    assert "| strategy | predicted ok | predicted scratched | if spread evenly |" in (tmp_path / "comparison" / "report.md").read_text()


@pytest.mark.slow
def test_a_failing_grad_cam_costs_the_heatmaps_not_the_run(tmp_path, monkeypatch):
    from conftest import PART_RUN
    from tiny_data import write_overlapping_parts

    from tfx_transfer.evaluation import explain
    from tfx_transfer.experiments.runner import run

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(explain, "explain_test_images", broken)
    with pytest.warns(UserWarning, match=r"Grad-CAM heatmaps were not made \(RuntimeError: out of memory\); the run's "
                                         "results are unaffected"):
        result = run("product_defects", data=write_overlapping_parts(tmp_path / "line7", count=20),
                     overrides=PART_RUN, out=tmp_path / "run", verbose=0)
    assert (tmp_path / "run" / "report.json").is_file() and "explanations" in result.report
    assert result.report["explanations"] is None and not (tmp_path / "run" / "explanations.npz").exists()
