"""The run folder: a new run never mixes with an old one, --resume continues only the same recipe on
the same data, interrupted writes are cleaned, and report.json (the done marker) is written last."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_resuming_a_folder_that_is_no_run_touches_nothing_in_it(tmp_path):
    user = tmp_path / "documents"
    (user / "drafts").mkdir(parents=True)
    files = {"notes.tmp": "mine", "drafts/report.tmp": "mine too", ".session.tmp": "an editor's", "thesis.txt": "x"}
    for name, text in files.items():
        (user / name).write_text(text)
    with pytest.raises(RunFolderError, match=r"'.*documents' is not a tfx-transfer run folder .* nothing in it is "
                                             r"touched"):
        RunFolder(user).start(RECIPE, DATA, resume=True)
    assert {str(p.relative_to(user)): p.read_text() for p in user.rglob("*") if p.is_file()} == files


def test_resuming_a_folder_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(RunFolderError, match=r"Nothing to resume: '.*missing' does not exist"):
        RunFolder(tmp_path / "missing").start(RECIPE, DATA, resume=True)
    assert not (tmp_path / "missing").exists()


def test_starting_removes_only_the_toolkits_own_temporaries_in_its_own_folders(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.start(RECIPE, DATA, resume=False)
    (folder.path / "export" / "notes").mkdir(parents=True)
    kept = [folder.path / "mine.tmp", folder.path / "export" / "notes" / ".draft.tmp", folder.path / "export" / "x.tmp"]
    for path in kept:
        path.write_text("the user's")
    (folder.path / ".run.json.a1b2.tmp").write_text("{")  # what write_atomically leaves when killed
    folder.start(RECIPE, DATA, resume=True)
    assert all(path.read_text() == "the user's" for path in kept)
    assert not (folder.path / ".run.json.a1b2.tmp").exists()


def test_a_run_folder_in_use_is_refused_naming_the_process_that_holds_it(tmp_path):
    import os

    with RunFolder(tmp_path / "run").lock():
        with pytest.raises(RunFolderError, match=rf"'.*run' is in use by another tfx-transfer process \(pid {os.getpid()} "
                                                 r"on .*\)\. Two runs in one folder .* choose another --out"):
            with RunFolder(tmp_path / "run").lock():
                pass
        RunFolder(tmp_path / "run").start(RECIPE, DATA, resume=False)  # the lock file is not a leftover of a run
    with RunFolder(tmp_path / "run").lock():  # released when the first run ended
        pass


def test_an_out_that_is_a_file_or_read_only_is_refused_before_any_work(tmp_path, monkeypatch):
    import os

    (tmp_path / "taken").write_text("a file")
    with pytest.raises(RunFolderError, match=r"--out '.*taken' is a file, not a folder"):
        RunFolder(tmp_path / "taken").start(RECIPE, DATA, resume=False)
    (tmp_path / "locked").mkdir(mode=0o555)
    real_access = os.access
    # Root (as here and in CI) may write anywhere, so the folder is read-only as the check sees it.
    monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode) and Path(path).name != "locked")
    with pytest.raises(RunFolderError, match=r"'.*locked' is not writable by this user"):
        RunFolder(tmp_path / "locked" / "run").start(RECIPE, DATA, resume=False)
    assert not (tmp_path / "locked" / "run").exists()


def test_written_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        write_atomically(tmp_path / "report.md", "# report")
        assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        write_atomically(tmp_path / "report.md", "# again")
        assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
