"""Synthetic chest X-ray phantoms with known lesion masks: the embedded default data set.

Each phantom has a thorax silhouette, two lung fields, ribs, spine/mediastinum and heart shadow, noise
and contrast variation. PNEUMONIA phantoms carry one or more consolidation-like opacities (lobar or
patchy, radius 12-20 px at 128 px) inside a lung field; the lesion mask is saved beside the image as
``<name>_mask.png``, so heat maps can be scored against the truth. Everything is deterministic by seed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import CLASS_NAMES
from ..config import write_json_atomic


@dataclass(frozen=True)
class PhantomConfig:
    image_size: int = 128
    n_train: int = 300                  # per class
    n_test: int = 100                   # per class
    n_val: int = 0                      # per class; Kermany's val has 8 per class
    lesion_radius: tuple[float, float] = (12.0, 20.0)   # px at 128 px, scaled with image_size
    max_lesions: int = 2
    seed: int = 0


def _ellipse(shape, center, axes, angle=0.0):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = center
    t = np.deg2rad(angle)
    x, y = xx - cx, yy - cy
    xr, yr = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    return (xr / axes[0]) ** 2 + (yr / axes[1]) ** 2 <= 1.0


def _smooth_noise(rng, shape, sigma):
    n = rng.standard_normal(shape).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigma)
    return n / (n.std() + 1e-7)


def make_phantom(rng: np.random.Generator, size: int = 128, n_lesions: int = 0,
                 lesion_radius: tuple[float, float] = (12.0, 20.0)):
    """One phantom: returns (image uint8 (S,S), lesion_mask bool (S,S), lung_mask bool (S,S))."""
    s = size
    j = lambda v, spread=0.03: v + rng.uniform(-spread, spread)   # noqa: E731  small anatomical jitter
    img = np.full((s, s), 0.04, np.float32)
    body = _ellipse((s, s), (j(0.5) * s, j(0.56) * s), (j(0.46) * s, j(0.50) * s))
    img[body] = j(0.52, 0.05)

    lung_axes = (j(0.135, 0.015) * s, j(0.30, 0.03) * s)
    left = _ellipse((s, s), (j(0.33, 0.02) * s, j(0.47, 0.02) * s), lung_axes, j(-6, 4))
    right = _ellipse((s, s), (j(0.67, 0.02) * s, j(0.47, 0.02) * s), lung_axes, j(6, 4))
    heart = _ellipse((s, s), (j(0.56, 0.02) * s, j(0.64, 0.02) * s), (j(0.13, 0.015) * s, j(0.11, 0.01) * s))
    spine = np.zeros((s, s), bool)
    spine[int(0.12 * s):, int((0.5 - 0.045) * s):int((0.5 + 0.045) * s)] = True
    lungs = (left | right) & ~heart & ~spine
    img[lungs] = j(0.16, 0.04)
    img[spine & body] = j(0.72, 0.04)
    img[heart] = j(0.66, 0.04)

    ribs = np.zeros((s, s), np.float32)
    x = np.arange(s, dtype=np.float32)
    thickness = max(1, int(round(0.022 * s)))
    for side in (-1, 1):
        for k in range(9):
            y0 = (0.20 + 0.075 * k + rng.uniform(-0.01, 0.01)) * s
            xs = x[(x - s / 2) * side > 0.04 * s]
            ys = y0 - 0.04 * s + 0.8 * ((xs - s / 2) * side / s) ** 1.5 * s
            pts = np.stack([xs, ys], 1).astype(np.int32)
            cv2.polylines(ribs, [pts], False, 1.0, thickness)
    ribs = cv2.GaussianBlur(ribs, (0, 0), 0.6 + 0.004 * s) * (body.astype(np.float32))
    img += 0.14 * ribs

    lesion = np.zeros((s, s), bool)
    scale = s / 128.0
    core = cv2.erode(lungs.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, int(6 * scale))) > 0
    candidates = np.argwhere(core if core.any() else lungs)
    for _ in range(n_lesions):
        cy, cx = candidates[rng.integers(len(candidates))]
        r = rng.uniform(*lesion_radius) * scale
        blob = _ellipse((s, s), (cx, cy), (r * rng.uniform(0.8, 1.2), r * rng.uniform(0.6, 1.0)), rng.uniform(0, 180))
        ragged = cv2.GaussianBlur(blob.astype(np.float32), (0, 0), r / 3) + 0.25 * _smooth_noise(rng, (s, s), r / 4)
        near = cv2.dilate(blob.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, int(r / 4))) > 0
        lesion |= (ragged > 0.5) & near & lungs
    if lesion.any():
        density = cv2.GaussianBlur(lesion.astype(np.float32), (0, 0), 1.5 * scale)
        texture = 1.0 + 0.15 * _smooth_noise(rng, (s, s), 2.0 * scale)
        img += rng.uniform(0.30, 0.42) * density * texture

    img = cv2.GaussianBlur(img, (0, 0), 0.7 * scale)
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25)           # contrast / exposure variation
    img = img * rng.uniform(0.85, 1.0) + rng.uniform(0.0, 0.08)
    img += rng.normal(0, rng.uniform(0.015, 0.035), img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), lesion, lungs


def _name(label: str, patient: int, k: int, rng: np.random.Generator) -> str:
    if label == "NORMAL":
        return f"IM-{patient:04d}-{k + 1:04d}.png"
    kind = "bacteria" if rng.random() < 0.62 else "virus"      # Kermany test: 242 bacteria, 148 virus
    return f"person{patient}_{kind}_{k}.png"


def write_phantom_dataset(root: str | Path, cfg: PhantomConfig = PhantomConfig()) -> Path:
    """Write ``root/{train,[val],test}/{NORMAL,PNEUMONIA}/*.png`` with ``*_mask.png`` beside each image.

    Reuses an existing set written with the same config (``phantom.json`` records it). Patients own two
    images each, so patient-grouped splits are exercised. Returns ``root``.
    """
    root = Path(root)
    stamp = root / "phantom.json"
    if stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(asdict(cfg))):
        return root
    counts = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    for split_idx, (split, n) in enumerate(counts.items()):
        if n == 0:
            continue
        for class_idx, label in enumerate(CLASS_NAMES):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.png"):
                old.unlink()
            for i in range(n):
                rng = np.random.default_rng([cfg.seed, split_idx, class_idx, i])
                n_lesions = int(rng.integers(1, cfg.max_lesions + 1)) if label == "PNEUMONIA" else 0
                img, lesion, _ = make_phantom(rng, cfg.image_size, n_lesions, cfg.lesion_radius)
                patient = 1000 * (split_idx + 1) + i // 2
                name = _name(label, patient, i % 2, rng)
                cv2.imwrite(str(folder / name), img)
                cv2.imwrite(str(folder / name.replace(".png", "_mask.png")), lesion.astype(np.uint8) * 255)
    write_json_atomic(asdict(cfg), stamp)
    return root
