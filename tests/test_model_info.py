"""model.json's one reader and writer (runs/model_info.py)."""

from __future__ import annotations

import json

import pytest

from tfx_transfer.config.settings import image_shape
from tfx_transfer.evaluation.metrics import OperatingPoint
from tfx_transfer.runs.folder import RunFolderError
from tfx_transfer.runs.model_info import MODEL_INFO_VERSION, ModelInfo, ModelInfoError

POINT = OperatingPoint("target_recall", threshold=0.3, positive_index=1, target_recall=0.9, validation_recall=0.92)
INFO = ModelInfo("product_defects", "fine_tune_12", ("good", "defective"), (300, 300), POINT, temperature=1.7,
                 review_band=(0.2, 0.4), test_time_views=4)


def test_model_info_round_trips_through_its_file(tmp_path):
    INFO.write(tmp_path / "model.json")
    record = json.loads((tmp_path / "model.json").read_text())
    assert record["schema_version"] == MODEL_INFO_VERSION and record["image_size"] == [300, 300]
    assert ModelInfo.read(tmp_path / "model.json") == INFO


def test_model_info_from_a_report_takes_the_calibration_and_the_operating_point():
    report = {"recipe": "line7", "strategy": "feature_extraction", "label": "feature_extraction", "image_size": 96,
              "data": {"class_names": ["ok", "scratched"]}, "calibration": {"temperature": 2.0},
              "metrics": {"operating_point": POINT.to_dict()}, "review_band": [0.1, 0.5],
              "evaluation": {"test_time_views": 2}}
    info = ModelInfo.from_report(report)
    assert info.image_size == (96, 96) and info.temperature == 2.0 and info.operating_point == POINT
    assert info.review_band == (0.1, 0.5) and info.test_time_views == 2 and not info.is_anomaly


@pytest.mark.parametrize("text, message", [
    ('{"recipe": ', r"model.json' is not valid JSON .*--model-info"),
    ('["a", "list"]', r"is not a model.json: expected a JSON object, received list"),
    ('{"recipe": "x"}', r"lacks class_names, image_size, operating_point"),
    (json.dumps({"schema_version": MODEL_INFO_VERSION + 1}), r"written by a newer tfx_transfer"),
    ('{"recipe": "x", "class_names": ["a", "b"], "image_size": 32, "operating_point": {}, "model": "forest"}',
     r"says model 'forest'; expected one of classifier, anomaly"),
])
def test_a_bad_model_json_names_the_file_and_what_is_wrong(tmp_path, text, message):
    (tmp_path / "model.json").write_text(text)
    with pytest.raises(ModelInfoError, match=message):
        ModelInfo.read(tmp_path / "model.json")
    assert issubclass(ModelInfoError, RunFolderError)  # the command line reports it as bad input


def test_sites_are_added_beside_the_runs_own_operating_point(tmp_path):
    site = {**POINT.to_dict(), "threshold": 0.45, "threshold_interval": [0.4, 0.5], "images": 60}
    info = INFO.with_site("line9", site)
    assert info.decision_rule() == (POINT, (0.2, 0.4))
    point, band = info.decision_rule("line9")
    assert point.threshold == 0.45 and band == (0.4, 0.5)
    with pytest.raises(ValueError, match=r"'runs/x' has no operating point for site 'line3'\. Sites: line9; add one "
                                         r"with: tfx-transfer recalibrate runs/x --data SAMPLE --site line3"):
        info.decision_rule("line3", "runs/x")


def test_image_shape_is_height_and_width_from_a_side_or_a_pair():
    assert image_shape(96) == (96, 96) and image_shape([64, 80]) == (64, 80) and image_shape((32, 32)) == (32, 32)
