"""Corrected labels on top of a source: the way back from `tfx-transfer review` into `run` and `compare`.

A corrections file is a CSV with a `path` column and a `label` column holding a class name, or
`exclude` to leave the image out of every split. A review's own `review.csv`
(`path,given_label,suggested_label,label_quality,issue`) works as it is: its rows flagged `label`
take the suggested label (accepting every suggestion). Paths are absolute or relative to the
corrections file's folder or to the data's folder. The corrections apply after splitting, so a
corrected image stays in its split and the test split is the same images before and after.

A row naming an image the data does not have, or a class it does not have, is refused with its line
numbers: a correction that silently does nothing is how a team ships the label it meant to fix.

Example:
    >>> table, splits, record = apply_corrections(table, splits, "fixes.csv")  # doctest: +SKIP
    >>> record["changed"], record["excluded"]  # doctest: +SKIP
    (12, 3)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from tfx_transfer.data.splits import Splits
from tfx_transfer.data.table import ImageTable

#: The label that takes an image out of every split.
EXCLUDE = "exclude"
#: Rows of a refused corrections file named in the message (the rest are counted).
SHOWN_ROWS = 5


class CorrectionsError(ValueError):
    """A corrections file that cannot be applied; the message names the rows and the fix."""


def _read_rows(path: Path) -> list[tuple[int, str, str]]:
    """`(line, path, label)` of every row that asks for something (blank labels ask for nothing)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise CorrectionsError(f"Cannot read the corrections file '{path}' ({error}). Expected a CSV with columns "
                               "path,label (label: a class name or 'exclude').") from None
    if "path" not in frame.columns or not ({"label", "suggested_label"} & set(frame.columns)):
        raise CorrectionsError(f"The corrections file '{path}' has columns {list(frame.columns)}; expected path and "
                               "label (a class name or 'exclude'), or a review's review.csv (path, suggested_label, issue).")
    if "label" in frame.columns:
        wanted = frame["label"]
        asks = wanted.str.strip() != ""
    else:  # a review.csv: accept its suggestions for the rows it flags as label issues
        wanted = frame["suggested_label"]
        asks = frame.get("issue", "").astype(str).str.split(";").apply(lambda parts: "label" in parts)
    lines = np.arange(len(frame)) + 2  # the header is line 1
    return [(int(line), str(p).strip(), str(label).strip())
            for line, p, label, ask in zip(lines, frame["path"], wanted, asks) if ask]


def _index_of_paths(table: ImageTable) -> tuple[dict[str, int], Path | None]:
    paths = [os.path.abspath(str(p)) for p in table.paths]
    root = Path(os.path.commonpath(paths)) if len(paths) > 1 else (Path(paths[0]).parent if paths else None)
    return {p: i for i, p in enumerate(paths)}, root


def _locate(text: str, index: dict[str, int], bases: list[Path]) -> int | None:
    if os.path.isabs(text):
        return index.get(os.path.abspath(text))
    for base in bases:
        found = index.get(os.path.abspath(base / text))
        if found is not None:
            return found
    return None


def _refuse(what: str, rows: list[tuple[int, str, str]], path: Path, fix: str) -> None:
    shown = "; ".join(f"line {line}: {p!r} -> {label!r}" for line, p, label in rows[:SHOWN_ROWS])
    more = f" (and {len(rows) - SHOWN_ROWS} more)" if len(rows) > SHOWN_ROWS else ""
    raise CorrectionsError(f"The corrections file '{path}' has {len(rows)} row(s) {what}: {shown}{more}. {fix}")


def apply_corrections(table: ImageTable, splits: Splits, path: str | os.PathLike) -> tuple[ImageTable, Splits, dict]:
    """`(table, splits, record)` with the corrections of the file at `path` applied (see the module
    documentation); `record` (file, sha256, changed, excluded) goes into the run's data.json.

    Raises:
        CorrectionsError: for a missing or malformed file, unknown images or unknown classes (the
            message names the rows), or data the corrections cannot apply to.
    """
    path = Path(path)
    if not path.is_file():
        raise CorrectionsError(f"Corrections file not found: '{path.absolute()}' (from data.relabel / --relabel). "
                               "Expected a CSV with columns path,label, e.g. the review.csv of tfx-transfer review.")
    if table.multi_label or table.paths is None:
        raise CorrectionsError("Corrections apply to single-label data read from image files; this data is "
                               f"{'multi-label' if table.multi_label else 'held in memory'}. Remove data.relabel.")
    rows = _read_rows(path)
    index, root = _index_of_paths(table)
    bases = [path.resolve().parent] + ([root] if root is not None else [])
    skipped = {os.path.abspath(str(p)) for p, _ in table.skipped}
    classes = {name: k for k, name in enumerate(table.class_names)}
    located, unknown_paths, unknown_classes = [], [], []
    for line, text, label in rows:
        found = _locate(text, index, bases)
        if found is None:
            if not any(os.path.abspath(base / text) in skipped for base in bases) and os.path.abspath(text) not in skipped:
                unknown_paths.append((line, text, label))
            continue  # an unreadable file, already left out
        if label != EXCLUDE and label not in classes:
            unknown_classes.append((line, text, label))
        located.append((found, label))
    if unknown_paths:
        _refuse("naming images the data does not have", unknown_paths, path,
                f"Paths are absolute or relative to '{bases[0]}'{f' or {root}' if root else ''}; fix or remove them.")
    if unknown_classes:
        _refuse("naming classes the data does not have", unknown_classes, path,
                f"Expected one of {table.class_names} or '{EXCLUDE}'.")
    labels = table.labels.copy()
    excluded = sorted({found for found, label in located if label == EXCLUDE})
    changed = 0
    for found, label in located:
        if label != EXCLUDE and labels[found] != classes[label]:
            labels[found] = classes[label]
            changed += 1
    keep = lambda indices: indices[~np.isin(indices, excluded)]  # noqa: E731
    splits = replace(splits, train=keep(splits.train), val=keep(splits.val), test=keep(splits.test))
    record = {"file": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
              "rows": len(rows), "changed": changed, "excluded": len(excluded)}
    return replace(table, labels=labels), splits, record
