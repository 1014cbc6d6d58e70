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
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from tfx_transfer.data.images import IMAGE_EXTENSIONS  # noqa: F401  (re-exported)
from tfx_transfer.data.official import GTSRB_CLASS_NAMES, from_gtsrb, from_nih, from_tfds  # noqa: F401  (re-exported)
from tfx_transfer.data.table import (  # noqa: F401  (re-exported: the one import for every reader)
    AUTO_SPLIT_COLUMN, SPLIT_NAMES, _SPLIT_ALIASES, ImageTable, _blank, _check_classes, _is_image, _row_names,
    from_arrays, from_dataframe)


def _class_folders(root: Path) -> tuple[list[Path], list[Path]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = sorted(p for p in root.iterdir() if _is_image(p))
    return folders, files


def from_folder(root: str | os.PathLike, class_names: list[str] | None = None) -> ImageTable:
    """Reads `root/<class>/*` or the pre-split `root/{train,val,test}/<class>/*` layout.

    Only files directly inside a class folder count; nested folders are ignored with a warning.
    An empty class folder is left out with a warning. Class folders with images beside split
    folders are refused (a mixed layout), never dropped.

    Args:
        root: The folder.
        class_names: Optional fixed class order; by default the sorted folder names.

    Raises:
        FileNotFoundError: if the folder does not exist or holds no class folders.
        ValueError: if fewer than two classes hold images, or the layout mixes split and class folders.

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
    _refuse_mixed_layout(root, folders, split_folders)
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
    _warn_left_out(nested, empty)
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


def _refuse_mixed_layout(root: Path, folders: list[Path], split_folders: dict[str, Path]) -> None:
    """Class folders with images beside train/val/test folders: one of the two layouts would be lost."""
    beside = [f for f in folders if f.name.lower() not in _SPLIT_ALIASES and any(_is_image(p) for p in f.iterdir())]
    if split_folders and beside:
        raise ValueError(
            f"'{root}' mixes two layouts: split folders ({', '.join(sorted(f.name for f in split_folders.values()))}) "
            f"and class folders beside them ({', '.join(f.name for f in beside[:5])}, with images). Reading one layout "
            "would silently leave out the other's images. Move the class folders into train/ (or val/, test/), or "
            "move the split folders' class folders up and let tfx-transfer split.")


def _warn_left_out(nested: list[Path], empty: list[str]) -> None:
    if nested:
        warnings.warn(
            f"Ignoring {len(nested)} folder(s) nested inside class folders: "
            f"{[str(p) for p in nested[:5]]}. Images must sit directly in their class folder.",
            stacklevel=3,
        )
    if empty:
        warnings.warn(
            f"Class folder(s) with no images: {empty}. Those classes are left out; add images to "
            "them or delete the folders.",
            stacklevel=3,
        )


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
