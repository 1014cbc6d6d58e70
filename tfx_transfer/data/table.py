"""`ImageTable`, what every data source becomes, and the readers of data already in memory: a
pandas DataFrame (`from_dataframe`, which `from_csv` reads into) and numpy arrays (`from_arrays`).

Vocabulary: `class_names` are ordered as the integer labels; `groups` are ids of the physical
thing an image shows (patient, sign track, module): images of one group never go to two splits;
`splits` holds a predefined `train`/`val`/`test` per image when the layout brings one.
"""

from __future__ import annotations

import os
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
    # As text: pandas reads a column of names like 0001 as numbers.
    paths = [str(base / p) if base is not None and not os.path.isabs(p) else p for p in frame[path_column].astype(str)]
    raw_labels = frame[label_column].astype(str).str.strip().to_numpy()
    _refuse_conflicting_labels(paths, raw_labels, frame, source)
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
            bad = sorted({str(value) for value in frame[split_column][values.isna()]})[:5]
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


def _refuse_conflicting_labels(paths: list[str], labels, frame, source: str) -> None:
    """A ValueError naming the rows when one image is given two different labels (which would be learnt both ways)."""
    seen: dict[str, tuple[int, str]] = {}
    conflicts = []
    for row, (path, label) in enumerate(zip(paths, labels)):
        key = os.path.normpath(path)
        if key in seen and seen[key][1] != label:
            conflicts.append(f"'{path}': {seen[key][1]!r} in {_line(frame, seen[key][0], source)}, {label!r} in "
                             f"{_line(frame, row, source)}")
        seen.setdefault(key, (row, label))
    if conflicts:
        raise ValueError(f"{len(conflicts)} image(s) of {source} are listed twice with different labels: "
                         f"{'; '.join(conflicts[:5])}{'; ...' if len(conflicts) > 5 else ''}. Keep one row per image "
                         "(with the right label), or remove the doubtful ones.")


def _line(frame, row: int, source: str) -> str:
    """How an error names one row: its line in a CSV file (the header is line 1), else its index."""
    return f"line {row + 2}" if source.startswith("csv ") else f"row {frame.index[row]}"


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
