"""A recipe's data read, weighted and split (experiments/prepare.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiny_data import write_solid_folder
from tfx_transfer.config.recipe import RecipeError, load_recipe
from tfx_transfer.experiments.prepare import prepare_data

#: product_defects as a user copies it, on tiny solid-colour data.
TINY = {"data.weight_column": None, "training.strategy": "feature_extraction", "data.positive_class": "red"}


def _csv_with_splits(root: Path) -> Path:
    write_solid_folder(root, per_class=8)
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    rows = [{"path": f"{c}/{c}_{i:02d}.png", "label": c, "split": splits[i]} for c in ("red", "blue") for i in range(8)]
    pd.DataFrame(rows).to_csv(root / "parts.csv", index=False)
    return root / "parts.csv"


def test_a_csv_with_a_split_column_keeps_its_splits(tmp_path):
    csv = _csv_with_splits(tmp_path)
    prepared = prepare_data(load_recipe("product_defects").with_overrides(TINY), csv)
    frame = pd.read_csv(csv)
    paths = [str(tmp_path / p) for p in frame["path"]]
    for split in ("train", "val", "test"):
        chosen = sorted(prepared.table.paths[getattr(prepared.splits, split)])
        assert chosen == sorted(p for p, s in zip(paths, frame["split"]) if s == split)
    assert "pre-split by column 'split'" in prepared.table.source  # the run's facts show the reader


def test_split_column_null_splits_at_random(tmp_path):
    csv = _csv_with_splits(tmp_path)
    recipe = load_recipe("product_defects").with_overrides(dict(TINY, **{"data.split_column": None}))
    prepared = prepare_data(recipe, csv)
    assert "pre-split" not in prepared.table.source
    frame = pd.read_csv(csv)
    given_test = {str(tmp_path / p) for p, s in zip(frame["path"], frame["split"]) if s == "test"}
    assert set(prepared.table.paths[prepared.splits.test]) != given_test


def test_split_column_on_a_folder_is_refused(tmp_path):
    recipe = load_recipe("product_defects").with_overrides(dict(TINY, **{"data.split_column": "fold"}))
    with pytest.raises(RecipeError, match=r"data.split_column: applies to a CSV source, and .* is not one"):
        prepare_data(recipe, write_solid_folder(tmp_path / "data", per_class=4))


def test_a_weight_column_missing_from_the_csv_says_how_to_go_on(tmp_path):
    csv = _csv_with_splits(tmp_path)
    recipe = load_recipe("product_defects").with_overrides({"training.strategy": "feature_extraction",
                                                            "data.positive_class": "red"})
    assert recipe.data.weight_column == "label_confidence"  # the recipe's own, which the user's CSV lacks
    with pytest.raises(ValueError, match=r"Column\(s\) \['label_confidence'\] not found in .*parts.csv.*"
                                         r"--set data.weight_column=null \(--weight-column none\)"):
        prepare_data(recipe, csv)
    assert len(prepare_data(recipe.with_overrides({"data.weight_column": None}), csv).table) == 16


def test_a_copied_recipes_relative_source_is_read_beside_the_recipe(tmp_path, monkeypatch):
    write_solid_folder(tmp_path / "line7" / "data", per_class=6)
    text = (Path(load_recipe("product_defects").path).read_text()
            .replace("source: embedded:elpv", "source: data"))
    (tmp_path / "line7" / "line7.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)  # elsewhere than the recipe, as a user calling from their project root
    recipe = load_recipe("line7/line7.yaml").with_overrides(TINY)
    assert recipe.data.source == "data"
    prepared = prepare_data(recipe)
    assert all(str(path).startswith(str(tmp_path / "line7" / "data")) for path in prepared.table.paths)
    missing = load_recipe("line7/line7.yaml").with_overrides(dict(TINY, **{"data.source": "nowhere"}))
    with pytest.raises(FileNotFoundError, match=rf"Data not found: '{tmp_path / 'line7' / 'nowhere'}' \(from "
                                                r"data.source 'nowhere', relative to the recipe file\)"):
        prepare_data(missing)


@pytest.mark.filterwarnings("ignore:.*cannot identify image file")  # the skipped files are listed, as they should be
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.lists(st.binary(max_size=300), min_size=1, max_size=4), suffix=st.sampled_from([".png", ".jpg", ".tif"]))
def test_a_run_reads_random_bytes_among_its_images_as_skipped_files(tmp_path_factory, junk, suffix):
    root = write_solid_folder(tmp_path_factory.mktemp("junk") / "data", per_class=8)
    for index, body in enumerate(junk):
        (root / "red" / f"junk{index}{suffix}").write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    prepared = prepare_data(load_recipe("product_defects").with_overrides(TINY), root)
    assert len(prepared.table) == 24 and len(prepared.table.skipped) == len(junk)  # 3 colours x 8 images
