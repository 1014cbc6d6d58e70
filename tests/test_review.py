"""`tfx-transfer review`: cross-fitted label review of a recipe's data, its report, CSV and the way back."""

from __future__ import annotations

import csv
import json
import shutil
import warnings

import numpy as np
import pytest
from conftest import PART_RUN
from tiny_data import write_overlapping_parts, write_solid_folder

from tfx_transfer.cli import main
from tfx_transfer.experiments.review import CSV_COLUMNS, review

TINY = ["model.backbone=tiny_test", "model.weights=none", "model.image_size=32", "data.weight_column=null",
        "data.positive_class=null", "evaluation.operating_point=argmax", "evaluation.test_time_views=1"]
#: Files moved into another class's folder: wrong labels a review must find.
PLANTED = {("red", "red_03.png"): "green", ("green", "green_07.png"): "blue", ("blue", "blue_11.png"): "red"}


def _mislabelled(root):
    write_solid_folder(root, per_class=20)
    moved = []
    for (source, name), target in PLANTED.items():
        shutil.move(root / source / name, root / target / name)
        moved.append(str((root / target / name).resolve()))
    return root, moved


def _rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_review_finds_the_planted_wrong_labels_and_writes_what_a_labelling_tool_reads(tmp_path):
    data, moved = _mislabelled(tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = review("product_defects", data=data, overrides=TINY, out=tmp_path / "review", verbose=0,
                        log=lambda *args: None)
    rows = _rows(tmp_path / "review" / "review.csv")
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == record["counts"]["images"] == len({row["path"] for row in rows})
    flagged = [row for row in rows if "label" in row["issue"].split(";")]
    reviewed = {row["path"] for row in rows}
    planted_reviewed = [path for path in moved if path in reviewed]  # test images are not reviewed
    assert planted_reviewed and {row["path"] for row in flagged[:len(planted_reviewed)]} == set(planted_reviewed)
    expected = {str((data / target / name).resolve()): source for (source, name), target in PLANTED.items()}
    assert all(row["suggested_label"] == expected[row["path"]] for row in flagged if row["path"] in expected)
    assert [float(row["label_quality"]) for row in flagged] == sorted(float(row["label_quality"]) for row in flagged)
    per_class = {row["class"]: row for row in record["per_class"]}
    assert sum(row["suspected"] for row in per_class.values()) == record["counts"]["label_issues"] == len(flagged)
    report = json.loads((tmp_path / "review" / "report.json").read_text())
    assert report["kind"] == "review" and report["label_issues"][0]["path"] in planted_reviewed
    html = (tmp_path / "review" / "report.html").read_text()
    assert "data:image/png;base64," in html and "suggested" in html
    excluded = _rows(tmp_path / "review" / "exclude_flagged.csv")
    assert [row["path"] for row in excluded] == [row["path"] for row in flagged]
    assert {row["label"] for row in excluded} == {"exclude"}
    with np.load(tmp_path / "review" / "review.npz") as saved:
        assert saved["probabilities"].shape == (len(rows), 3) and np.allclose(saved["probabilities"].sum(axis=1), 1)


def test_the_review_csv_relabels_a_later_run(tmp_path, capsys):
    data, moved = _mislabelled(tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["review", "product_defects", "--data", str(data), "--out", str(tmp_path / "review"),
                     *[f"--set={item}" for item in TINY]]) == 0
        assert "likely label errors" in capsys.readouterr().out
        assert main(["run", "product_defects", "--data", str(data), "--out", str(tmp_path / "run"),
                     "--relabel", str(tmp_path / "review" / "review.csv"), "--strategy", "feature_extraction",
                     "--epochs", "1", "--bootstrap", "20", *[f"--set={item}" for item in TINY]]) == 0
    corrections = json.loads((tmp_path / "run" / "data.json").read_text())["corrections"]
    flagged = [row for row in _rows(tmp_path / "review" / "review.csv") if "label" in row["issue"]]
    assert corrections["rows"] == len(flagged) and corrections["changed"] == len(flagged)
    assert corrections["file"] == str((tmp_path / "review" / "review.csv").resolve())


def test_review_refuses_multi_fold_requests_the_data_cannot_meet(tmp_path):
    data = write_solid_folder(tmp_path / "data", per_class=6)
    with pytest.raises(ValueError, match=r"10-fold cross-fitting needs at least 10 images of every class; class index "
                                         r"\d has \d\. Use --folds \d or fewer"):
        review("product_defects", data=data, overrides=TINY, folds=10, out=tmp_path / "review", verbose=0,
               log=lambda *a: None)
    assert not (tmp_path / "review").exists()  # refused before anything is written


def test_review_never_writes_over_a_run_folder(part_run):
    before = (part_run / "report.html").read_bytes()
    with pytest.raises(ValueError, match=r"holds a run, a comparison or another report, which a review would overwrite"):
        review("product_defects", overrides=TINY, out=part_run, verbose=0, log=lambda *a: None)
    assert (part_run / "report.html").read_bytes() == before


@pytest.mark.slow
def test_review_can_cross_fit_a_finished_runs_own_strategy(tmp_path):
    parts = write_overlapping_parts(tmp_path / "parts")
    settings = [item for item in PART_RUN if not item.startswith("training.epochs")] + ["training.epochs=1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tfx_transfer.experiments.runner import run

        run_dir = run("product_defects", data=parts, overrides=settings, out=tmp_path / "run", verbose=0).run_dir
        with pytest.raises(ValueError, match=r"needs at least 3 folds .* received folds=2"):
            review(run_dir=run_dir, folds=2, out=tmp_path / "review", verbose=0, log=lambda *a: None)
        record = review(run_dir=run_dir, folds=3, out=tmp_path / "review", verbose=0, log=lambda *a: None)
    assert record["method"] == "the run's strategy (scratch), trained 3 times" and record["folds"] == 3
    assert record["counts"]["images"] == len(_rows(tmp_path / "review" / "review.csv"))
