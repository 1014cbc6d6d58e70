"""Shared fixtures. Tests never reach the internet: weights come from the offline sources."""

from __future__ import annotations

import os

os.environ["TFX_TRANSFER_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tfx_transfer.config.backbones import BACKBONES  # noqa: E402


def small_image_size(name: str) -> int:
    """The smallest convenient size each family accepts (Inception and Xception need more)."""
    return max(BACKBONES[name].min_image_size, 64) if name not in ("inception_v3", "xception") else 96


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """An empty toolkit cache and an empty Keras cache, so resolution starts from nothing."""
    monkeypatch.setenv("TFX_TRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path


@pytest.fixture
def raw_images():
    return np.random.RandomState(0).uniform(0, 255, size=(2, 64, 64, 3)).astype("float32")


#: From scratch on `write_overlapping_parts`: a finished product_defects run in seconds, with a
#: target-recall threshold and two test-time views (export, recalibrate).
PART_RUN = ["model.backbone=tiny_test", "model.weights=none", "model.image_size=32", "training.epochs=6",
            "training.strategy=scratch", "training.batch_size=8", "evaluation.bootstrap=20", "data.weight_column=null",
            "data.positive_class=scratched", "evaluation.test_time_views=2", "training.ensemble_size=1"]


@pytest.fixture(scope="session")
def part_run(tmp_path_factory):
    """A finished run on overlapping parts (`PART_RUN`); tests that change it work on a copy."""
    import warnings

    from tiny_data import write_overlapping_parts
    from tfx_transfer.experiments.runner import run

    root = tmp_path_factory.mktemp("part_run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run("product_defects", data=write_overlapping_parts(root / "line7"), overrides=PART_RUN,
                   out=root / "run", verbose=0).run_dir


def pytest_collection_modifyitems(config, items):
    """The long tests first (real weights and data, then the other slow ones): with two xdist workers,
    a 5-minute test started last would be the whole suite's tail."""
    def weight(item) -> int:
        return 0 if item.get_closest_marker("integration") else 1 if item.get_closest_marker("slow") else 2

    items.sort(key=weight)  # stable: within each group, the files' own order
