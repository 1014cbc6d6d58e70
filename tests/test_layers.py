"""The layer contract (setup.cfg's [importlinter] contracts, checked with import-linter) and the
TensorFlow-free layers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package under `root` (found first on the path) with the repository's contracts."""
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "setup.cfg"), "--no-cache", "--no-logo"],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})


def test_the_layer_contract_holds():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize("module, line, message", [
    # configuration is the bottom layer: reaching up to training breaks it
    ("config/settings.py", "from tfx_transfer.training import train", "tfx_transfer.config is not allowed to import "
     "tfx_transfer.training"),
    # reporting and training are independent siblings, so that reports never need TensorFlow
    ("training/train.py", "from tfx_transfer.reporting import render", "tfx_transfer.training is not allowed to import "
     "tfx_transfer.reporting"),
    # imports inside functions count: a lazy import of a higher layer is an upward import too
    ("runs/folder.py", "def _upward():\n    from tfx_transfer.deploy import predict", "tfx_transfer.runs is not allowed "
     "to import tfx_transfer.deploy"),
    # predict and recalibrate once imported each other; a cycle inside a layer breaks the second contract
    ("deploy/predict.py", "def _cycle():\n    from tfx_transfer.deploy import recalibrate", "No cycles are allowed in "
     "tfx_transfer.deploy"),
])
def test_the_layer_contract_fails_on_an_upward_import(tmp_path, module, line, message):
    shutil.copytree(ROOT / "tfx_transfer", tmp_path / "tfx_transfer", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "tfx_transfer" / module
    target.write_text(target.read_text() + f"\n\n{line}\n")
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    assert message in result.stdout, result.stdout[-3000:]


def test_the_tensorflow_free_modules_import_where_tensorflow_cannot():
    import tfx_transfer

    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'tf_keras'):\n"
        "    sys.modules[name] = None  # any import of them now raises ImportError\n"
        "import importlib, tfx_transfer\n"
        "for module in tfx_transfer.TENSORFLOW_FREE:\n"
        "    importlib.import_module(f'tfx_transfer.{module}')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    # Every module of the TensorFlow-free layers is listed (a new one there must import without it).
    listed = set(tfx_transfer.TENSORFLOW_FREE)
    for layer in ("config", "runs", "reporting"):
        for path in (ROOT / "tfx_transfer" / layer).glob("*.py"):
            if path.stem != "__init__":
                assert f"{layer}.{path.stem}" in listed, f"{layer}.{path.stem} is missing from TENSORFLOW_FREE"
