"""A new site's threshold, chosen on a labelled sample from there, beside the run's own."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tiny_data import write_overlapping_parts

from tfx_transfer.cli import main
from tfx_transfer.deploy.predict import load_run
from tfx_transfer.deploy.recalibrate import recalibrate
from tfx_transfer.reporting.report import write_run_report


@pytest.fixture
def run_copy(part_run, tmp_path):
    return shutil.copytree(part_run, tmp_path / "run")


@pytest.fixture(scope="module")
def brighter_site(tmp_path_factory):
    """Another line whose lighting makes every part brighter: the run's threshold calls more parts scratched."""
    return write_overlapping_parts(tmp_path_factory.mktemp("site") / "line9", count=30, shift=30)


def test_a_brighter_site_gets_a_higher_threshold_for_the_same_recall(run_copy, brighter_site):
    before = json.loads((run_copy / "model.json").read_text())
    site = recalibrate(run_copy, brighter_site)
    after = json.loads((run_copy / "model.json").read_text())
    assert after["operating_point"] == before["operating_point"]  # the run's own is kept
    assert after["site_operating_points"]["line9"] == site
    assert site["images"] == 60 and site["positives"] == 30 and site["target_recall"] == 0.9
    assert site["threshold"] > before["operating_point"]["threshold"]
    assert site["at_site_threshold"]["recall"] >= 0.9
    low, high = site["threshold_interval"]
    assert low <= site["threshold"] <= high
    # Scored again at both thresholds, the sample gives the recorded rates.
    run = load_run(run_copy)
    scored = run.predict(brighter_site, site="line9")
    truth = scored["path"].str.contains("/scratched/")
    assert np.mean(scored["decision"][truth] == "scratched") == site["at_site_threshold"]["recall"]
    assert list(scored["decision"]) == ["scratched" if p >= site["threshold"] else "ok"
                                        for p in scored["probability_scratched"]]
    at_run = run.predict(brighter_site)
    assert np.mean(at_run["decision"][~truth] == "ok") == site["at_run_threshold"]["specificity"]


def test_rebuilding_the_report_keeps_the_sites_and_shows_them(run_copy, brighter_site):
    recalibrate(run_copy, brighter_site, site="line9-night")
    write_run_report(run_copy)
    assert "line9-night" in json.loads((run_copy / "model.json").read_text())["site_operating_points"]
    report = (run_copy / "report.md").read_text()
    assert "## Site operating points" in report and "| line9-night | 60 (30 positive) |" in report


@pytest.mark.slow
def test_the_recalibrate_command_says_what_changed_and_how_to_use_it(run_copy, brighter_site, capsys):
    assert main(["recalibrate", str(run_copy), "--data", str(brighter_site), "--site", "line9"]) == 0
    out = capsys.readouterr().out
    assert "Site 'line9': 60 images (30 positive). At the run's threshold" in out
    assert f"tfx-transfer predict {run_copy} INPUT --site line9" in out
    assert "note: only" not in out  # 30 positives is enough not to be warned


def test_a_sample_without_positives_or_with_unknown_classes_is_refused(run_copy, brighter_site, tmp_path):
    only_ok = tmp_path / "only_ok"
    shutil.copytree(brighter_site / "ok", only_ok / "ok")
    shutil.copytree(brighter_site / "ok", only_ok / "ok_too")
    with pytest.raises(ValueError, match=r"classes the run does not know: \['ok_too'\]"):
        recalibrate(run_copy, only_ok)
    shutil.rmtree(only_ok / "ok_too")
    shutil.copytree(brighter_site / "scratched", only_ok / "scratched")
    for path in (only_ok / "scratched").iterdir():
        path.unlink()
    with pytest.warns(UserWarning, match="no images"), pytest.raises(ValueError, match=r"Found a single class \('ok'\)"):
        recalibrate(run_copy, only_ok)  # an empty positive folder is no sample of positives


def test_no_positive_image_means_no_recall_to_measure(run_copy, brighter_site, tmp_path):
    sample = tmp_path / "sample.csv"
    rows = [f"{path},ok" for path in sorted((brighter_site / "ok").iterdir())]
    rows += [f"{path},ok" for path in sorted((brighter_site / "scratched").iterdir())[:1]]
    sample.write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"Found a single class \('ok'\) .* needs at least two"):
        recalibrate(run_copy, sample)


@pytest.mark.parametrize(("change", "message"), [
    ({"site": "line 9/a"}, r"A site name must be letters, digits"),
    ({"target_recall": 1.5}, r"target_recall must be in \(0, 1\]"),
])
def test_bad_options_are_explained(run_copy, brighter_site, change, message):
    with pytest.raises(ValueError, match=message):
        recalibrate(run_copy, brighter_site, **change)


def test_an_argmax_run_has_no_threshold_to_move(run_copy, brighter_site):
    info = json.loads((run_copy / "model.json").read_text())
    info["operating_point"] = {**info["operating_point"], "kind": "argmax", "threshold": None}
    (run_copy / "model.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="decides by argmax .* so it has no threshold to move"):
        recalibrate(run_copy, brighter_site)


def test_predict_for_an_unknown_site_names_the_known_ones(run_copy, brighter_site, capsys):
    recalibrate(run_copy, brighter_site)
    with pytest.raises(ValueError, match=r"no operating point for site 'line3'. Sites: line9; add one with"):
        load_run(run_copy).predict(brighter_site, site="line3")
    assert main(["predict", str(run_copy), str(brighter_site), "--site", "line3", "--out", str(run_copy / "p.csv")]) == 2
    assert "Sites: line9" in capsys.readouterr().err


def test_a_folder_without_a_model_or_a_missing_sample_is_explained(run_copy, tmp_path, capsys):
    assert main(["recalibrate", str(tmp_path / "empty"), "--data", str(tmp_path)]) == 2
    assert "has no trained model to use: model.keras, model.json missing" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="nowhere"):
        recalibrate(run_copy, tmp_path / "nowhere")
