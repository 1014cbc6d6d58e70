"""Generated traffic signs in the GTSRB official layout: the traffic_signs recipe's built-in data.

No real traffic-sign data set ships in a reachable registry, so the built-in example is drawn
here, deterministically from a seed, and written exactly as GTSRB is distributed (`.ppm` files,
semicolon-separated `GT-*.csv` with ROIs, `TTTTT_VVVVV` track names) so the real reader runs.

Sixteen classes modelled on GTSRB families: speed limits that differ only in their digits,
prohibitory circles, warning triangles with pictograms, blue mandatory circles with left/right
arrows (mirror pairs: a flip changes the class), stop, yield and priority road. Each physical
sign is a track of several views (the car approaching: the sign grows) sharing its perspective,
lighting, occlusion and background, rendered over real textures (scikit-image's brick, grass and
gravel) or clutter, with blur and sensor noise.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

#: GTSRB class id -> how it is drawn.
SIGN_CLASSES = {
    1: ("speed", "30"), 2: ("speed", "50"), 5: ("speed", "80"),
    15: ("no_vehicles", None), 17: ("no_entry", None),
    18: ("warning", "caution"), 19: ("warning", "curve_left"), 20: ("warning", "curve_right"),
    33: ("mandatory", "turn_right"), 34: ("mandatory", "turn_left"), 35: ("mandatory", "ahead"),
    38: ("mandatory", "keep_right"), 39: ("mandatory", "keep_left"),
    12: ("priority", None), 13: ("yield", None), 14: ("stop", None),
}

RED, WHITE, BLACK, BLUE, YELLOW = (196, 24, 36), (242, 242, 238), (22, 22, 22), (22, 74, 178), (246, 196, 20)
CANVAS = 128


def _font(size: int):
    return ImageFont.load_default(size=size)


def _arrow(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], width: int, colour) -> None:
    """A polyline with a triangular head at its last point."""
    draw.line(points, fill=colour, width=width, joint="curve")
    (x0, y0), (x1, y1) = points[-2], points[-1]
    angle = math.atan2(y1 - y0, x1 - x0)
    head = width * 1.6
    tip = (x1 + math.cos(angle) * head, y1 + math.sin(angle) * head)
    left = (x1 + math.cos(angle + 2.2) * head, y1 + math.sin(angle + 2.2) * head)
    right = (x1 + math.cos(angle - 2.2) * head, y1 + math.sin(angle - 2.2) * head)
    draw.polygon([tip, left, right], fill=colour)


def _mirror(points):
    return [(CANVAS - x, y) for x, y in points]


def draw_sign(class_id: int) -> Image.Image:
    """The sign of a GTSRB class id, frontal, on a transparent 128x128 canvas."""
    kind, detail = SIGN_CLASSES[class_id]
    image = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    c, r = CANVAS / 2, CANVAS / 2 - 3
    if kind in ("speed", "no_vehicles", "no_entry"):
        draw.ellipse([c - r, c - r, c + r, c + r], fill=RED)
        if kind == "no_entry":
            draw.rectangle([c - r * 0.7, c - r * 0.17, c + r * 0.7, c + r * 0.17], fill=WHITE)
        else:
            inner = r * 0.76
            draw.ellipse([c - inner, c - inner, c + inner, c + inner], fill=WHITE)
            if kind == "speed":
                draw.text((c, c + 2), detail, fill=BLACK, font=_font(58), anchor="mm")
    elif kind == "warning" or kind == "yield":
        up = kind == "warning"
        top, bottom = (8, CANVAS - 14) if up else (CANVAS - 10, 16)
        outer = [(c, top), (6, bottom), (CANVAS - 6, bottom)]
        draw.polygon(outer, fill=RED)
        shrink = 0.68
        centroid = (c, (top + 2 * bottom) / 3)
        draw.polygon([(centroid[0] + (x - centroid[0]) * shrink, centroid[1] + (y - centroid[1]) * shrink) for x, y in outer],
                     fill=WHITE)
        if detail == "caution":
            draw.rectangle([c - 5, 48, c + 5, 84], fill=BLACK)
            draw.ellipse([c - 6, 90, c + 6, 102], fill=BLACK)
        elif detail in ("curve_left", "curve_right"):
            points = [(c + 8, 102), (c + 8, 80), (c - 2, 66), (c - 10, 56)]
            _arrow(draw, points if detail == "curve_left" else _mirror(points), 8, BLACK)
    elif kind == "mandatory":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=BLUE)
        paths = {
            "ahead": [(c, 102), (c, 36)],
            "turn_right": [(c - 16, 100), (c - 16, 62), (c - 10, 52), (c + 14, 52)],
            "keep_right": [(c - 22, 34), (c + 16, 80)],
        }
        if detail == "ahead":
            _arrow(draw, paths["ahead"], 13, WHITE)
        elif detail in ("turn_right", "keep_right"):
            _arrow(draw, paths[detail], 13, WHITE)
        else:
            _arrow(draw, _mirror(paths[detail.replace("left", "right")]), 13, WHITE)
    elif kind == "priority":
        diamond = [(c, 4), (CANVAS - 4, c), (c, CANVAS - 4), (4, c)]
        draw.polygon(diamond, fill=WHITE)
        draw.polygon([(c, 22), (CANVAS - 22, c), (c, CANVAS - 22), (22, c)], fill=YELLOW)
    elif kind == "stop":
        octagon = [(c + r * math.cos(math.pi / 8 + k * math.pi / 4), c + r * math.sin(math.pi / 8 + k * math.pi / 4)) for k in range(8)]
        draw.polygon(octagon, fill=WHITE)
        inner = [(c + (x - c) * 0.9, c + (y - c) * 0.9) for x, y in octagon]
        draw.polygon(inner, fill=RED)
        draw.text((c, c + 2), "STOP", fill=WHITE, font=_font(36), anchor="mm")
    return image


def _perspective_coefficients(source, target) -> np.ndarray:
    """PIL's 8 perspective coefficients mapping output points `target` to input points `source`."""
    rows, values = [], []
    for (x, y), (u, v) in zip(target, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        values += [u, v]
    return np.linalg.solve(np.array(rows, float), np.array(values, float))


def _textures() -> list[np.ndarray]:
    from skimage import data

    return [data.brick(), data.grass(), data.gravel()]


def _background(rng: np.random.Generator, side: int, textures: list[np.ndarray]) -> np.ndarray:
    if rng.random() < 0.7:
        texture = textures[rng.integers(len(textures))]
        crop = int(rng.integers(side, min(texture.shape[0], side * 4) + 1))
        y, x = rng.integers(0, texture.shape[0] - crop + 1, size=2)
        patch = np.asarray(Image.fromarray(texture[y : y + crop, x : x + crop]).resize((side, side), Image.BILINEAR), float)
        tint = rng.uniform(0.5, 1.2, size=3)
        return np.clip(patch[..., None] * tint, 0, 255)
    # Clutter: sky, buildings, poles and foliage as random shapes.
    canvas = Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(60, 210, size=3)))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0 = rng.integers(-side // 2, side, size=2)
        w, h = rng.integers(side // 8, side, size=2)
        colour = tuple(int(v) for v in rng.integers(20, 235, size=3))
        (draw.rectangle if rng.random() < 0.6 else draw.ellipse)([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=colour)
    return np.asarray(canvas, float)


def render_track(class_id: int, rng: np.random.Generator, views: int, textures) -> list[tuple[np.ndarray, tuple]]:
    """Several views of one physical sign: `[(image uint8 (h, w, 3), roi (x1, y1, x2, y2)), ...]`."""
    sign = draw_sign(class_id)
    # What stays fixed for one physical sign: its pose, its light, what hides part of it.
    jitter = CANVAS * 0.12
    corners = [(0, 0), (CANVAS, 0), (CANVAS, CANVAS), (0, CANVAS)]
    warped_corners = [(x + rng.uniform(-jitter, jitter), y + rng.uniform(-jitter, jitter)) for x, y in corners]
    coefficients = _perspective_coefficients(corners, warped_corners)
    sign = sign.transform((CANVAS, CANVAS), Image.PERSPECTIVE, tuple(coefficients), Image.BICUBIC)
    fade = rng.uniform(0.75, 1.0)  # sun-bleached paint
    light = rng.uniform(0.35, 1.35)
    light_angle = rng.uniform(0, 2 * math.pi)
    occluded = rng.random() < 0.3
    occluder_colour = tuple(int(v) for v in rng.integers(15, 120, size=3))
    occluder_line = [(rng.uniform(0, 1), rng.uniform(0, 1)) for _ in range(2)]
    base_size = rng.uniform(24, 48)
    background_seed = int(rng.integers(2**31))
    views_out = []
    for view in range(views):
        sign_px = int(round(base_size * (1 + 0.12 * view) * rng.uniform(0.95, 1.05)))
        margin = max(2, int(round(sign_px * rng.uniform(0.08, 0.14))))
        side_w, side_h = sign_px + 2 * margin, sign_px + 2 * margin
        scene = _background(np.random.default_rng(background_seed), max(side_w, side_h), textures)[:side_h, :side_w]
        scaled = sign.resize((sign_px, sign_px), Image.LANCZOS)
        rgba = np.asarray(scaled, float)
        alpha = rgba[..., 3:4] / 255.0
        offset = (margin + int(rng.integers(-1, 2)), margin + int(rng.integers(-1, 2)))
        y0, x0 = offset[1], offset[0]
        region = scene[y0 : y0 + sign_px, x0 : x0 + sign_px]
        paint = rgba[..., :3] * fade + 255 * (1 - fade) * 0.5
        scene[y0 : y0 + sign_px, x0 : x0 + sign_px] = region * (1 - alpha) + paint * alpha
        image = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
        if occluded:
            draw = ImageDraw.Draw(image)
            (ax, ay), (bx, by) = occluder_line
            draw.line([(ax * side_w, 0), (bx * side_w, side_h)], fill=occluder_colour, width=max(2, sign_px // 6))
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.1)))
        pixels = np.asarray(image, float)
        yy, xx = np.mgrid[0:side_h, 0:side_w] / max(side_w, side_h)
        gradient = 1 + 0.35 * (np.cos(light_angle) * (xx - 0.5) + np.sin(light_angle) * (yy - 0.5))
        pixels = pixels * light * gradient[..., None] + rng.normal(0, rng.uniform(2, 10), pixels.shape)
        roi = (x0, y0, x0 + sign_px, y0 + sign_px)
        views_out.append((np.clip(pixels, 0, 255).astype(np.uint8), roi))
    return views_out


def _write_csv(path: Path, rows: list[tuple]) -> None:
    lines = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    lines += [";".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def write_gtsrb(root: str | os.PathLike, train_tracks: int = 10, test_tracks: int = 6, views: int = 5,
                test_views: int = 2, seed: int = 0, classes: list[int] | None = None) -> Path:
    """Writes generated signs in the GTSRB official layout under `root` and returns it.

    Args:
        root: Target folder; `Final_Training/Images/000NN/` and `Final_Test/Images/` are created.
        train_tracks: Physical signs per class in the training set.
        test_tracks: Physical signs per class in the test set (other signs than in training).
        views: Views per training track; `test_views` per test track.
        seed: Everything drawn follows from it.
        classes: GTSRB class ids to draw (default: all of `SIGN_CLASSES`).

    Example:
        >>> write_gtsrb("/tmp/signs", train_tracks=2, test_tracks=1, views=2)  # doctest: +SKIP
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    textures = _textures()
    test_rows = []
    test_dir = root / "Final_Test" / "Images"
    test_dir.mkdir(parents=True, exist_ok=True)
    for class_id in sorted(classes or SIGN_CLASSES):
        class_dir = root / "Final_Training" / "Images" / f"{class_id:05d}"
        class_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for track in range(train_tracks):
            for view, (pixels, roi) in enumerate(render_track(class_id, rng, views, textures)):
                name = f"{track:05d}_{view:05d}.ppm"
                Image.fromarray(pixels).save(class_dir / name)
                rows.append((name, pixels.shape[1], pixels.shape[0], *roi, class_id))
        _write_csv(class_dir / f"GT-{class_id:05d}.csv", rows)
        for _ in range(test_tracks):
            for pixels, roi in render_track(class_id, rng, test_views, textures):
                name = f"{len(test_rows):05d}.ppm"
                Image.fromarray(pixels).save(test_dir / name)
                test_rows.append((name, pixels.shape[1], pixels.shape[0], *roi, class_id))
    _write_csv(test_dir / "GT-final_test.csv", test_rows)
    return root
