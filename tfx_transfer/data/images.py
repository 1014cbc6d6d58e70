"""Reading one image file of any format users bring into RGB uint8, and finding bad files early.

Formats: PNG (8- and 16-bit, palette, RGBA, grey), JPEG (RGB, grey, CMYK), BMP, PPM, TIFF (8/16-bit),
GIF (first frame), DICOM (`.dcm`, with pydicom). Everything becomes 3-channel RGB uint8, since
ImageNet backbones take three channels:

- grey is repeated into three channels; RGBA keeps its colour channels and drops alpha;
- palette and CMYK are converted by Pillow;
- 16-bit images are scaled by 255/65535 (the container's full range), never clipped;
- EXIF orientation (phone photos) is applied, as image viewers do, so a picture tagged "rotate
  90" is read upright (such files are decoded by Pillow: TensorFlow's decoders ignore the tag);
- DICOM uses the file's rescale slope/intercept, then its window centre/width when present, else
  the 0.5-99.5 percentile range; MONOCHROME1 (white = low) is inverted.

`scan_images` decodes every file once before training, in threads, and says which ones cannot be
read, so that one bad file never stops a run. Its result is cached per file (path, size, mtime).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".gif", ".dcm")

#: The EXIF tag of the orientation a camera recorded.
EXIF_ORIENTATION = 0x0112
#: Files that TensorFlow decodes natively in the tf.data graph (fast path); others go through Pillow.
NATIVE_DECODER = "tf"
PILLOW_DECODER = "pil"


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
        return np.clip(np.round(array.astype("float64") * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    if array.dtype.kind == "f":
        low, high = float(array.min(initial=0.0)), float(array.max(initial=1.0))
        scale = 255.0 if high <= 1.0 and low >= 0.0 else 255.0 / max(high - low, 1e-12)
        offset = 0.0 if high <= 1.0 and low >= 0.0 else low
        return np.clip(np.round((array - offset) * scale), 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def _to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    return array[..., :3]


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError as error:  # pragma: no cover - pydicom is a dependency
        raise ImportError("Reading DICOM needs pydicom: pip install pydicom") from error
    dataset = pydicom.dcmread(str(path))
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames > 1:
        # pixel_array would be (frames, height, width): read as one image, frames become rows.
        raise OSError(f"multi-frame DICOM ({frames} frames) is not one image; expected one frame per file. "
                      "Write each frame (or the one to classify) to its own file.")
    pixels = dataset.pixel_array.astype("float64")
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):  # RGB ultrasound, photographs
        return _to_uint8(pixels)[..., :3]
    pixels = pixels * float(getattr(dataset, "RescaleSlope", 1.0)) + float(getattr(dataset, "RescaleIntercept", 0.0))
    center, width = getattr(dataset, "WindowCenter", None), getattr(dataset, "WindowWidth", None)
    if center is not None and width is not None:
        # Multi-valued windows list alternatives; the first is the default view.
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        low, high = center - width / 2.0, center + width / 2.0
    else:
        low, high = np.percentile(pixels, [0.5, 99.5])
    scaled = np.clip((pixels - low) / max(high - low, 1e-12), 0.0, 1.0)
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.round(scaled * 255.0).astype(np.uint8)


def read_image(path: str | os.PathLike, roi: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Reads one image file as RGB uint8 `(height, width, 3)`.

    Args:
        path: The file.
        roi: Optional `(x1, y1, x2, y2)` crop in pixels, inclusive as in GTSRB's annotations.

    Raises:
        OSError: if the file is not a readable image (Pillow's message is kept).

    Example:
        >>> read_image("cell0001.png").shape  # doctest: +SKIP
        (300, 300, 3)
    """
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        array = _read_dicom(path)
    else:
        with Image.open(path) as image:
            image.seek(0)
            # As every image viewer does: a phone photo tagged "rotate 90" is shown (and learnt) upright.
            image = ImageOps.exif_transpose(image) if _orientation(image) != 1 else image
            if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1", "LA"):
                image = image.convert("RGBA" if image.mode in ("P", "PA", "LA") else "RGB")
            array = np.asarray(image)
    array = _to_rgb(_to_uint8(array))
    if roi is not None:
        x1, y1, x2, y2 = (int(v) for v in roi)
        array = array[max(y1, 0) : y2 + 1, max(x1, 0) : x2 + 1]
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class ScanResult:
    """What `scan_images` found: which files are usable and how each should be decoded.

    Attributes:
        ok: One bool per input path.
        decoders: `"tf"` (decoded natively in the tf.data graph) or `"pil"` per path.
        problems: `(path, reason)` for every unusable file.
        sizes: `(n, 2)` height and width of each file as shown upright (0 for unusable ones).
        orientations: The EXIF orientation of each file (1: as stored), applied when it is read.
    """

    ok: np.ndarray
    decoders: np.ndarray
    problems: list[tuple[str, str]]
    sizes: np.ndarray | None = None
    orientations: np.ndarray | None = None


def _orientation(image) -> int:
    """The EXIF orientation tag (1: upright, as stored; 2-8: mirrored and/or turned), 1 when absent or unreadable."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # noqa: BLE001 (a damaged EXIF block is no reason to lose the image)
        return 1


def _what_is_there(path: str) -> str:
    """What a path that is no regular file is, in words (for the reason of an unreadable input)."""
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as error:
            return "a symlink loop" if error.errno == errno.ELOOP else "a dangling link (its target does not exist)"
        return "a link to something that is not a file"
    if os.path.isdir(path):
        return "a folder named like an image"
    return "no such file"


def _scan_one(path: str) -> tuple[bool, str, str, int, int, int]:
    """Returns (ok, decoder, reason, height, width, orientation)."""
    try:
        if not os.path.isfile(path):
            return False, "", f"not an image file: {_what_is_there(path)}", 0, 0, 1
        if os.path.getsize(path) == 0:
            return False, "", "empty file (0 bytes)", 0, 0, 1
        suffix = Path(path).suffix.lower()
        if suffix == ".dcm":
            height, width = read_image(path).shape[:2]
            return True, PILLOW_DECODER, "", height, width, 1
        # A full load, so truncated files fail here (Pillow's LOAD_TRUNCATED_IMAGES is off by
        # default), not half-decoded during training.
        with Image.open(path) as image:
            image.load()
            fmt, mode, (width, height) = image.format, image.mode, image.size
            orientation = _orientation(image)
        if orientation in (5, 6, 7, 8):  # turned by 90 degrees: upright, the sides swap
            height, width = width, height
        # TensorFlow's decoders ignore EXIF orientation: a tagged photo goes through Pillow, which applies it.
        native = fmt in ("PNG", "JPEG", "BMP", "GIF") and mode in ("L", "RGB", "RGBA", "P", "LA", "PA") and orientation == 1
        return True, NATIVE_DECODER if native else PILLOW_DECODER, "", height, width, orientation
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... for bad files
        return False, "", f"{type(error).__name__}: {error}", 0, 0, 1


def _scan_cache_key(path: str) -> str:
    stat = os.stat(path)
    return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def scan_images(paths: list[str], cache_file: str | os.PathLike | None = None, workers: int = 8) -> ScanResult:
    """Decodes every file once and reports the ones that cannot be used.

    Args:
        paths: Image files.
        cache_file: Optional JSON file remembering results per (path, size, mtime), so a data set
            is scanned once, not at every run.
        workers: Decoding threads (Pillow releases the GIL while decoding).

    Example:
        >>> result = scan_images(["good.png", "empty.png"])  # doctest: +SKIP
        >>> result.problems  # doctest: +SKIP
        [('empty.png', 'empty file (0 bytes)')]
    """
    cache: dict[str, list] = {}
    if cache_file is not None and Path(cache_file).is_file():
        try:
            cache = json.loads(Path(cache_file).read_text())
        except ValueError:
            cache = {}
    keys, todo = [], []
    for path in paths:
        try:
            key = _scan_cache_key(path)
        except OSError:
            key = f"missing|{path}"
        keys.append(key)
        if len(cache.get(key, ())) != 6:  # missing, or written by an older version (no orientation)
            todo.append((key, path))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (key, _), result in zip(todo, pool.map(lambda item: _scan_one(item[1]), todo)):
            cache[key] = list(result)
    if cache_file is not None and todo:
        Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(f"{cache_file}.tmp{os.getpid()}")
        temporary.write_text(json.dumps(cache))
        os.replace(temporary, cache_file)
    results = [cache[key] for key in keys]
    problems = [(path, result[2]) for path, result in zip(paths, results) if not result[0]]
    return ScanResult(
        ok=np.array([result[0] for result in results], dtype=bool),
        decoders=np.array([result[1] for result in results], dtype=object),
        problems=problems,
        sizes=np.array([result[3:5] for result in results], dtype=int).reshape(-1, 2),
        orientations=np.array([result[5] for result in results], dtype=int),
    )


def content_hash(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes, for finding byte-identical images across splits."""
    digest = hashlib.sha1()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def warn_skipped(problems: list[tuple[str, str]], stacklevel: int = 2) -> None:
    """One warning naming every skipped file and why."""
    if problems:
        listing = "\n".join(f"  {path}: {reason}" for path, reason in problems)
        warnings.warn(
            f"Skipping {len(problems)} unreadable file(s); the run goes on without them:\n{listing}",
            stacklevel=stacklevel + 1,
        )
