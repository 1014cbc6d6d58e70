"""Comparisons continue where they stopped: finished runs are kept, an interrupted run resumes from
its newest complete checkpoint (an ensemble member's too), and one without any starts again."""

from __future__ import annotations

import json
import shutil

import pytest

from tiny_data import write_solid_folder
from tfx_transfer.experiments.sweep import compare, parse_fractions, parse_strategies

TINY = {"model.backbone": "tiny_test", "model.weights": "none", "model.image_size": 32, "training.epochs": 2,
        "training.batch_size": 8, "evaluation.bootstrap": 20}


def test_parse_strategies_and_fractions_explain_bad_input():
    assert parse_strategies("scratch,fine_tune:4") == [
        ("scratch", {"training.strategy": "scratch"}),
        ("fine_tune:4", {"training.strategy": "fine_tune", "training.unfreeze_blocks": 4})]
    with pytest.raises(ValueError, match=r"Expected strategy\[:unfrozen_blocks\], e.g. fine_tune:4 or fine_tune:auto. Received: 'fine_tune:x'"):
        parse_strategies("fine_tune:x")
    with pytest.raises(ValueError, match=r"Fractions must be in \(0, 1\]"):
        parse_fractions("0,1")


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_members_checkpoints_or_starts_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TFX_TRANSFER_CACHE", str(tmp_path / "cache"))
    data = write_solid_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "compare"
    overrides = dict(TINY, **{"training.ensemble_size": 2, "training.fine_tune_epochs": 1,
                              "training.unfreeze_blocks": 1})
    # Checkpoints kept, so that a finished run can be turned back into an interrupted one below.
    arguments = dict(strategies="scratch", fractions=[1.0], seeds=1, data=data, overrides=overrides, out=out, log=print,
                     keep_checkpoints=True)
    first = compare("product_defects", **arguments)
    run_dir = out / "runs" / "scratch_f1_s0"
    expected = first["rows"][0]["primary"]["value"]

    # Killed in member 2 before its first checkpoint finished: member 1's are the run's progress.
    for name in ("report.json", "report.md", "report.html", "run.json", "predictions.npz", "model.keras", "model.json"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "training" / "member-2")
    (run_dir / "training" / "member-2" / "checkpoints" / ".epoch-0001-x").mkdir(parents=True)
    member_1 = run_dir / "training" / "member-1" / "checkpoints" / "latest"
    stamp = member_1.stat().st_mtime_ns
    again = compare("product_defects", **arguments)
    assert member_1.stat().st_mtime_ns == stamp, "member 1 finished before: resumed to its end, not trained again"
    assert again["rows"][0]["primary"]["value"] == pytest.approx(expected)
    history = json.loads((run_dir / "history.json").read_text())
    assert [record["member"] for record in history] == [1, 1, 2, 2]

    # Killed while writing its very first checkpoint: a checkpoints folder without `latest` is not
    # progress, so the run starts again instead of failing with "Nothing to resume" on every try.
    for name in ("report.json", "run.json"):
        (run_dir / name).unlink()
    shutil.rmtree(run_dir / "training")
    (run_dir / "training" / "checkpoints" / ".epoch-0001-y").mkdir(parents=True)
    assert compare("product_defects", **arguments)["rows"][0]["primary"]["value"] == pytest.approx(expected)


def test_a_kept_run_made_on_other_data_is_a_change(tmp_path):
    from tfx_transfer.config.recipe import load_recipe
    from tfx_transfer.runs.folder import RunFolder, write_json
    from tfx_transfer.experiments.prepare import data_digest, prepare_data
    from tfx_transfer.data.splits import nested_subset
    from tfx_transfer.experiments.sweep import _data_changes

    recipe = load_recipe("product_defects").with_overrides(["data.weight_column=null"])
    first = prepare_data(recipe, write_solid_folder(tmp_path / "a", per_class=8))
    second = prepare_data(recipe, write_solid_folder(tmp_path / "b", per_class=9))
    folder = RunFolder(tmp_path / "run")
    assert _data_changes(folder, first, recipe, 1.0) == []  # a run from before data.json existed
    write_json(folder.data_file, data_digest(first, nested_subset(first.table, first.splits.train, 1.0, seed=0)))
    assert _data_changes(folder, first, recipe, 1.0) == []
    assert _data_changes(folder, second, recipe, 1.0) == [
        f"data: 24 images from {str(tmp_path / 'a')!r} there, 27 from {str(tmp_path / 'b')!r} now"]
