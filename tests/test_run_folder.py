"""The run folder: a new run never mixes with an old one, --resume continues only the same recipe on
the same data, interrupted writes are cleaned, and report.json (the done marker) is written last."""

from __future__ import annotations

import json

import pytest

from tfx_transfer.config.recipe import Recipe
from tfx_transfer.runs.folder import SCHEMA_VERSION, RunFolder, RunFolderError, write_atomically, write_report_files

RECIPE = Recipe.from_dict({"name": "line7", "data": {"source": "data/line7"}, "training": {"epochs": 2}})
DATA = {"digest": "abc", "images": 40, "source": "data/line7"}


def test_a_new_run_claims_an_empty_or_new_folder_only(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.start(RECIPE, DATA, resume=False)
    assert folder.recipe_file.is_file() and json.loads(folder.data_file.read_text()) == DATA
    (tmp_path / "run" / "model.keras").write_text("old model")
    with pytest.raises(RunFolderError, match=r"'.*run' already holds a run \(data.json, model.keras, recipe.yaml\); "
                                             r"a new run there would mix .* Continue it with --resume"):
        RunFolder(tmp_path / "run").start(RECIPE, DATA, resume=False)
    # The data scan cache alone is not a run (the runner writes it before the run starts).
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "scan.json").write_text("{}")
    RunFolder(tmp_path / "fresh").start(RECIPE, DATA, resume=False)


def test_resume_refuses_another_recipe_or_other_data(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.start(RECIPE, DATA, resume=False)
    folder.start(RECIPE, DATA, resume=True)  # the same recipe on the same data continues
    with pytest.raises(RunFolderError, match=r"Cannot resume .*another recipe \(training.epochs: 2 there, 3 now\)"):
        folder.start(RECIPE.with_overrides(["training.epochs=3"]), DATA, resume=True)
    with pytest.raises(RunFolderError, match=r"Cannot resume .*data changed since it started \(then 40 images from "
                                             r"'data/line7', now 41 from 'data/line7'"):
        folder.start(RECIPE, dict(DATA, digest="abd", images=41), resume=True)


def test_starting_removes_what_interrupted_writes_left(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.start(RECIPE, DATA, resume=False)
    checkpoints = folder.training_dir / "member-2" / "checkpoints"
    (checkpoints / ".epoch-0003-x1y2").mkdir(parents=True)
    (checkpoints / "epoch-0002").mkdir()
    (folder.path / ".history.json.k3j.tmp").write_text("{")
    (folder.path / ".predictions.tmp.npz").write_text("")
    (folder.path / ".model.keras").write_text("")
    (folder.training_dir / ".best.weights.h5").write_text("")
    folder.start(RECIPE, DATA, resume=True)
    left = sorted(str(p.relative_to(folder.path)) for p in folder.path.rglob("*"))
    assert left == ["data.json", "recipe.yaml", "training", "training/member-2", "training/member-2/checkpoints",
                    "training/member-2/checkpoints/epoch-0002"]


def test_report_json_is_written_after_the_markdown_and_html(tmp_path, monkeypatch):
    import tfx_transfer.runs.folder as run_folder

    order = []
    original = run_folder.write_atomically
    monkeypatch.setattr(run_folder, "write_atomically", lambda path, text: (order.append(path.name), original(path, text)))
    write_report_files(tmp_path, {"kind": "run"}, "# report", "<html></html>")
    assert order == ["report.md", "report.html", "report.json"]
    assert RunFolder(tmp_path).is_finished


def test_write_atomically_leaves_no_temporary_file(tmp_path):
    write_atomically(tmp_path / "a" / "notes.txt", "one")
    write_atomically(tmp_path / "a" / "notes.txt", "two")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["notes.txt"]
    assert (tmp_path / "a" / "notes.txt").read_text() == "two"


def test_facts_carry_the_schema_version_and_a_newer_one_is_refused(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_facts({"recipe": "line7"})
    assert folder.read_facts() == {"schema_version": SCHEMA_VERSION, "recipe": "line7"}
    folder.facts_file.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(RunFolderError, match=r"written by a newer tfx_transfer .*Upgrade tfx_transfer"):
        folder.read_facts()
