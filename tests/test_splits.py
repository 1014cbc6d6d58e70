from __future__ import annotations

import numpy as np
import pytest

from tiny_data import write_gtsrb, write_kermany, write_nih, write_solid_folder
from tfx_transfer.data.sources import ImageTable, load_source
from tfx_transfer.data.splits import split_table


def _table(labels, groups=None):
    labels = np.asarray(labels)
    return ImageTable(labels=labels, class_names=[f"c{i}" for i in range(labels.max() + 1)],
                      arrays=np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1).repeat(4, 1),
                      groups=None if groups is None else np.asarray(groups, dtype=object))


def test_split_is_stratified_seeded_and_complete():
    table = _table(np.repeat([0, 1, 2], 20))
    first = split_table(table, 0.2, 0.2, seed=3)
    again = split_table(table, 0.2, 0.2, seed=3)
    other = split_table(table, 0.2, 0.2, seed=4)
    assert all(np.array_equal(getattr(first, s), getattr(again, s)) for s in ("train", "val", "test"))
    assert not np.array_equal(first.test, other.test)
    together = np.concatenate([first.train, first.val, first.test])
    assert sorted(together.tolist()) == list(range(60))
    for split in (first.val, first.test):
        assert np.bincount(table.labels[split]).tolist() == [4, 4, 4]


def test_groups_never_span_two_splits():
    groups = np.repeat(np.arange(30), 4)
    labels = (np.arange(30) % 2).repeat(4)
    splits = split_table(_table(labels, groups), 0.2, 0.2, seed=0)
    owners = [set(groups[getattr(splits, s)]) for s in ("train", "val", "test")]
    assert not (owners[0] & owners[1]) and not (owners[0] & owners[2]) and not (owners[1] & owners[2])


def test_gtsrb_tracks_stay_together_and_the_official_test_is_kept(tmp_path):
    table = load_source(write_gtsrb(tmp_path / "g", tracks=6, per_track=2))
    splits = split_table(table, 0.2, 0.2, seed=0)
    assert set(splits.test) == set(np.flatnonzero(table.splits == "test"))
    assert not set(table.groups[splits.train]) & set(table.groups[splits.val])


def test_nih_patients_stay_in_one_split(tmp_path):
    root = write_nih(tmp_path / "nih")
    table = load_source(root / "Data_Entry_2017.csv")
    splits = split_table(table, 0.25, 0.25, seed=0)
    sets = [set(table.groups[getattr(splits, s)]) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_kermany_layout_is_respected(tmp_path):
    table = load_source(write_kermany(tmp_path / "k"))
    splits = split_table(table, seed=0)
    for name in ("train", "val", "test"):
        assert set(table.splits[getattr(splits, name)]) == {name}


def test_missing_val_split_is_carved_from_train(tmp_path):
    root = write_kermany(tmp_path / "k", per_class=(10, 2, 3))
    for path in (root / "val").rglob("*.jpeg"):
        path.unlink()
    for folder in sorted((root / "val").iterdir()):
        folder.rmdir()
    (root / "val").rmdir()
    table = load_source(root)
    splits = split_table(table, 0.2, 0.0, seed=0)
    assert len(splits.val) == 4 and set(table.splits[splits.val]) == {"train"}


def test_leak_check_finds_byte_identical_images_across_splits(tmp_path):
    root = write_solid_folder(tmp_path / "d", per_class=10)
    copy = (root / "red" / "red_00.png").read_bytes()
    for i in range(10):
        (root / "red" / f"red_{i:02d}.png").write_bytes(copy)  # ten copies of one image
    with pytest.warns(UserWarning, match=r"byte-identical across splits"):
        splits = split_table(load_source(root), 0.2, 0.2, seed=0)
    assert len(splits.leaks) == 1 and len(splits.leaks[0]) == 10


def test_class_missing_from_a_split_is_explained(tmp_path):
    root = write_kermany(tmp_path / "k")
    for path in (root / "test" / "PNEUMONIA").iterdir():
        path.unlink()
    (root / "test" / "PNEUMONIA").rmdir()
    with pytest.raises(ValueError, match=r"Class\(es\) \['PNEUMONIA'\] have no image in the test split.*put some into test/<class>/"):
        split_table(load_source(root), seed=0)


def test_too_few_images_for_the_splits(tmp_path):
    with pytest.raises(ValueError, match=r"Too few images to stratify a test split: classes \[1\] have only \[1\] image"):
        split_table(_table([0, 0, 0, 0, 0, 1]), 0.2, 0.2)


def test_too_few_groups(tmp_path):
    with pytest.raises(ValueError, match=r"Class 0 has only 1 group\(s\) .* to carve a test split from; group-aware splitting needs at least 2 per class"):
        split_table(_table([0, 0, 0, 1, 1, 1, 1], groups=[1, 1, 1, 2, 2, 3, 3]), 0.2, 0.2)


@pytest.mark.parametrize("validation_split, test_split, match", [
    (1.2, 0.1, r"validation_split must be in \[0, 1\)\. Received: validation_split=1\.2"),
    (0.6, 0.5, r"validation_split \+ test_split must leave images for training"),
])
def test_bad_fractions(validation_split, test_split, match):
    with pytest.raises(ValueError, match=match):
        split_table(_table(np.repeat([0, 1], 10)), validation_split, test_split)
