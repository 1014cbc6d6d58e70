from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tiny_data import solid_image, write_gtsrb, write_kermany, write_nih, write_solid_folder
from tfx_transfer.data.images import read_image
from tfx_transfer.data.sources import from_arrays, from_dataframe, from_folder, from_nih, from_tfds, load_source, with_weights


def test_folder_per_class_gives_sorted_class_names_and_labels(tmp_path):
    table = load_source(write_solid_folder(tmp_path / "data", per_class=3))
    assert table.class_names == ["blue", "green", "red"]
    assert np.bincount(table.labels).tolist() == [3, 3, 3]
    assert all(f"/{table.class_names[label]}/" in path for path, label in zip(table.paths, table.labels))
    assert table.splits is None and table.groups is None


def test_kermany_layout_keeps_its_splits(tmp_path):
    table = load_source(write_kermany(tmp_path / "chest_xray"))
    assert table.class_names == ["NORMAL", "PNEUMONIA"]
    assert {s: int((table.splits == s).sum()) for s in ("train", "val", "test")} == {"train": 12, "val": 4, "test": 6}
    assert read_image(table.paths[0]).shape[-1] == 3  # grey X-rays become 3 channels


def test_gtsrb_layout_crops_rois_and_groups_tracks(tmp_path):
    table = load_source(write_gtsrb(tmp_path / "GTSRB"))
    assert table.class_names == ["stop", "keep_right", "keep_left"]
    train = table.splits == "train"
    assert train.sum() == 18 and (table.splits == "test").sum() == 6
    assert len(set(table.groups[train])) == 6  # 3 classes x 2 tracks
    crop = read_image(table.paths[0], table.rois[0])
    assert crop.shape == (30, 26, 3)
    np.testing.assert_array_equal(crop.reshape(-1, 3).min(0), (220, 30, 30))  # background cut away


def test_nih_csv_is_finding_vs_no_finding_grouped_by_patient(tmp_path):
    root = write_nih(tmp_path / "nih")
    table = load_source(root / "Data_Entry_2017.csv")
    assert table.class_names == ["No Finding", "Pneumonia"]
    frame = pd.read_csv(root / "Data_Entry_2017.csv")
    kept = frame[frame["Finding Labels"] != "Effusion"]
    assert len(table) == len(kept)
    assert table.labels.tolist() == kept["Finding Labels"].str.contains("Pneumonia").astype(int).tolist()
    assert all(p.startswith(str(root / "images_001" / "images")) for p in table.paths)
    assert set(table.groups) == {str(p) for p in kept["Patient ID"]}


def test_nih_unknown_finding_lists_the_findings(tmp_path):
    root = write_nih(tmp_path / "nih")
    with pytest.raises(ValueError, match=r"No image labelled 'Hernia'.*Findings present: \['Effusion', 'No Finding', 'Pneumonia'\]"):
        from_nih(root / "Data_Entry_2017.csv", finding="Hernia")


def test_csv_with_paths_labels_and_groups(tmp_path):
    write_solid_folder(tmp_path, per_class=2)
    rows = [{"file": f"{c}/{c}_{i:02d}.png", "target": c, "part": f"p{i}"} for c in ("red", "blue") for i in range(2)]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    table = load_source(tmp_path / "labels.csv", path_column="file", label_column="target", group_column="part")
    assert table.class_names == ["blue", "red"]
    assert table.paths[0] == str(tmp_path / "red" / "red_00.png")
    assert table.groups.tolist() == ["p0", "p1", "p0", "p1"]


@pytest.mark.parametrize("column, expected", [
    ("target", r"2 row\(s\) of csv .*labels.csv have no label \(column 'target' is blank\): line 3, line 5\. Fill those cells"),
    ("file", r"2 row\(s\) of csv .*labels.csv have no image path \(column 'file' is blank\): line 3, line 5\."),
])
def test_blank_paths_or_labels_name_their_csv_lines(tmp_path, column, expected):
    write_solid_folder(tmp_path, per_class=2)
    rows = [{"file": f"{c}/{c}_{i:02d}.png", "target": c} for c in ("red", "blue") for i in range(2)]
    rows[1][column] = ""
    rows[3][column] = "   "
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=expected):
        load_source(tmp_path / "labels.csv", path_column="file", label_column="target")


def test_a_blank_group_is_a_group_of_its_own(tmp_path):
    write_solid_folder(tmp_path, per_class=2)
    rows = [{"file": f"{c}/{c}_{i:02d}.png", "target": c, "part": ""} for c in ("red", "blue") for i in range(2)]
    rows[0]["part"] = "p7"
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    table = load_source(tmp_path / "labels.csv", path_column="file", label_column="target", group_column="part")
    # Three images of unknown parts are three groups, not one part that may not be split.
    assert table.groups[0] == "p7" and len(set(table.groups)) == 4


def test_per_image_weights_are_matched_by_path(tmp_path):
    table = from_folder(write_solid_folder(tmp_path, per_class=2))
    # Rows in another order than the table, one with an absolute path: matching is by file.
    rows = [{"path": f"{c}/{c}_{i:02d}.png", "confidence": (k + 1) / 10}
            for k, (c, i) in enumerate([(c, i) for c in ("red", "green", "blue") for i in (1, 0)])]
    rows[0]["path"] = str(tmp_path / rows[0]["path"])
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    weighted = with_weights(table, tmp_path / "labels.csv", "confidence")
    expected = {str(tmp_path / row["path"]): row["confidence"] for row in rows}
    assert weighted.weights.tolist() == [expected[p] for p in table.paths]
    assert weighted.subset([3, 0]).weights.tolist() == [weighted.weights[3], weighted.weights[0]]
    assert table.weights is None  # the table itself is unchanged


@pytest.mark.parametrize("rows, expected", [
    ([{"path": "red/red_00.png", "w": 1.0}], r"5 of 6 images have no row in .*labels.csv', e.g. \[.*green_00.png"),
    ([{"path": "red/red_00.png", "score": 1.0}], r"Column\(s\) \['w'\] not found in .*Found columns: \['path', 'score'\]"),
    ([{"path": "red/red_00.png", "w": -1.0}], r"Column 'w' of .* must hold numbers at least 0; 1 row\(s\) do not, e\.g\. \['red/red_00.png'\]"),
    ([{"path": "red/red_00.png", "w": "high"}], r"must hold numbers at least 0"),
])
def test_bad_weight_files_say_what_to_fix(tmp_path, rows, expected):
    table = from_folder(write_solid_folder(tmp_path, per_class=2))
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=expected):
        with_weights(table, tmp_path / "labels.csv", "w")


def test_all_zero_weights_and_arrays_are_refused(tmp_path):
    table = from_folder(write_solid_folder(tmp_path, per_class=1))
    relative = [Path(p).relative_to(tmp_path).as_posix() for p in table.paths]
    pd.DataFrame({"path": relative, "w": 0.0}).to_csv(tmp_path / "w.csv", index=False)
    with pytest.raises(ValueError, match=r"Every weight in column 'w' of .*w.csv' is 0: nothing would be learned"):
        with_weights(table, tmp_path / "w.csv", "w")
    arrays = from_arrays(np.stack([solid_image((255, 0, 0)), solid_image((0, 0, 255))]), ["red", "blue"])
    with pytest.raises(ValueError, match=r"matched by file path, but this data has no files .* Unset data.weight_column"):
        with_weights(arrays, tmp_path / "w.csv", "w")


def test_dataframe_missing_column_lists_found_columns():
    frame = pd.DataFrame({"filename": ["a.png"], "label": ["x"]})
    with pytest.raises(ValueError, match=r"Column\(s\) \['path'\] not found in dataframe\. Found columns: \['filename', 'label'\]"):
        from_dataframe(frame)


def test_arrays_with_string_labels(tmp_path):
    images = np.stack([solid_image((255, 0, 0)), solid_image((0, 0, 255))])
    table = from_arrays(images, ["red", "blue"])
    assert table.class_names == ["blue", "red"] and table.labels.tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"Expected images of shape \(n, height, width\[, channels\]\) and n labels"):
        from_arrays(images, ["red"])


def test_missing_folder_says_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Data folder not found: .*Expected a folder with one sub-folder per class"):
        from_folder(tmp_path / "nowhere")


def test_loose_files_without_class_folders(tmp_path):
    Image.fromarray(solid_image((1, 2, 3))).save(tmp_path / "img_001.png")
    with pytest.raises(FileNotFoundError, match=r"(?s)No class folders found .*Found only files: \['img_001\.png'\]\. Move them into class folders"):
        from_folder(tmp_path)


def test_single_class_is_refused(tmp_path):
    (tmp_path / "good").mkdir()
    Image.fromarray(solid_image((1, 2, 3))).save(tmp_path / "good" / "a.png")
    with pytest.raises(ValueError, match=r"Found a single class \('good'\) .* needs at least two"):
        from_folder(tmp_path)


def test_empty_class_folder_warns_and_is_left_out(tmp_path):
    write_solid_folder(tmp_path, per_class=2)
    (tmp_path / "yellow").mkdir()
    with pytest.warns(UserWarning, match=r"Class folder\(s\) with no images: .*yellow.*add images to them or delete"):
        table = from_folder(tmp_path)
    assert table.class_names == ["blue", "green", "red"]


_TINY_SHAPES = """
import numpy as np
import tensorflow_datasets as tfds


class TinyShapes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "label": tfds.features.ClassLabel(names=["dark", "light"]),
            })
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(6), "test": self._generate_examples(2)}

    def _generate_examples(self, count):
        for i in range(count):
            value = 30 if i % 2 == 0 else 220
            yield i, {"image": np.full((8, 8, 3), value, np.uint8), "label": i % 2}
"""


def test_tfds_by_name_reads_a_prepared_dataset_and_never_downloads(tmp_path, monkeypatch):
    # TFDS builders must live in a package; write one, as a user's own builder would be.
    package = tmp_path / "tiny_shapes_builder"
    package.mkdir()
    (package / "__init__.py").write_text(_TINY_SHAPES)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tiny_shapes_builder

    data_dir = tmp_path / "tfds"
    with pytest.raises(FileNotFoundError, match=r"(?s)TFDS data set 'tiny_shapes' is not prepared .* never downloads"):
        from_tfds("tiny_shapes", data_dir=data_dir)
    tiny_shapes_builder.TinyShapes(data_dir=str(data_dir)).download_and_prepare()
    table = load_source("tfds:tiny_shapes", data_dir=data_dir)
    assert table.class_names == ["dark", "light"]
    assert sorted(table.splits.tolist()) == ["test"] * 2 + ["train"] * 6
    assert table.arrays.shape == (8, 8, 8, 3)
    assert all((table.arrays[i].mean() > 128) == bool(label) for i, label in enumerate(table.labels))


def test_nih_without_a_finding_is_multi_label_over_every_finding(tmp_path):
    root = write_nih(tmp_path / "nih")
    table = from_nih(root / "Data_Entry_2017.csv", finding=None)
    assert table.multi_label and table.class_names == ["Effusion", "Pneumonia"]
    frame = pd.read_csv(root / "Data_Entry_2017.csv")
    for row, labels in zip(table.labels, frame["Finding Labels"]):
        assert row.tolist() == [int("Effusion" in labels), int("Pneumonia" in labels)]
    assert not table.labels[frame["Finding Labels"].eq("No Finding").to_numpy()].any()


def test_csv_multi_label_column(tmp_path):
    frame = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": ["scratch|dent", "dent", "none"]})
    table = from_dataframe(frame, multi_label=True, no_label="none")
    assert table.class_names == ["dent", "scratch"]
    assert table.labels.tolist() == [[1, 1], [1, 0], [0, 0]]


def _split_csv(root: Path, column: str = "split") -> Path:
    write_solid_folder(root, per_class=6)
    rows = [{"path": f"{c}/{c}_{i:02d}.png", "label": c, column: ("train", "train", "train", "val", "test", "test")[i]}
            for c in ("red", "green", "blue") for i in range(6)]
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


@pytest.mark.parametrize("column", ["split", "Split"])
def test_a_csv_split_column_is_the_split_as_train_val_test_folders_are(tmp_path, column):
    table = load_source(_split_csv(tmp_path, column))
    assert {s: int((table.splits == s).sum()) for s in ("train", "val", "test")} == {"train": 9, "val": 3, "test": 6}
    assert table.source.endswith(f"(pre-split by column {column!r})")


def test_a_csv_split_column_can_be_ignored_or_named(tmp_path):
    csv = _split_csv(tmp_path, "fold")
    assert load_source(csv).splits is None  # no column named split: split at random
    assert int((load_source(csv, split_column="fold").splits == "val").sum()) == 3
    assert load_source(_split_csv(tmp_path / "b"), split_column=None).splits is None


def test_a_bad_split_value_says_how_to_split_at_random_instead(tmp_path):
    csv = _split_csv(tmp_path)
    frame = pd.read_csv(csv)
    frame.loc[0, "split"] = "holdout"
    frame.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"Split column 'split' of csv .*labels.csv has values \['holdout'\].*"
                                         r"--set data.split_column=null"):
        load_source(csv)


def test_class_folders_beside_split_folders_are_refused_not_dropped(tmp_path):
    root = write_kermany(tmp_path / "mixed")
    write_solid_folder(root, per_class=3)  # red/, green/, blue/ beside train/ and test/
    with pytest.raises(ValueError, match=r"mixes two layouts: split folders \(test, train, val\) and class folders beside "
                                         r"them \(blue, green, red, with images\)"):
        load_source(root)


def test_an_image_listed_twice_with_different_labels_is_refused_naming_its_lines(tmp_path):
    write_solid_folder(tmp_path, per_class=2)
    rows = [{"path": f"{c}/{c}_{i:02d}.png", "label": c} for c in ("red", "blue") for i in range(2)]
    rows.append({"path": "red/red_01.png", "label": "blue"})  # line 6: the second label of line 3's image
    rows.append({"path": "red/red_00.png", "label": "red"})  # a plain repeat agrees: not a conflict
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=r"1 image\(s\) of csv .*labels.csv are listed twice with different labels: "
                                         r"'.*red_01.png': 'red' in line 3, 'blue' in line 6\. Keep one row per image"):
        load_source(tmp_path / "labels.csv")


_CELLS = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "nan", "train", "val", "test", "red", "blue",
                                                          "red/red_00.png", "../x.png", "a,b", '"', "\n"]),
                   st.integers(), st.floats(allow_nan=True))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.tuples(_CELLS, _CELLS, _CELLS), min_size=0, max_size=8),
       header=st.sampled_from([("path", "label", "split"), ("path", "label", "group"), ("file", "label", "x")]))
def test_random_csv_cells_give_a_table_or_a_clear_error(tmp_path, cells, header):
    write_solid_folder(tmp_path, per_class=2)
    csv = tmp_path / "labels.csv"
    pd.DataFrame(cells, columns=list(header)).to_csv(csv, index=False)
    try:
        table = load_source(csv)
    except (ValueError, FileNotFoundError) as error:  # said plainly: what is wrong and how to fix it
        assert str(error)
    else:
        assert len(table.paths) == len(table.labels) and len(table.class_names) >= 2
