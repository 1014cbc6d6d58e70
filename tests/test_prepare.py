"""A recipe's data read, weighted and split (experiments/prepare.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

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
