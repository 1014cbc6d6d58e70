"""Freeze-depth advice: linear probes per block, the advice they give, and its verification."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import PART_RUN
from tiny_data import write_overlapping_parts

from tfx_transfer.config.backbones import BACKBONES
from tfx_transfer.cli import main
from tfx_transfer.experiments.probe import advise, probe, probe_curve, verification_depths
from tfx_transfer.experiments.sweep import AUTO, compare, parse_strategies

# The session's part run, with the probes' settings: tiny_test, random weights, 32 px.
SETTINGS = [item for item in PART_RUN if not item.startswith("training.strategy")]


def test_a_block_whose_features_carry_the_class_scores_higher():
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    blocks = {"noise": rng.normal(size=(200, 8)), "weak": rng.normal(size=(200, 8)) + 0.3 * y[:, None],
              "strong": rng.normal(size=(200, 8)) + 1.5 * y[:, None]}
    train = {name: values[:100] for name, values in blocks.items()}
    validation = {name: values[100:] for name, values in blocks.items()}
    curve = probe_curve(train, y[:100], validation, y[100:], "roc_auc", positive_index=1)
    values = [row["value"] for row in curve]
    assert [row["block"] for row in curve] == ["noise", "weak", "strong"] and values[0] < values[1] < values[2]
    assert 0.35 < values[0] < 0.65 and values[2] > 0.95
    assert all(row["low"] <= row["value"] <= row["high"] for row in curve) and curve[0]["channels"] == 8


@pytest.mark.parametrize(("values", "unfreeze", "strategy"), [
    ([0.6, 0.7, 0.9, 0.8, 0.75], 2, "fine_tune"),       # peak in the middle: train the blocks after it
    ([0.6, 0.7, 0.8, 0.85, 0.9], 0, "feature_extraction"),  # still rising at the top: the top features transfer
    ([0.6, 0.9, 0.895, 0.8, 0.7], 2, "fine_tune"),      # within the tolerance of the best, the deeper block
])
def test_the_advice_unfreezes_the_blocks_after_the_peak(values, unfreeze, strategy):
    advice = advise([{"block": f"b{i}", "value": v} for i, v in enumerate(values)])
    assert advice["unfreeze_blocks"] == unfreeze and advice["strategy"] == strategy
    assert f"b{len(values) - 1 - unfreeze}" == advice["peak_block"]
    assert ("feature extraction suffices" in advice["text"]) == (unfreeze == 0)


def test_no_scored_probe_is_explained():
    with pytest.raises(ValueError, match="No probe could be scored on validation"):
        advise([{"block": "a", "value": None}])


def test_verification_checks_the_advice_and_a_depth_either_side():
    assert verification_depths(3, 6) == [2, 3, 4]
    assert verification_depths(0, 6) == [0, 1, 2] and verification_depths(6, 6) == [4, 5, 6]


def test_fine_tune_auto_is_parsed_and_other_words_are_refused():
    assert parse_strategies("feature_extraction,fine_tune:auto")[1] == (
        "fine_tune:auto", {"training.strategy": "fine_tune", "training.unfreeze_blocks": AUTO})
    with pytest.raises(ValueError, match=r"e.g. fine_tune:4 or fine_tune:auto. Received: 'fine_tune:many'"):
        parse_strategies("fine_tune:many")
    with pytest.raises(ValueError, match=r"Received: 'scratch:auto'"):
        parse_strategies("scratch:auto")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return write_overlapping_parts(tmp_path_factory.mktemp("probe") / "line7")


def test_probe_scores_every_block_and_writes_its_report(parts, tmp_path):
    record = probe("product_defects", data=parts, overrides=SETTINGS, out=tmp_path / "probe", verbose=0, log=lambda *a: None)
    blocks = [name for name, _ in BACKBONES["tiny_test"].blocks]
    assert [row["block"] for row in record["curve"]] == blocks
    assert record["metric"] == "roc_auc" and record["split"] == "validation"
    assert all(0 <= row["value"] <= 1 for row in record["curve"])
    assert record["advice"]["unfreeze_blocks"] == len(blocks) - 1 - blocks.index(record["advice"]["peak_block"])
    saved = json.loads((tmp_path / "probe" / "report.json").read_text())
    assert saved["advice"] == record["advice"]
    html = (tmp_path / "probe" / "report.html").read_text()
    assert "Probe score by block" in html and "data:image/png;base64" in html
    again = probe("product_defects", data=parts, overrides=SETTINGS, verbose=0, log=lambda *a: None)  # from the cache
    for cached, first in zip(again["curve"], record["curve"]):
        assert cached["block"] == first["block"] and cached["value"] == pytest.approx(first["value"], abs=1e-9)


@pytest.mark.slow
def test_verify_fine_tunes_at_three_depths_and_says_whether_the_advice_held(parts, tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["probe", "product_defects", "--data", str(parts), "--out", str(tmp_path / "probe"), "--verify",
                     *sum((["--set", item] for item in SETTINGS), [])]) == 0
    record = json.loads((tmp_path / "probe" / "report.json").read_text())
    results = record["verification"]["results"]
    assert [r["unfreeze_blocks"] for r in results] == verification_depths(record["advice"]["unfreeze_blocks"],
                                                                          len(record["curve"]))
    assert sum(r["advised"] for r in results) == 1
    best = max(results, key=lambda r: r["validation"])
    assert record["verification"]["advice_held"] == best["advised"]
    for result in results:
        assert (tmp_path / "probe" / "verify" / result["label"] / "report.json").is_file()
    assert record["verification"]["text"] in capsys.readouterr().out


@pytest.mark.slow
def test_compare_fine_tune_auto_runs_the_advised_depth(parts, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = compare("product_defects", "fine_tune:auto", [1.0], seeds=1, data=parts, overrides=SETTINGS, out=tmp_path / "cmp",
                         log=lambda *a: None)
    advice = json.loads((tmp_path / "cmp" / "probe" / "report.json").read_text())["advice"]
    expected = "feature_extraction" if advice["unfreeze_blocks"] == 0 else f"fine_tune_{advice['unfreeze_blocks']}"
    assert [row["label"] for row in report["rows"]] == [expected]
