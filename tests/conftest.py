"""Shared fixtures. Tests never reach the internet: weights come from the offline sources."""

from __future__ import annotations

import os

os.environ["TFX_TRANSFER_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tfx_transfer.backbones import BACKBONES  # noqa: E402


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
