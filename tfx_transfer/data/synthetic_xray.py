"""Generated chest radiographs in the Kermany layout: the chest_xray recipe's built-in data.

No real chest X-ray data set of useful size ships in a reachable registry, so the built-in
example is drawn here, deterministically from a seed. Each patient has an anatomy of their own
(body and lung size, heart, rib spacing, vessel markings) and one to three films that differ in
positioning, exposure and noise. Pneumonia patients carry one to three consolidations - soft,
textured opacities of varying size, place (mostly lower zones) and density - that persist across
their films. Files are written as `chest_xray/{train,test}/{NORMAL,PNEUMONIA}/` JPEGs named as in
Kermany et al. (`IM-0001-0001.jpeg`, `person1_bacteria_1.jpeg`), so the patient id is in the name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

SIZE = 128


def _ellipse(xx, yy, cx, cy, rx, ry, power=2.0):
    return (np.abs((xx - cx) / rx) ** power + np.abs((yy - cy) / ry) ** power) <= 1.0


def _anatomy(rng: np.random.Generator) -> dict:
    """What belongs to one patient: sizes and positions that their films share."""
    return {
        "body_width": rng.uniform(0.40, 0.48),
        "lung_width": rng.uniform(0.13, 0.17),
        "lung_height": rng.uniform(0.25, 0.31),
        "lung_gap": rng.uniform(0.17, 0.21),
        "heart": (rng.uniform(0.10, 0.15), rng.uniform(0.09, 0.12), rng.uniform(0.02, 0.06)),
        "rib_spacing": rng.uniform(0.055, 0.07),
        "vessel_seed": int(rng.integers(2**31)),
    }


def _consolidations(rng: np.random.Generator, anatomy: dict) -> list[dict]:
    count = int(rng.choice([1, 1, 2, 3]))
    spots = []
    for _ in range(count):
        side = rng.choice([-1, 1])
        spots.append({
            # Relative position inside a lung field; lower zones more often, as in lobar pneumonia.
            "side": side, "u": rng.uniform(-0.6, 0.6), "v": rng.beta(2.2, 1.4) * 1.5 - 0.6,
            "radius": rng.uniform(0.03, 0.10), "density": rng.uniform(0.35, 0.9),
            "seed": int(rng.integers(2**31)),
        })
    return spots


def render_film(anatomy: dict, spots: list[dict], rng: np.random.Generator) -> np.ndarray:
    """One film of a patient as a `(SIZE, SIZE)` uint8 image."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    # Positioning differs between films: a small shift and tilt.
    shift_x, shift_y, tilt = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(-0.05, 0.05)
    xs = (xx - 0.5) * np.cos(tilt) - (yy - 0.5) * np.sin(tilt) + 0.5 - shift_x
    ys = (xx - 0.5) * np.sin(tilt) + (yy - 0.5) * np.cos(tilt) + 0.5 - shift_y
    a = anatomy
    image = np.full((SIZE, SIZE), 18.0)
    body = _ellipse(xs, ys, 0.5, 0.68, a["body_width"], 0.55, power=2.6)
    image[body] = 150.0
    lungs = np.zeros_like(body)
    centres = {}
    for side in (-1, 1):
        cx, cy = 0.5 + side * a["lung_gap"], 0.47
        field = _ellipse(xs, ys, cx, cy, a["lung_width"], a["lung_height"], power=2.2)
        diaphragm = ys < cy + a["lung_height"] * 0.75 - 0.06 * ((xs - cx) / a["lung_width"]) ** 2
        lungs |= field & diaphragm
        centres[side] = (cx, cy)
    image[lungs] = 62.0
    # Ribs: bright curved bands crossing the lung fields.
    rib_phase = ((ys - 0.18 - 0.9 * (xs - 0.5) ** 2) / a["rib_spacing"]) % 1.0
    ribs = (rib_phase < 0.32) & body & (ys < 0.8)
    image += ribs * np.where(lungs, 28.0, 10.0)
    clavicles = (np.abs(ys - (0.2 + 0.25 * np.abs(xs - 0.5))) < 0.012) & (np.abs(xs - 0.5) < 0.3)
    image[clavicles] += 45.0
    # Vessel markings branch from the hila: thin bright streaks inside the lungs.
    vessels = ndimage.gaussian_filter(np.random.default_rng(a["vessel_seed"]).normal(size=(SIZE, SIZE)), 1.2)
    image += lungs * np.clip(vessels * 60.0, 0, 14.0)
    mediastinum = (np.abs(xs - 0.5) < 0.06 + 0.02 * (ys > 0.55)) & (ys > 0.15) & body
    image[mediastinum] = 175.0
    heart_rx, heart_ry, heart_shift = a["heart"]
    image[_ellipse(xs, ys, 0.5 + heart_shift, 0.64, heart_rx, heart_ry)] = 170.0
    for spot in spots:
        cx, cy = centres[spot["side"]]
        px = cx + spot["u"] * a["lung_width"] * 0.8
        py = cy + spot["v"] * a["lung_height"] * 0.8
        distance = np.sqrt((xs - px) ** 2 + (ys - py) ** 2) / spot["radius"]
        texture = ndimage.gaussian_filter(np.random.default_rng(spot["seed"]).normal(size=(SIZE, SIZE)), 2.0)
        opacity = np.exp(-(distance**2) * 1.5) * (1.0 + 3.0 * texture)
        image += lungs * np.clip(opacity, 0, 1.2) * spot["density"] * 70.0
    image = ndimage.gaussian_filter(image, rng.uniform(0.8, 1.6))
    # Exposure and detector: gamma, contrast, brightness, quantum noise.
    image = 255.0 * (np.clip(image, 0, 255) / 255.0) ** rng.uniform(0.75, 1.3)
    image = (image - 128.0) * rng.uniform(0.8, 1.2) + 128.0 + rng.uniform(-20, 20)
    image += rng.normal(0, rng.uniform(3.0, 9.0), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_kermany(root: str | os.PathLike, normal_patients: int = 90, pneumonia_patients: int = 110,
                  test_share: float = 0.2, seed: int = 0) -> Path:
    """Writes generated films in the Kermany layout under `root` and returns it.

    Args:
        root: Target folder; `train/` and `test/` with `NORMAL/` and `PNEUMONIA/` are created.
        normal_patients: Patients without pneumonia (1-3 films each).
        pneumonia_patients: Patients with pneumonia (1-3 films each).
        test_share: Share of the patients whose films go to `test/`.
        seed: Everything drawn follows from it.

    Example:
        >>> write_kermany("/tmp/chest_xray", normal_patients=4, pneumonia_patients=4)  # doctest: +SKIP
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for label, patients in (("NORMAL", normal_patients), ("PNEUMONIA", pneumonia_patients)):
        for patient in range(1, patients + 1):
            split = "test" if rng.random() < test_share else "train"
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            anatomy = _anatomy(rng)
            spots = _consolidations(rng, anatomy) if label == "PNEUMONIA" else []
            kind = rng.choice(["bacteria", "virus"])
            for film in range(int(rng.integers(1, 4))):
                pixels = render_film(anatomy, spots, rng)
                if label == "NORMAL":
                    name = f"IM-{patient:04d}-{film + 1:04d}.jpeg"
                else:
                    name = f"person{patient}_{kind}_{film + 1}.jpeg"
                Image.fromarray(pixels).save(folder / name, quality=92)
    return root
