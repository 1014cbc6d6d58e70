from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tiny_data import COLOURS, solid_image, write_bad_folder, write_dicom
from tfx_transfer.data.images import content_hash, read_image, scan_images


def test_read_image_converts_every_mode_to_rgb_uint8(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((5, 7), 90, np.uint8), "L").save(grey)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((5, 7, 4), (10, 20, 30, 0), np.uint8), "RGBA").save(rgba)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (7, 5), (0, 0, 0, 0)).save(cmyk)  # no ink: white
    palette = tmp_path / "palette.gif"
    Image.fromarray(np.full((5, 7, 3), (200, 10, 10), np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE).save(palette)
    for path, expected in ((grey, (90, 90, 90)), (rgba, (10, 20, 30)), (cmyk, (255, 255, 255)), (palette, (200, 10, 10))):
        image = read_image(path)
        assert image.shape == (5, 7, 3) and image.dtype == np.uint8, path
        np.testing.assert_allclose(image.reshape(-1, 3).mean(0), expected, atol=3, err_msg=str(path))


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "ramp16.png"
    Image.fromarray(np.linspace(0, 65535, 256, dtype=np.uint16).reshape(16, 16)).save(path)
    image = read_image(path)[..., 0].ravel()
    assert image.min() == 0 and image.max() == 255
    assert len(np.unique(image)) > 200  # a clipped image would collapse to {0, 255}
    assert np.all(np.diff(image.astype(int)) >= 0)


def test_sixteen_bit_tiff_is_scaled(tmp_path):
    path = tmp_path / "grey16.tif"
    Image.fromarray(np.full((4, 4), 32896, np.uint16)).save(path)  # 128 * 257
    assert read_image(path)[0, 0, 0] == 128


def test_roi_crops_inclusively(tmp_path):
    path = tmp_path / "sign.ppm"
    pixels = np.zeros((20, 20, 3), np.uint8)
    pixels[5:11, 3:9] = 255
    Image.fromarray(pixels).save(path)
    crop = read_image(path, roi=(3, 5, 8, 10))
    assert crop.shape == (6, 6, 3) and crop.min() == 255


def test_dicom_uses_its_window(tmp_path):
    pixels = np.array([[0, 1000], [1500, 4000]], np.uint16)
    path = write_dicom(tmp_path / "w.dcm", pixels, window=(1000, 1000))  # window 500..1500
    image = read_image(path)[..., 0]
    np.testing.assert_array_equal(image, [[0, 128], [255, 255]])


def test_dicom_without_window_uses_percentiles_and_monochrome1_is_inverted(tmp_path):
    pixels = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (4, 1))
    plain = read_image(write_dicom(tmp_path / "p.dcm", pixels))[..., 0]
    inverted = read_image(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))[..., 0]
    assert plain[0, 0] == 0 and plain[0, -1] == 255
    np.testing.assert_array_equal(inverted, 255 - plain)


def test_dicom_rescale_slope_and_intercept_apply_before_the_window(tmp_path):
    pixels = np.array([[1000, 2000]], np.uint16)
    # Hounsfield-like: value * 1 - 1024 -> [-24, 976]; window centre 476 width 1000 -> [-24, 976]
    image = read_image(write_dicom(tmp_path / "ct.dcm", pixels, window=(476, 1000), intercept=-1024.0))
    np.testing.assert_array_equal(image[..., 0], [[0, 255]])


def test_multi_frame_dicom_is_refused_with_the_reason(tmp_path):
    frames = np.stack([np.full((4, 6), 100 * k, np.uint16) for k in range(3)])
    path = write_dicom(tmp_path / "cine.dcm", frames)
    with pytest.raises(OSError, match=r"multi-frame DICOM \(3 frames\) is not one image; expected one frame per file"):
        read_image(path)


def test_scan_images_finds_every_bad_file_and_routes_decoders(tmp_path):
    root = write_bad_folder(tmp_path / "bad")
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file() and "stray_nested" not in str(p))
    result = scan_images(paths)
    bad = {p.split("/")[-1]: reason for p, reason in result.problems}
    assert set(bad) == {"truncated.jpg", "zero_bytes.png", "notes.png"}
    assert bad["zero_bytes.png"] == "empty file (0 bytes)"
    decoders = dict(zip((p.split("/")[-1] for p in paths), result.decoders))
    assert decoders["cmyk.jpg"] == "pil" and decoders["sixteen_bit.png"] == "pil"
    assert decoders["palette.png"] == "tf" and decoders["rgba.png"] == "tf"


def test_scan_cache_is_reused_and_invalidated_by_changes(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(solid_image(COLOURS["red"])).save(path)
    cache = tmp_path / "scan.json"
    assert scan_images([str(path)], cache_file=cache).ok.all()
    path.write_bytes(b"")
    assert not scan_images([str(path)], cache_file=cache).ok.any()  # size changed: rescanned


def test_content_hash_matches_identical_bytes(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(solid_image(COLOURS["red"])).save(a)
    b.write_bytes(a.read_bytes())
    assert content_hash(a) == content_hash(b)


def test_read_image_raises_on_non_images(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("nope")
    with pytest.raises(OSError):
        read_image(path)


def _phone_photo(path, orientation: int = 6):
    """A 20x40 picture, white on its left, stored turned as a phone stores it, tagged to be shown upright."""
    upright = np.zeros((20, 40, 3), np.uint8)
    upright[:, :10] = 255
    # Orientation 6 means "turn 90 degrees clockwise to show"; stored is the upright picture turned back.
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = stored.getexif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, quality=100)
    return upright


def test_exif_orientation_is_applied_when_reading_and_in_the_pipeline(tmp_path):
    from PIL import ImageOps

    from tfx_transfer.data.pipeline import make_dataset
    from tfx_transfer.data.sources import ImageTable

    path = tmp_path / "photo.jpg"
    upright = _phone_photo(path)
    pixels = read_image(path)
    assert pixels.shape == (20, 40, 3) and pixels[:, :8].mean() > 200 and pixels[:, 12:].mean() < 50
    np.testing.assert_array_equal(pixels, np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")))
    scan = scan_images([str(path)])
    assert scan.decoders[0] == "pil" and scan.sizes[0].tolist() == [20, 40] and scan.orientations[0] == 6
    table = ImageTable(labels=np.zeros(1, int), class_names=["a", "b"], paths=np.array([str(path)], dtype=object),
                       decoders=scan.decoders, image_sizes=scan.sizes)
    batch, _ = next(iter(make_dataset(table, np.arange(1), (20, 40), 1)))
    np.testing.assert_array_equal(batch.numpy()[0], pixels)
    assert np.abs(pixels.astype(int) - upright).mean() < 8  # JPEG's loss only


def test_a_photo_without_orientation_stays_on_the_fast_decoder(tmp_path):
    Image.fromarray(solid_image((200, 30, 30))).save(tmp_path / "plain.jpg")
    assert scan_images([str(tmp_path / "plain.jpg")]).decoders[0] == "tf"


# Hostile bytes: what a broken camera, a half-copied file or a wrong extension hands the readers.
_HEADERS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"GIF89a", b"II*\x00", b"P6\n"]


@settings(max_examples=40, deadline=None)
@given(header=st.sampled_from(_HEADERS), body=st.binary(max_size=2048),
       suffix=st.sampled_from([".png", ".jpg", ".bmp", ".gif", ".tif", ".ppm", ".dcm"]))
def test_random_bytes_as_images_are_reported_never_raised(header, body, suffix):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/image{suffix}"
        with open(path, "wb") as file:
            file.write(header + body)
        scan = scan_images([path])  # never raises: a file is usable or listed with its reason
        assert len(scan.ok) == 1 and (scan.ok[0] or scan.problems[0][1])
        if scan.ok[0]:
            pixels = read_image(path)
            assert pixels.ndim == 3 and pixels.shape[-1] == 3 and pixels.dtype == np.uint8
