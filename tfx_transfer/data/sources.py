"""Data sources: where labelled images come from, turned into one `ImageTable`.

Sources: a folder per class (flat, or pre-split into train/val/test like the Kermany chest_xray
layout), a CSV file or pandas DataFrame, the GTSRB official layout, the NIH ChestX-ray14 CSV, a TFDS
data set already prepared on this machine (`tfds:<name>`), and numpy arrays. `load_source` picks
the reader from what it is given.

Vocabulary: `class_names` are ordered as the integer labels; `groups` are ids of the physical
thing an image shows (patient, sign track, module): images of one group never go to two splits;
`splits` holds a predefined `train`/`val`/`test` per image when the layout brings one.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tfx_transfer.data.images import IMAGE_EXTENSIONS

SPLIT_NAMES = ("train", "val", "test")
#: `from_dataframe`'s default: a column named `split` (any case) holds each row's split, when there is one.
AUTO_SPLIT_COLUMN = "auto"
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class ImageTable:
    """Labelled images from one source, before splitting.

    Attributes:
        labels: Integer class per image (index into `class_names`), or for multi-label data an
            `(n, num_classes)` 0/1 matrix (an all-zero row: none of the labels, e.g. "No Finding").
        class_names: Names in label order.
        paths: Image files, or None when `arrays` holds the pixels.
        arrays: `(n, height, width, channels)` uint8 images, or None.
        groups: Group id per image (patient, track, module), or None.
        splits: Predefined split per image (`train`, `val`, `test`), or None.
        rois: `(n, 4)` crop boxes `(x1, y1, x2, y2)`, or None.
        weights: Training weight per image, e.g. how sure the annotators were of its label
            (1 = certain, lower = less); or None for all 1. Multiplies any class weight.
        source: One line describing where the data came from, for reports.
        skipped: `(path, reason)` of files left out (filled by the pipeline's scan).
        decoders: Per file, `"tf"` (native decoder) or `"pil"`; filled by the scan.
        image_sizes: `(n, 2)` height and width per file; filled by the scan.
    """

    labels: np.ndarray
    class_names: list[str]
    paths: np.ndarray | None = None
    arrays: np.ndarray | None = None
    groups: np.ndarray | None = None
    splits: np.ndarray | None = None
    rois: np.ndarray | None = None
    weights: np.ndarray | None = None
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    decoders: np.ndarray | None = None
    image_sizes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2

    @property
    def stratify_labels(self) -> np.ndarray:
        """One integer per image to stratify splits by: the class, or for multi-label data the
        first positive label (-1 for none)."""
        if not self.multi_label:
            return self.labels
        return np.where(self.labels.any(axis=1), self.labels.argmax(axis=1), -1)

    def subset(self, indices) -> "ImageTable":
        """The rows at `indices`, every column kept aligned."""
        indices = np.asarray(indices, dtype=int)
        take = lambda column: None if column is None else column[indices]  # noqa: E731
        return replace(
            self,
            labels=self.labels[indices],
            paths=take(self.paths),
            arrays=take(self.arrays),
            groups=take(self.groups),
            splits=take(self.splits),
            rois=take(self.rois),
            weights=take(self.weights),
            decoders=take(self.decoders),
            image_sizes=take(self.image_sizes),
        )


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _check_classes(table: ImageTable, where: str) -> ImageTable:
    if table.multi_label:
        if not table.labels.any():
            raise ValueError(f"No image in {where} carries any label; multi-label training needs positives.")
        return table
    present = np.unique(table.labels)
    if len(present) < 2:
        only = table.class_names[int(present[0])] if len(present) else "none"
        raise ValueError(
            f"Found a single class ({only!r}) in {where}; classification needs at least two. "
            "Add a folder (or label) for every class, e.g. good/ and defect/."
        )
    return table


def _class_folders(root: Path) -> tuple[list[Path], list[Path]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = sorted(p for p in root.iterdir() if _is_image(p))
    return folders, files


def from_folder(root: str | os.PathLike, class_names: list[str] | None = None) -> ImageTable:
    """Reads `root/<class>/*` or the pre-split `root/{train,val,test}/<class>/*` layout.

    Only files directly inside a class folder count; nested folders are ignored with a warning.
    An empty class folder is left out with a warning.

    Args:
        root: The folder.
        class_names: Optional fixed class order; by default the sorted folder names.

    Raises:
        FileNotFoundError: if the folder does not exist or holds no class folders.
        ValueError: if fewer than two classes hold images.

    Example:
        >>> table = from_folder("data/line3")  # doctest: +SKIP
        >>> table.class_names  # doctest: +SKIP
        ['defect', 'good']
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Data folder not found: '{root}'. Expected a folder with one sub-folder per class, e.g.\n"
            f"    {root}/good/*.png\n    {root}/defect/*.png"
        )
    folders, loose = _class_folders(root)
    split_folders = {_SPLIT_ALIASES[f.name.lower()]: f for f in folders if f.name.lower() in _SPLIT_ALIASES}
    layout = {split: _class_folders(folder)[0] for split, folder in split_folders.items()} if split_folders else {None: folders}
    if not any(layout.values()):
        found = [p.name for p in loose[:5]]
        raise FileNotFoundError(
            f"No class folders found in '{root}'. Expected one sub-folder per class, e.g.\n"
            f"    {root}/good/*.png\n    {root}/defect/*.png\n"
            f"Found only files: {found}. Move them into class folders, or point --data at their parent."
        )
    names = class_names or sorted({folder.name for folders_ in layout.values() for folder in folders_})
    index = {name: i for i, name in enumerate(names)}
    paths, labels, splits, empty, nested = [], [], [], [], []
    for split, class_folders in layout.items():
        for folder in class_folders:
            if folder.name not in index:
                raise ValueError(
                    f"Class folder '{folder}' is not among class_names {names}. "
                    "Add it to class_names or remove the folder."
                )
            files = sorted(p for p in folder.iterdir() if _is_image(p))
            nested += [p for p in folder.iterdir() if p.is_dir()]
            if not files:
                empty.append(str(folder))
            paths += [str(p) for p in files]
            labels += [index[folder.name]] * len(files)
            splits += [split] * len(files)
    if nested:
        warnings.warn(
            f"Ignoring {len(nested)} folder(s) nested inside class folders: "
            f"{[str(p) for p in nested[:5]]}. Images must sit directly in their class folder.",
            stacklevel=2,
        )
    if empty:
        warnings.warn(
            f"Class folder(s) with no images: {empty}. Those classes are left out; add images to "
            "them or delete the folders.",
            stacklevel=2,
        )
    labels_array = np.array(labels, dtype=int)
    # Leave out classes without any image, renumbering labels so they stay contiguous.
    kept = [name for i, name in enumerate(names) if (labels_array == i).any()]
    remap = {names.index(name): i for i, name in enumerate(kept)}
    labels_array = np.array([remap[label] for label in labels_array], dtype=int)
    table = ImageTable(
        labels=labels_array,
        class_names=kept,
        paths=np.array(paths, dtype=object),
        splits=np.array(splits, dtype=object) if split_folders else None,
        source=f"folder {root}" + (" (pre-split)" if split_folders else ""),
    )
    return _check_classes(table, f"'{root}'")


def from_dataframe(
    frame,
    path_column: str = "path",
    label_column: str = "label",
    group_column: str | None = None,
    split_column: str | None = "auto",
    root: str | os.PathLike | None = None,
    source: str = "dataframe",
    multi_label: bool = False,
    label_separator: str = "|",
    no_label: str | None = None,
) -> ImageTable:
    """Reads a pandas DataFrame with a path column, a label column and optional group/split columns.

    Relative paths are resolved against `root`. `split_column` names a column of predefined splits
    (train/val/test per row); `"auto"` (the default) takes a column named `split` (any case) when
    there is one, as `from_folder` takes `train/`, `val/` and `test/` folders; None ignores any. The
    table's `source` says which column was used. With `multi_label=True` the label column holds
    `label_separator`-separated labels (`"Effusion|Pneumonia"`), and `no_label` (e.g.
    `"No Finding"`) marks images with none of them.

    Raises:
        ValueError: if a column is missing (the message lists the columns found).

    Example:
        >>> table = from_dataframe(pd.DataFrame({"path": ["a.png", "b.png"], "label": ["ok", "bad"]}))  # doctest: +SKIP
    """
    if split_column == AUTO_SPLIT_COLUMN:
        split_column = next((column for column in frame.columns if str(column).strip().lower() == "split"), None)
    missing = [c for c in (path_column, label_column, group_column, split_column) if c and c not in frame.columns]
    if missing:
        raise ValueError(
            f"Column(s) {missing} not found in {source}. Found columns: {list(frame.columns)}. "
            "Name the right ones with path_column=, label_column=, group_column=."
        )
    for column, what in ((path_column, "image path"), (label_column, "label")):
        blank = _blank(frame[column])
        if blank.any():
            raise ValueError(
                f"{int(blank.sum())} row(s) of {source} have no {what} (column {column!r} is blank): "
                f"{_row_names(frame, blank, source)}. Fill those cells or remove the rows.")
    base = Path(root) if root is not None else None
    paths = [str(base / p) if base is not None and not os.path.isabs(str(p)) else str(p) for p in frame[path_column]]
    raw_labels = frame[label_column].astype(str).str.strip().to_numpy()
    if multi_label:
        label_sets = [[x for x in value.split(label_separator) if x and x != no_label] for value in raw_labels]
        names = sorted({label for labels in label_sets for label in labels})
        index = {name: i for i, name in enumerate(names)}
        encoded = np.zeros((len(label_sets), len(names)), dtype=np.uint8)
        for row, labels in enumerate(label_sets):
            encoded[row, [index[label] for label in labels]] = 1
    else:
        names = sorted(set(raw_labels))
        index = {name: i for i, name in enumerate(names)}
        encoded = np.array([index[label] for label in raw_labels], dtype=int)
    splits = None
    if split_column:
        values = frame[split_column].astype(str).str.strip().str.lower().map(_SPLIT_ALIASES)
        if values.isna().any():
            bad = sorted(set(frame[split_column][values.isna()].astype(str)))[:5]
            raise ValueError(f"Split column {split_column!r} of {source} has values {bad}; expected one of train, val, "
                             "test (or training, validation, testing). Fix those cells, or split at random instead with "
                             "--set data.split_column=null.")
        splits = values.to_numpy(dtype=object)
        source = f"{source} (pre-split by column {split_column!r})"
    table = ImageTable(
        labels=encoded,
        class_names=names,
        paths=np.array(paths, dtype=object),
        groups=_group_ids(frame[group_column]) if group_column else None,
        splits=splits,
        source=source,
    )
    return _check_classes(table, source)


def _blank(column) -> np.ndarray:
    """True where a cell is empty: missing (NaN/None) or only whitespace."""
    return (column.isna() | column.astype(str).str.strip().eq("")).to_numpy()


def _row_names(frame, mask: np.ndarray, source: str, shown: int = 5) -> str:
    """The rows at `mask`, as file lines for a CSV (header on line 1) or as DataFrame index labels."""
    if source.startswith("csv "):
        names = [f"line {position + 2}" for position in np.flatnonzero(mask)]
    else:
        names = [f"index {label!r}" for label in frame.index[mask]]
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _group_ids(column) -> np.ndarray:
    """Group ids as text; a blank cell is a group of its own (one unknown patient is not every unknown patient)."""
    groups = column.astype(str).str.strip().to_numpy(dtype=object)
    for position in np.flatnonzero(_blank(column)):
        groups[position] = f"<ungrouped row {position}>"
    return groups


def from_csv(path: str | os.PathLike, **columns) -> ImageTable:
    """Reads a CSV file (see `from_dataframe`); relative image paths are relative to the CSV's folder."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: '{path}'.")
    columns.setdefault("root", path.parent)
    return from_dataframe(pd.read_csv(path), source=f"csv {path}", **columns)


def with_weights(table: ImageTable, csv_path: str | os.PathLike, column: str, path_column: str = "path") -> ImageTable:
    """`table` with per-image training weights read from `column` of a CSV file, matched by path.

    Relative paths in the CSV are relative to its folder. Every image of `table` needs a row.

    Raises:
        ValueError: if a column is missing, an image has no row, or a weight is not a finite
            number at least 0 (the message names examples and how to fix them).

    Example:
        >>> table = with_weights(from_folder("data/line3"), "data/line3/labels.csv", "label_confidence")  # doctest: +SKIP
    """
    import pandas as pd

    if table.paths is None:
        raise ValueError(f"Per-image weights (column {column!r}) are matched by file path, but this data has "
                         "no files (arrays or TFDS). Unset data.weight_column.")
    csv_path = Path(csv_path)
    frame = pd.read_csv(csv_path)
    missing = [c for c in (path_column, column) if c not in frame.columns]
    if missing:
        raise ValueError(f"Column(s) {missing} not found in '{csv_path}'. Found columns: {list(frame.columns)}. "
                         f"Expected a path column ({path_column!r}) and the weight column the recipe names "
                         f"(data.weight_column: {column!r}). Add the column, name another with "
                         "--set data.weight_column=COLUMN, or train unweighted with --set data.weight_column=null "
                         "(--weight-column none).")
    weights = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        examples = frame[path_column][bad].astype(str).tolist()[:3]
        raise ValueError(f"Column {column!r} of '{csv_path}' must hold numbers at least 0; {int(bad.sum())} row(s) do "
                         f"not, e.g. {examples}. Fix or remove those rows.")
    by_path = {os.path.normpath(p if os.path.isabs(p) else csv_path.parent / p): w
               for p, w in zip(frame[path_column].astype(str), weights)}
    keys = [os.path.normpath(p) for p in table.paths]
    unmatched = [k for k in keys if k not in by_path]
    if unmatched:
        raise ValueError(f"{len(unmatched)} of {len(keys)} images have no row in '{csv_path}', e.g. {unmatched[:3]}. "
                         f"Add a row per image ({path_column} relative to the CSV's folder), or unset data.weight_column.")
    table_weights = np.array([by_path[k] for k in keys], dtype=float)
    if not (table_weights > 0).any():
        raise ValueError(f"Every weight in column {column!r} of '{csv_path}' is 0: nothing would be learned.")
    return replace(table, weights=table_weights)


#: GTSRB class ids 0-42 as snake-case names.
GTSRB_CLASS_NAMES = (
    "speed_limit_20", "speed_limit_30", "speed_limit_50", "speed_limit_60", "speed_limit_70",
    "speed_limit_80", "end_of_speed_limit_80", "speed_limit_100", "speed_limit_120", "no_passing",
    "no_passing_over_3_5_tons", "right_of_way_at_next_intersection", "priority_road", "yield",
    "stop", "no_vehicles", "over_3_5_tons_prohibited", "no_entry", "general_caution",
    "dangerous_curve_left", "dangerous_curve_right", "double_curve", "bumpy_road", "slippery_road",
    "road_narrows_on_the_right", "road_work", "traffic_signals", "pedestrians", "children_crossing",
    "bicycles_crossing", "beware_of_ice_snow", "wild_animals_crossing", "end_of_all_limits",
    "turn_right_ahead", "turn_left_ahead", "ahead_only", "go_straight_or_right",
    "go_straight_or_left", "keep_right", "keep_left", "roundabout_mandatory", "end_of_no_passing",
    "end_of_no_passing_over_3_5_tons",
)


def _gtsrb_records(csv_path: Path) -> list[tuple[str, int, tuple]]:
    import pandas as pd

    frame = pd.read_csv(csv_path, sep=";")
    expected = ["Filename", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise ValueError(
            f"'{csv_path}' lacks GTSRB column(s) {missing}. Expected semicolon-separated "
            f"Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId. Found: {list(frame.columns)}"
        )
    rois = frame[["Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"]].to_numpy(dtype=int)
    return list(zip(frame["Filename"].astype(str), frame["ClassId"].astype(int), map(tuple, rois)))


def from_gtsrb(root: str | os.PathLike) -> ImageTable:
    """Reads the GTSRB official layout, cropped to each sign's ROI.

    `root/Final_Training/Images/000NN/GT-000NN.csv` gives the training images; an optional
    `root/Final_Test/Images/GT-final_test.csv` gives the test split. Training images of one
    physical sign come in tracks (`TTTTT_VVVVV.ppm`: track, then view); the track is the group, so no sign is in two
    splits.

    Example:
        >>> table = from_gtsrb("GTSRB")  # doctest: +SKIP
        >>> table.class_names[:2]  # doctest: +SKIP
        ['speed_limit_20', 'speed_limit_30']
    """
    root = Path(root)
    training = root / "Final_Training" / "Images"
    if not training.is_dir():
        raise FileNotFoundError(
            f"No GTSRB layout in '{root}': expected {training}/000NN/GT-000NN.csv (the official "
            "GTSRB_Final_Training_Images archive unpacked there)."
        )
    rows = []
    for class_dir in sorted(p for p in training.iterdir() if p.is_dir()):
        csv_files = sorted(class_dir.glob("GT-*.csv"))
        if not csv_files:
            raise FileNotFoundError(f"'{class_dir}' has no GT-{class_dir.name}.csv annotation file.")
        for filename, class_id, roi in _gtsrb_records(csv_files[0]):
            track = re.match(r"(\d+)_(\d+)", filename)
            group = f"{class_id}_{track.group(1) if track else filename}"
            rows.append((str(class_dir / filename), class_id, group, "train", roi))
    test_csv = root / "Final_Test" / "Images" / "GT-final_test.csv"
    if test_csv.is_file():
        for filename, class_id, roi in _gtsrb_records(test_csv):
            rows.append((str(test_csv.parent / filename), class_id, f"test_{filename}", "test", roi))
    if not rows:
        raise FileNotFoundError(f"No annotated images found under '{training}'.")
    class_ids = sorted({row[1] for row in rows})
    index = {class_id: i for i, class_id in enumerate(class_ids)}
    names = [GTSRB_CLASS_NAMES[c] if c < len(GTSRB_CLASS_NAMES) else f"class_{c}" for c in class_ids]
    table = ImageTable(
        labels=np.array([index[row[1]] for row in rows], dtype=int),
        class_names=names,
        paths=np.array([row[0] for row in rows], dtype=object),
        groups=np.array([row[2] for row in rows], dtype=object),
        splits=np.array([row[3] for row in rows], dtype=object) if test_csv.is_file() else None,
        rois=np.array([row[4] for row in rows], dtype=int),
        source=f"gtsrb {root}",
    )
    return _check_classes(table, f"'{root}'")


def from_nih(csv_path: str | os.PathLike, finding: str | None = "Pneumonia", image_dir: str | os.PathLike | None = None) -> ImageTable:
    """Reads NIH ChestX-ray14 (`Data_Entry_2017.csv`), patients as groups.

    With a `finding`: that finding vs `No Finding`; images whose labels name other findings only
    are left out, being neither clearly positive nor normal. With `finding=None`: multi-label over
    every finding in the file, `No Finding` being the all-zero row. Images are looked up by file
    name anywhere under `image_dir` (the NIH archives unpack into `images_001/images/...`), by
    default the CSV's folder.

    Example:
        >>> table = from_nih("Data_Entry_2017.csv", finding="Pneumonia")  # doctest: +SKIP
        >>> table.class_names  # doctest: +SKIP
        ['No Finding', 'Pneumonia']
    """
    import pandas as pd

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"NIH CSV not found: '{csv_path}'. Expected Data_Entry_2017.csv.")
    frame = pd.read_csv(csv_path)
    needed = ["Image Index", "Finding Labels", "Patient ID"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"'{csv_path}' lacks NIH column(s) {missing}. Found: {list(frame.columns)}")
    image_dir = Path(image_dir) if image_dir is not None else csv_path.parent
    located = {p.name: str(p) for p in image_dir.rglob("*.png")}
    frame = frame.assign(path=[located.get(name, str(image_dir / name)) for name in frame["Image Index"]])
    if finding is None:
        return from_dataframe(frame, "path", "Finding Labels", group_column="Patient ID",
                              source=f"nih {csv_path} (multi-label)", multi_label=True, no_label="No Finding")
    findings = frame["Finding Labels"].astype(str).str.split("|")
    positive = findings.map(lambda labels: finding in labels)
    normal = findings.map(lambda labels: labels == ["No Finding"])
    if not positive.any():
        known = sorted({label for labels in findings for label in labels})
        raise ValueError(f"No image labelled {finding!r} in '{csv_path}'. Findings present: {known}")
    frame = frame[positive | normal]
    table = ImageTable(
        labels=positive[frame.index].to_numpy().astype(int),
        class_names=["No Finding", finding],
        paths=frame["path"].to_numpy(dtype=object),
        groups=frame["Patient ID"].astype(str).to_numpy(dtype=object),
        source=f"nih {csv_path} ({finding} vs No Finding)",
    )
    return _check_classes(table, f"'{csv_path}'")


def from_arrays(images: np.ndarray, labels, class_names: list[str] | None = None, groups=None) -> ImageTable:
    """Wraps in-memory images `(n, height, width[, channels])` and integer or string labels, or an
    `(n, num_classes)` 0/1 matrix for multi-label data."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(
            f"Expected images of shape (n, height, width[, channels]) and n labels. "
            f"Received: images.shape={images.shape}, len(labels)={len(labels)}"
        )
    labels = np.asarray(labels)
    if labels.ndim == 2:  # multi-hot rows: multi-label data
        names = list(class_names) if class_names is not None else [str(i) for i in range(labels.shape[1])]
        encoded = (labels > 0).astype(np.uint8)
    elif labels.dtype.kind in "iu" and class_names is not None:
        names, encoded = list(class_names), labels.astype(int)
    else:
        names = sorted({str(label) for label in labels})
        encoded = np.array([names.index(str(label)) for label in labels], dtype=int)
    if images.dtype != np.uint8:
        from tfx_transfer.data.images import _to_uint8

        images = _to_uint8(images)
    table = ImageTable(labels=encoded, class_names=names, arrays=images,
                       groups=None if groups is None else np.asarray(groups, dtype=object), source="arrays")
    return _check_classes(table, "the arrays")


def from_tfds(name: str, data_dir: str | os.PathLike | None = None, image_key: str = "image", label_key: str = "label") -> ImageTable:
    """Loads a TFDS data set that is already prepared on this machine (nothing is downloaded).

    Every split the data set has is kept as the predefined split (`validation` becomes `val`).
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
    if not Path(builder.data_dir).joinpath("dataset_info.json").exists():
        raise FileNotFoundError(
            f"TFDS data set {name!r} is not prepared in '{builder.data_dir}', and this toolkit never "
            "downloads. Prepare it on a machine with internet (tfds build) and copy the folder, or "
            "pass data_dir=."
        )
    images, labels, splits = [], [], []
    for split in builder.info.splits:
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            images.append(example[image_key])
            labels.append(int(example[label_key]))
            splits.append(_SPLIT_ALIASES.get(split, split))
    feature = builder.info.features[label_key]
    class_names = list(getattr(feature, "names", [])) or [str(i) for i in range(max(labels) + 1)]
    table = from_arrays(np.stack(images), np.array(labels), class_names)
    unknown = sorted(set(splits) - set(SPLIT_NAMES))
    return replace(table, splits=None if unknown else np.array(splits, dtype=object), source=f"tfds:{name}")


def load_source(data, **options) -> ImageTable:
    """Reads `data`, choosing the reader from what it is.

    - a DataFrame: `from_dataframe`;
    - `"tfds:<name>"`: `from_tfds`;
    - a `.csv` file with NIH columns (`Finding Labels`): `from_nih`; another `.csv`: `from_csv`;
    - a folder with `Final_Training/Images`: `from_gtsrb`; another folder: `from_folder`.

    Example:
        >>> table = load_source("data/chest_xray")  # doctest: +SKIP
    """
    if hasattr(data, "columns"):
        return from_dataframe(data, **options)
    text = str(data)
    if text.startswith("tfds:"):
        return from_tfds(text[len("tfds:"):], **options)
    path = Path(text)
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", errors="replace") as file:
            header = file.readline()
        if "Finding Labels" in header:
            return from_nih(path, **options)
        return from_csv(path, **options)
    if (path / "Final_Training" / "Images").is_dir():
        return from_gtsrb(path)
    return from_folder(path, **options)
