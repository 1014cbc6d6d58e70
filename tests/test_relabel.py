"""Corrected labels on top of a source: applied after splitting, refused when they name nothing real."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_data import write_solid_folder

from tfx_transfer.config.recipe import load_recipe
from tfx_transfer.data.relabel import CorrectionsError, apply_corrections
from tfx_transfer.data.sources import load_source
from tfx_transfer.data.splits import split_table
from tfx_transfer.experiments.prepare import data_digest, prepare_data


@pytest.fixture
def solid(tmp_path):
    root = write_solid_folder(tmp_path / "data", per_class=10)
    table = load_source(str(root))
    return root, table, split_table(table, 0.2, 0.2, seed=0)


def _write(path, text):
    path.write_text(text)
    return path


def test_corrections_change_labels_and_exclude_images_in_place(solid, tmp_path):
    root, table, splits = solid
    fixes = _write(tmp_path / "fixes.csv", f"path,label\nred/red_00.png,green\n{root}/blue/blue_03.png,exclude\n"
                                           "green/green_01.png,\n")  # a blank label asks for nothing
    corrected, new_splits, record = apply_corrections(table, splits, fixes)
    index = {str(p).split("data/")[1]: i for i, p in enumerate(table.paths)}
    assert corrected.class_names[corrected.labels[index["red/red_00.png"]]] == "green"
    assert (corrected.labels != table.labels).sum() == 1
    everywhere = np.concatenate([new_splits.train, new_splits.val, new_splits.test])
    assert index["blue/blue_03.png"] not in everywhere and len(everywhere) == len(table) - 1
    for name in ("train", "val", "test"):  # nobody moved split
        assert set(getattr(new_splits, name)) <= set(getattr(splits, name))
    assert record["changed"] == 1 and record["excluded"] == 1 and record["rows"] == 2 and len(record["sha256"]) == 64


def test_a_review_csv_applies_its_suggestions_for_flagged_rows_only(solid, tmp_path):
    root, table, splits = solid
    review = _write(tmp_path / "review.csv", "path,given_label,suggested_label,label_quality,issue\n"
                    f"{root}/red/red_01.png,red,blue,0.01,label\n"
                    f"{root}/red/red_02.png,red,green,0.40,near_duplicate\n"
                    f"{root}/red/red_03.png,red,green,0.02,label;outlier\n")
    corrected, _, record = apply_corrections(table, splits, review)
    assert record["changed"] == 2 and record["rows"] == 2
    changed = {str(table.paths[i]).rsplit("/", 1)[1]: corrected.class_names[corrected.labels[i]]
               for i in np.flatnonzero(corrected.labels != table.labels)}
    assert changed == {"red_01.png": "blue", "red_03.png": "green"}


@pytest.mark.parametrize(("text", "match"), [
    ("path,label\nred/red_00.png,green\nred/nope.png,blue\nmissing/x.png,red\n",
     r"2 row\(s\) naming images the data does not have: line 3: 'red/nope.png' -> 'blue'; line 4: 'missing/x.png'"),
    ("path,label\nred/red_00.png,purple\nred/red_01.png,Green\n",
     r"2 row\(s\) naming classes the data does not have: line 2: 'red/red_00.png' -> 'purple'; line 3: .*"
     r"Expected one of \['blue', 'green', 'red'\] or 'exclude'"),
    ("file,label\nred/red_00.png,green\n", r"has columns \['file', 'label'\]; expected path and label"),
])
def test_corrections_that_name_nothing_real_are_refused_with_their_rows(solid, tmp_path, text, match):
    _, table, splits = solid
    with pytest.raises(CorrectionsError, match=match):
        apply_corrections(table, splits, _write(tmp_path / "fixes.csv", text))


def test_a_missing_corrections_file_is_refused(solid, tmp_path):
    _, table, splits = solid
    with pytest.raises(CorrectionsError, match=r"Corrections file not found: .*nothing\.csv"):
        apply_corrections(table, splits, tmp_path / "nothing.csv")


def test_prepare_data_applies_data_relabel_and_the_digest_records_it(solid, tmp_path):
    root, _, _ = solid
    fixes = _write(tmp_path / "fixes.csv", "path,label\nred/red_00.png,green\nred/red_01.png,green\n")
    recipe = load_recipe("product_defects").with_overrides({"data.source": str(root), "data.weight_column": None})
    plain = prepare_data(recipe)
    corrected = prepare_data(recipe.with_overrides({"data.relabel": str(fixes)}))
    assert corrected.corrections["changed"] == 2 and plain.corrections is None
    assert [list(getattr(plain.splits, n)) for n in ("train", "val", "test")] == \
        [list(getattr(corrected.splits, n)) for n in ("train", "val", "test")]
    before, after = data_digest(plain, plain.splits.train), data_digest(corrected, corrected.splits.train)
    assert before["digest"] != after["digest"] and "corrections" not in before
    assert json.loads(json.dumps(after))["corrections"]["file"] == str(fixes.resolve())
