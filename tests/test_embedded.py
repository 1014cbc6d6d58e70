"""Built-in data: generated signs and radiographs are deterministic, in the official layouts (read
by the real readers), and carry the structure the recipes rely on (tracks, patients, mirror pairs);
the ELPV preparation is atomic and cached."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfx_transfer.data import embedded
from tfx_transfer.experiments.prepare import apply_group_pattern
from tfx_transfer.data.sources import from_folder, from_gtsrb, with_weights
from tfx_transfer.data.splits import nested_subset, split_table
from tfx_transfer.data.synthetic_signs import SIGN_CLASSES, draw_sign, write_gtsrb
from tfx_transfer.data.synthetic_xray import write_kermany

KERMANY_PATIENT = r"^(person\d+|(?:NORMAL2-)?IM-\d+)"


def _digest(root: Path) -> str:
    digest = hashlib.sha1()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_signs_are_deterministic_and_read_by_the_gtsrb_reader(tmp_path):
    classes = [1, 5, 33, 34, 14]
    first = write_gtsrb(tmp_path / "a", train_tracks=3, test_tracks=1, views=3, seed=7, classes=classes)
    again = write_gtsrb(tmp_path / "b", train_tracks=3, test_tracks=1, views=3, seed=7, classes=classes)
    other = write_gtsrb(tmp_path / "c", train_tracks=3, test_tracks=1, views=3, seed=8, classes=classes)
    assert _digest(first) == _digest(again) != _digest(other)
    table = from_gtsrb(first)
    assert table.class_names == ["speed_limit_30", "speed_limit_80", "stop", "turn_right_ahead", "turn_left_ahead"]
    train = table.splits == "train"
    assert train.sum() == 5 * 3 * 3 and (table.splits == "test").sum() == 5 * 2
    assert len(set(table.groups[train])) == 5 * 3  # one group per physical sign (track)
    for path, (x1, y1, x2, y2) in zip(table.paths, table.rois):
        width, height = Image.open(path).size
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_sign_families_cover_gtsrb_and_mirror_pairs_are_mirrors():
    assert len(SIGN_CLASSES) >= 12
    kinds = {kind for kind, _ in SIGN_CLASSES.values()}
    assert kinds >= {"speed", "no_vehicles", "no_entry", "warning", "mandatory", "stop", "yield", "priority"}
    for right, left in ((33, 34), (38, 39), (20, 19)):
        a = np.asarray(draw_sign(right), float)
        b = np.asarray(draw_sign(left), float)[:, ::-1]
        unrelated = np.asarray(draw_sign(35), float)
        mirror_error = np.abs(a - b).mean()
        assert mirror_error < 0.25 * np.abs(a - unrelated).mean(), (right, left)
    # Speed limits differ only in their digits: the same ring, other pixels inside.
    assert np.abs(np.asarray(draw_sign(1), float) - np.asarray(draw_sign(5), float)).mean() > 1.0


def test_radiographs_are_deterministic_with_patients_in_the_file_names(tmp_path):
    first = write_kermany(tmp_path / "a", normal_patients=8, pneumonia_patients=8, seed=3)
    again = write_kermany(tmp_path / "b", normal_patients=8, pneumonia_patients=8, seed=3)
    assert _digest(first) == _digest(again)
    table = apply_group_pattern(from_folder(first), KERMANY_PATIENT)
    assert table.class_names == ["NORMAL", "PNEUMONIA"] and set(table.splits) <= {"train", "test"}
    assert all(group.startswith(("IM-", "person")) for group in table.groups)
    # One patient's films are all in one split and one class.
    for group in set(table.groups):
        members = table.groups == group
        assert len(set(table.splits[members])) == 1 and len(set(table.labels[members])) == 1
    assert 16 <= len(table) <= 48  # one to three films per patient
    pixels = np.asarray(Image.open(table.paths[0]))
    assert pixels.ndim == 2 and pixels.std() > 20  # grey, with anatomy, not a flat image


def test_pneumonia_films_differ_from_normal_ones_inside_the_lungs(tmp_path):
    from tfx_transfer.data.synthetic_xray import _anatomy, render_film

    rng = np.random.default_rng(0)
    anatomy = _anatomy(rng)
    spots = [{"side": -1, "u": 0.0, "v": 0.3, "radius": 0.09, "density": 0.9, "seed": 1}]
    normal = render_film(anatomy, [], np.random.default_rng(5)).astype(float)
    sick = render_film(anatomy, spots, np.random.default_rng(5)).astype(float)
    difference = sick - normal
    assert difference.max() > 25  # an opacity
    assert np.abs(difference[:, 96:]).max() < 1  # only where it was placed (the other lung is unchanged)


def test_patient_grouped_splits_and_nested_subsets_on_generated_films(tmp_path):
    table = apply_group_pattern(from_folder(write_kermany(tmp_path / "x", 20, 20, seed=1)), KERMANY_PATIENT)
    splits = split_table(table, 0.2, 0.2, seed=0)
    train_groups = set(table.groups[splits.train])
    assert not train_groups & set(table.groups[splits.val]) and not train_groups & set(table.groups[splits.test])
    small, half = (nested_subset(table, splits.train, f, seed=2) for f in (0.3, 0.6))
    assert set(small) < set(half) < set(splits.train)
    assert set(table.labels[small]) == {0, 1}
    assert set(table.groups[small]).isdisjoint(set(table.groups[np.setdiff1d(splits.train, small)]))


def test_prepare_is_cached_atomic_and_names_the_choices(tmp_path, monkeypatch):
    calls = []

    def fake_writer(root):
        calls.append(root)
        (root / "good").mkdir()
        (root / "good" / "a.png").write_bytes(b"x")

    monkeypatch.setitem(embedded._WRITERS, "elpv", fake_writer)
    first = embedded.prepare("embedded:elpv", root=tmp_path)
    assert first == tmp_path / f"elpv-v{embedded.VERSIONS['elpv']}" and (first / "good" / "a.png").is_file()
    assert embedded.prepare("elpv", root=tmp_path) == first and len(calls) == 1  # cached
    assert not list(tmp_path.glob(".*staging*"))

    def crashing_writer(root):
        (root / "half").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setitem(embedded._WRITERS, "chest_xray", crashing_writer)
    with pytest.raises(KeyboardInterrupt):
        embedded.prepare("chest_xray", root=tmp_path)
    assert not (tmp_path / f"chest_xray-v{embedded.VERSIONS['chest_xray']}").exists()  # never half-used
    with pytest.raises(ValueError, match=r"Unknown built-in data set 'elvp'. Did you mean embedded:elpv\? Available: "):
        embedded.prepare("embedded:elvp", root=tmp_path)


@pytest.mark.slow
@pytest.mark.integration
def test_elpv_is_prepared_from_the_real_data(tmp_path):
    root = embedded.prepare("elpv", root=tmp_path)
    table = from_folder(root)
    assert table.class_names == ["defective", "good"]
    assert np.bincount(table.labels).tolist() == [715 + 106, 1508 + 295]  # probability >= 0.5 is defective
    with open(root / "labels.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2624 and {row["module_type"] for row in rows} == {"mono", "poly"}
    assert all((float(row["defect_probability"]) >= 0.5) == (row["label"] == "defective") for row in rows)
    weighted = with_weights(table, root / "labels.csv", "label_confidence")
    assert np.unique(weighted.weights.round(3), return_counts=True)[1].tolist() == [106 + 295, 715 + 1508]
