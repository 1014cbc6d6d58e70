"""Readers of the official layouts of public data sets: GTSRB (`Final_Training/Images`, cropped to
the annotated boxes, tracks as groups), NIH ChestX-ray14 (`Data_Entry_2017.csv`: a finding vs
`No Finding`, patients as groups) and TFDS data sets already prepared on this machine.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from tfx_transfer.data.table import SPLIT_NAMES, _SPLIT_ALIASES, ImageTable, _check_classes, from_arrays, from_dataframe

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
