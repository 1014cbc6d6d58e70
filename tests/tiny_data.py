"""Tiny data sets written by the tests themselves, in every layout and format the toolkit reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"blue": (20, 40, 230), "green": (30, 200, 40), "red": (220, 30, 30)}


def solid_image(colour, size=24, seed=0):
    """A solid colour with a little noise, as in TFLite Model Maker's test data."""
    noise = np.random.default_rng(seed).integers(-12, 13, size=(size, size, 3))
    return np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8)


def write_solid_folder(root: Path, per_class: int = 8, size: int = 24) -> Path:
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(solid_image(colour, size, seed=i)).save(root / name / f"{name}_{i:02d}.png")
    return root


def write_bad_folder(root: Path) -> Path:
    """Good images of two classes plus every kind of trouble a real folder has."""
    write_solid_folder(root, per_class=6)
    good, bad = root / "green", root / "red"
    jpeg = root / "blue" / "whole.jpg"
    Image.fromarray(solid_image(COLOURS["blue"], 40)).save(jpeg, quality=95)
    (root / "blue" / "truncated.jpg").write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    (bad / "zero_bytes.png").write_bytes(b"")
    (bad / "notes.png").write_text("this is not an image")
    Image.new("CMYK", (30, 30), (0, 230, 230, 20)).save(bad / "cmyk.jpg")
    rgba = np.dstack([solid_image(COLOURS["green"], 24), np.full((24, 24), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(good / "rgba.png")
    Image.fromarray(solid_image(COLOURS["green"], 24)).convert("P", palette=Image.Palette.ADAPTIVE).save(good / "palette.png")
    sixteen = (np.full((24, 24), 200, np.uint16) * 257)  # grey 200 in 16 bits
    Image.fromarray(sixteen).save(good / "sixteen_bit.png")
    Image.fromarray(solid_image(COLOURS["red"], 24)).save(bad / "röntgen_ß_画像.png")
    (root / "empty_class").mkdir()
    (good / "stray_nested").mkdir()
    Image.fromarray(solid_image(COLOURS["green"], 24)).save(good / "stray_nested" / "ignored.png")
    return root


def write_kermany(root: Path, per_class=(6, 2, 3)) -> Path:
    """`root/{train,val,test}/{NORMAL,PNEUMONIA}/`, file names carrying a patient id as in Kermany."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val", "test"), per_class):
        for label, brightness in (("NORMAL", 60), ("PNEUMONIA", 180)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(brightness + rng.normal(0, 10, (32, 32)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "L").save(folder / f"person{i}_{split}_{label.lower()}.jpeg")
    return root


def write_gtsrb(root: Path, classes=(14, 38, 39), tracks=2, per_track=3) -> Path:
    """The official GTSRB layout with ROIs, tracks and a Final_Test folder."""
    rng = np.random.default_rng(0)
    colours = [(220, 30, 30), (30, 60, 220), (240, 240, 240)]
    test_rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for index, class_id in enumerate(classes):
        folder = root / "Final_Training" / "Images" / f"{class_id:05d}"
        folder.mkdir(parents=True)
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for track in range(tracks):
            for view in range(per_track):
                image = rng.integers(0, 60, (40, 36, 3)).astype(np.uint8)  # dark border: background
                image[5:35, 5:31] = colours[index]  # the sign, inside the ROI
                name = f"{track:05d}_{view:05d}.ppm"
                Image.fromarray(image).save(folder / name)
                rows.append(f"{name};36;40;5;5;30;34;{class_id}")
        (folder / f"GT-{class_id:05d}.csv").write_text("\n".join(rows) + "\n")
        test_folder = root / "Final_Test" / "Images"
        test_folder.mkdir(parents=True, exist_ok=True)
        for view in range(2):
            image = np.zeros((40, 36, 3), np.uint8)
            image[5:35, 5:31] = colours[index]
            name = f"{index * 2 + view:05d}.ppm"
            Image.fromarray(image).save(test_folder / name)
            test_rows.append(f"{name};36;40;5;5;30;34;{class_id}")
    (root / "Final_Test" / "Images" / "GT-final_test.csv").write_text("\n".join(test_rows) + "\n")
    return root


def write_nih(root: Path) -> Path:
    """A tiny `Data_Entry_2017.csv` with images under `images_001/images/`."""
    folder = root / "images_001" / "images"
    folder.mkdir(parents=True)
    rows = ["Image Index,Finding Labels,Follow-up #,Patient ID"]
    patterns = (["No Finding", "No Finding", "Effusion"], ["Pneumonia", "Pneumonia|Effusion", "No Finding"])
    for patient in range(12):
        for visit, finding in enumerate(patterns[patient % 2]):
            name = f"{patient:08d}_{visit:03d}.png"
            value = 180 if "Pneumonia" in finding else 60
            Image.fromarray(np.full((32, 32), value, np.uint8), "L").save(folder / name)
            rows.append(f"{name},{finding},{visit},{patient}")
    (root / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    return root


def write_dicom(path: Path, pixels: np.ndarray, window=None, photometric="MONOCHROME2", slope=1.0, intercept=0.0) -> Path:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    if pixels.ndim == 3:  # (frames, rows, columns): a multi-frame file
        dataset.NumberOfFrames = pixels.shape[0]
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.PixelData = pixels.astype("<u2").tobytes()
    pydicom.dcmwrite(str(path), dataset, enforce_file_format=True)
    return path


def write_overlapping_parts(root: Path, count: int = 40, shift: float = 0) -> Path:
    """`root/{ok,scratched}/partNN.png`, 36x40: scratched parts are brighter on average, but the
    brightness of the two classes overlaps, so a model trained on them is neither perfect nor
    useless and its scores are not saturated. `shift` brightens every part (another site's light)."""
    rng = np.random.default_rng(1 + int(shift))
    for name, level in (("ok", 110), ("scratched", 150)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            mean = level + shift + rng.normal(0, 18)
            pixels = np.clip(mean + rng.normal(0, 25, (36, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"part{i:02d}.png")
    return root


def textured_part(rng, size: int = 64) -> np.ndarray:
    """A clean part: a grey woven texture (two crossing sinusoids, random phase) with sensor noise."""
    y, x = np.mgrid[0:size, 0:size]
    phase = rng.uniform(0, 2 * np.pi, 2)
    texture = 120 + 25 * np.sin(x / 2.0 + phase[0]) + 25 * np.sin(y / 3.0 + phase[1])
    return np.clip(texture[..., None] + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)


def add_scratch(pixels: np.ndarray, rng) -> np.ndarray:
    """A thin bright diagonal scratch, 12-20 pixels long, anywhere on the part."""
    size = pixels.shape[0]
    length = int(rng.integers(12, 21))
    row, column = rng.integers(4, size - length - 4, 2)
    scratched = pixels.copy()
    for step in range(length):
        scratched[row + step, column + step:column + step + 2] = 250
    return scratched


def write_scratched_textures(root: Path, good: int = 40, scratched: int = 16, size: int = 64, seed: int = 0) -> Path:
    """`root/{good,scratched}/partNN.png`: woven textures, and the same kind with a planted scratch."""
    rng = np.random.default_rng(seed)
    for name, count in (("good", good), ("scratched", scratched)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = textured_part(rng, size)
            Image.fromarray(add_scratch(pixels, rng) if name == "scratched" else pixels).save(root / name / f"part{i:02d}.png")
    return root
