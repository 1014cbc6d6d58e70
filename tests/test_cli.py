from __future__ import annotations

import pytest

from tfx_transfer.backbones import list_backbones
from tfx_transfer.cli import main


def test_backbones_prints_one_row_per_backbone(capsys):
    assert main(["backbones"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["backbone", "image_size", "preprocessing", "blocks", "params"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert sorted(rows) == list_backbones()
    assert rows["vgg16"].split()[1:4] == ["224x224", "caffe", "5"]
    assert "14.7M" in rows["vgg16"]


def test_weights_list_names_the_fix_for_missing_weights(capsys, isolated_cache):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "tfx-transfer weights import FILE --backbone resnet50" in out


def test_weights_import_reports_errors_without_a_traceback(capsys, tmp_path, isolated_cache):
    bad = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    bad.write_bytes(b"garbage")
    assert main(["weights", "import", str(bad), "--backbone", "vgg16"]) == 2
    assert "error: Hash mismatch" in capsys.readouterr().err


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit):
        main(["frobnicate"])
