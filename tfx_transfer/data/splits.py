"""Train/validation/test splits: stratified, seeded, group-aware, and checked for leakage.

Rules: a predefined layout (Kermany's train/val/test folders, GTSRB's Final_Test) is respected and
only the missing splits are carved out of `train`; whenever the table has groups (patients, sign
tracks, modules) every group lands in exactly one split; the same `seed` gives the same splits on
every machine. `find_leaks` reports byte-identical images that sit in two splits.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split

from tfx_transfer.data.images import content_hash
from tfx_transfer.data.sources import SPLIT_NAMES, ImageTable


@dataclass(frozen=True)
class Splits:
    """Indices into an `ImageTable` for each split, and any leaks found between them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    leaks: list[list[str]] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLIT_NAMES}


def _carve(indices: np.ndarray, labels: np.ndarray, groups, fraction: float, seed: int, what: str):
    """Splits `indices` into (rest, carved) with `fraction` of them carved, stratified by label."""
    if len(indices) == 0 or fraction <= 0:
        return indices, indices[:0]
    sub_labels = labels[indices] + 1  # multi-label stratification keys start at -1
    if groups is None:
        counts = np.bincount(sub_labels)
        if counts[counts > 0].min() < 2:
            raise ValueError(_too_few_message(sub_labels, what))
        rest, carved = train_test_split(
            indices, test_size=fraction, stratify=sub_labels, random_state=seed, shuffle=True
        )
        return np.sort(rest), np.sort(carved)
    return _carve_groups(indices, sub_labels, groups[indices], fraction, seed, what)


def _carve_groups(indices, labels, groups, fraction, seed, what):
    """Stratified by each group's majority label: per class, a seeded share of its groups."""
    rng = np.random.default_rng(seed)
    names, inverse = np.unique(groups.astype(str), return_inverse=True)
    majority = np.array([np.bincount(labels[inverse == g]).argmax() for g in range(len(names))])
    carved_groups = []
    # Per majority class: a class that is never a group's majority (multi-label rows, mixed
    # groups) has no groups of its own to allocate.
    for label in np.unique(majority):
        members = np.flatnonzero(majority == label)
        if len(members) < 2:
            raise ValueError(
                f"Class {int(label) - 1} has only {len(members)} group(s) (patients, tracks, modules) "
                f"to carve a {what} split from; group-aware splitting needs at least 2 per class. "
                "Add data, or drop the group column if the images are independent."
            )
        count = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        carved_groups.extend(rng.permutation(members)[:count])
    carved = np.isin(inverse, carved_groups)
    return np.sort(indices[~carved]), np.sort(indices[carved])


def _too_few_message(labels: np.ndarray, what: str) -> str:
    counts = np.bincount(labels)
    small = {int(i) - 1: int(c) for i, c in enumerate(counts) if 0 < c < 2}
    return (
        f"Too few images to stratify a {what} split: classes {sorted(small)} have only "
        f"{sorted(small.values())} image(s); every class needs at least 2 at this step (3 for "
        "train, val and test). Add images to those classes or merge them."
    )


def split_table(
    table: ImageTable,
    validation_split: float = 0.15,
    test_split: float = 0.15,
    seed: int = 0,
    check_leaks: bool = True,
    complete: tuple[str, ...] = SPLIT_NAMES,
) -> Splits:
    """Splits a table into train/val/test indices.

    Args:
        table: The images.
        validation_split: Fraction of the data for validation (when the layout has no `val`).
        test_split: Fraction for test (when the layout has no `test`).
        seed: Makes the split reproducible.
        check_leaks: Hash every file to find byte-identical images in two splits (warns).
        complete: The splits that must hold every class (the anomaly strategy needs only test to:
            it learns from good images, and with no defect in validation it sets a quantile threshold).

    Raises:
        ValueError: if a split would miss a class, or a class has too few images for the splits.

    Example:
        >>> splits = split_table(table, validation_split=0.2, test_split=0.2, seed=1)  # doctest: +SKIP
        >>> splits.sizes()  # doctest: +SKIP
        {'train': 60, 'val': 20, 'test': 20}
    """
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1). Received: {name}={value!r}")
    if validation_split + test_split >= 1.0:
        raise ValueError(
            f"validation_split + test_split must leave images for training. Received: "
            f"{validation_split} + {test_split}"
        )
    labels, groups = table.stratify_labels, table.groups
    everything = np.arange(len(table))
    if table.splits is not None:
        assigned = {name: everything[table.splits == name] for name in SPLIT_NAMES}
    else:
        assigned = {"train": everything, "val": everything[:0], "test": everything[:0]}
    if table.splits is None or len(assigned["test"]) == 0:
        assigned["train"], assigned["test"] = _carve(assigned["train"], labels, groups, test_split, seed, "test")
    if len(assigned["val"]) == 0:
        remaining = validation_split / max(1.0 - (test_split if table.splits is None else 0.0), 1e-9)
        assigned["train"], assigned["val"] = _carve(assigned["train"], labels, groups, remaining, seed + 1, "validation")
    for name in complete if not table.multi_label else ("train",):
        present = table.labels[assigned[name]]
        present = set(np.flatnonzero(present.any(axis=0)).tolist()) if table.multi_label else set(present.tolist())
        missing = sorted(set(range(table.num_classes)) - present)
        if missing:
            counts = {table.class_names[i]: int((table.stratify_labels == i).sum()) for i in missing}
            raise ValueError(
                f"Class(es) {[table.class_names[i] for i in missing]} have no image in the {name} "
                f"split (images per class overall: {counts}). Every class needs images in train, "
                "val and test: add images, or, with a pre-split layout, put some into "
                f"{name}/<class>/."
            )
    leaks = find_leaks(table, assigned) if check_leaks else []
    if leaks:
        warnings.warn(
            f"{len(leaks)} image(s) are byte-identical across splits, which inflates test "
            f"scores: {leaks[:5]}. Remove the duplicates or give them one group id.",
            stacklevel=2,
        )
    return Splits(assigned["train"], assigned["val"], assigned["test"], leaks)


def _hash_row(table: ImageTable, index: int) -> str:
    if table.paths is not None:
        try:
            return content_hash(table.paths[index])
        except OSError:
            return f"unreadable:{table.paths[index]}"
    return hashlib.sha1(np.ascontiguousarray(table.arrays[index]).tobytes()).hexdigest()


def find_leaks(table: ImageTable, assigned: dict[str, np.ndarray]) -> list[list[str]]:
    """Groups of identical images (by content hash) that appear in more than one split.

    Returns:
        One list per leaked image: `"<split>:<path or index>"` for each copy.
    """
    seen: dict[str, list[tuple[str, str]]] = {}
    for split, indices in assigned.items():
        for index in indices:
            name = str(table.paths[index]) if table.paths is not None else f"#{index}"
            seen.setdefault(_hash_row(table, int(index)), []).append((split, name))
    return [
        [f"{split}:{name}" for split, name in copies]
        for digest, copies in seen.items()
        if not digest.startswith("unreadable") and len({split for split, _ in copies}) > 1
    ]


def nested_subset(table: ImageTable, indices, fraction: float, seed: int = 0) -> np.ndarray:
    """A stratified share of `indices` that grows with `fraction`: for one seed, the subset at
    0.1 is inside the one at 0.25, which is inside the one at 0.5 (learning curves compare like
    with like). With groups, whole groups are taken, in a seeded order per class.

    Every class keeps at least one image (one group).

    Example:
        >>> small = nested_subset(table, splits.train, 0.1, seed=0)  # doctest: +SKIP
        >>> set(small) <= set(nested_subset(table, splits.train, 0.5, seed=0))  # doctest: +SKIP
        True
    """
    indices = np.asarray(indices)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1]. Received: fraction={fraction!r}")
    if fraction == 1.0:
        return np.sort(indices)
    rng = np.random.default_rng(seed)
    labels = table.stratify_labels[indices]
    units = indices if table.groups is None else table.groups[indices].astype(str)
    chosen = []
    for label in np.unique(labels):
        members = indices[labels == label]
        member_units = np.unique(units[labels == label])
        order = rng.permutation(len(member_units))
        keep = member_units[order[: max(1, int(round(fraction * len(member_units))))]]
        if table.groups is None:
            chosen.append(keep)
        else:
            chosen.append(members[np.isin(table.groups[members].astype(str), keep)])
    return np.sort(np.concatenate(chosen))
