"""Planted shortcuts with known position (Sun, Koch & Baumgartner, MICCAI 2023): a text **tag**, two bright
vertical **hyperintensities** near the edges, and a black **obstruction** wedge along the bottom edge.

Each confounder is a pure function ``(image uint8 (H, W), rng) -> (image, mask)`` whose geometry is defined on a
320-px frame and scaled to the image; ``mask`` is exactly the set of pixels it paints (pixels that already had the
painted value stay as they were). ``contaminate`` copies a folder data set and draws one confounder on a chosen
share of one class's training images. How an explanation's top pixels meet the mask is measured in
``explain/metrics/shortcut.py``.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from ..config import write_csv_atomic

FRAME = 320                     # the geometry below is in pixels of a 320×320 frame
TAG_TEXT = "CXR-ROOM1"
NEGATIVE_NAMES = ("normal", "negative", "no_finding", "no_lesion")


def _scale(image: np.ndarray) -> tuple[float, float]:
    h, w = image.shape[:2]
    return w / FRAME, h / FRAME


def _paint(image: np.ndarray, layer: np.ndarray, value: int) -> tuple[np.ndarray, np.ndarray]:
    mask = layer > 0
    out = image.copy()
    out[mask] = value
    return out, mask


def _check(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"confounders take grayscale uint8 images (H, W), got {image.dtype} {image.shape}")
    return image


def tag(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Black text "CXR-ROOM1" near the bottom-left corner (shifted by up to 8 frame px, seeded)."""
    image = _check(image)
    sx, sy = _scale(image)
    dx, dy = rng.integers(-8, 9, size=2)
    layer = np.zeros(image.shape, np.uint8)
    org = (int(round((14 + dx) * sx)), int(round((296 + dy) * sy)))
    scale = 0.62 * min(sx, sy)
    cv2.putText(layer, TAG_TEXT, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                max(1, int(round(2 * min(sx, sy)))), cv2.LINE_8)
    return _paint(image, layer, 0)


def hyperintensities(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two bright vertical stripes near the left and right edges (8 frame px wide, seeded vertical extent)."""
    image = _check(image)
    sx, sy = _scale(image)
    top, bottom = 60 + rng.integers(-10, 11), 250 + rng.integers(-10, 11)
    layer = np.zeros(image.shape, np.uint8)
    for x0 in (16, 296):
        c0, c1 = int(round(x0 * sx)), max(int(round((x0 + 8) * sx)), int(round(x0 * sx)) + 1)
        layer[int(round(top * sy)):int(round(bottom * sy)), c0:c1] = 255
    return _paint(image, layer, 255)


def obstruction(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A black wedge along the bottom edge: full width, 44 frame px high at the left, thinning to the right."""
    image = _check(image)
    sx, sy = _scale(image)
    height = 44 + rng.integers(-6, 7)
    pts = np.array([[0, FRAME - height], [FRAME, FRAME - 4], [FRAME, FRAME], [0, FRAME]], float) * [sx, sy]
    layer = np.zeros(image.shape, np.uint8)
    cv2.fillPoly(layer, [np.round(pts).astype(np.int32)], 255)
    return _paint(image, layer, 0)


CONFOUNDERS: dict[str, Callable] = {"tag": tag, "hyperintensities": hyperintensities, "obstruction": obstruction}


def get_confounder(name: str) -> Callable:
    if name not in CONFOUNDERS:
        raise ValueError(f"unknown confounder {name!r}; choose from {', '.join(CONFOUNDERS)}")
    return CONFOUNDERS[name]


def check_degree(degree: float) -> float:
    if not 0.0 <= degree <= 1.0:
        raise ValueError(f"--degree is the share of the positive training images that carry the confounder: "
                         f"a number in [0, 1], got {degree}")
    return float(degree)


def negative_class(class_names) -> int:
    """Index of the negative class (NORMAL, negative, No Finding …); an error naming the classes otherwise."""
    for i, name in enumerate(class_names):
        if name.lower() in NEGATIVE_NAMES:
            return i
    raise ValueError(f"a confounder audit needs a negative class (one of {', '.join(NEGATIVE_NAMES)}; case does not "
                     f"matter) to flip from; the classes found are {list(class_names)}")


def apply(kind: str, images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The confounder on every image of (N, H, W) uint8: (images, masks), image i drawn with seed (seed, i)."""
    fn = get_confounder(kind)
    pairs = [fn(img, np.random.default_rng([seed, i])) for i, img in enumerate(images)]
    if not pairs:
        return images.copy(), np.zeros(images.shape, bool)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def contaminate(manifest: pd.DataFrame, src_root: str | Path, dst_root: str | Path, kind: str, degree: float,
                target_class: str = "PNEUMONIA", split: str = "train", seed: int = 42) -> pd.DataFrame:
    """Copy a folder data set (the ``manifest`` of ``src_root``) to ``dst_root`` with the confounder drawn on
    ``degree`` of ``target_class``'s ``split`` images (chosen seeded). Confounded images are written as PNG
    (lossless; same stem, so patient ids stay); every other file, lesion masks included, is copied unchanged.
    Returns the new manifest with a ``confounded`` column, also written to ``dst_root/confounders.csv``."""
    from . import ImageReadError, read_gray
    fn = get_confounder(kind)
    check_degree(degree)
    src_root, dst_root = Path(src_root), Path(dst_root)
    if target_class not in set(manifest["label"]):
        raise ValueError(f"class {target_class!r} not in the data set; classes found: {sorted(set(manifest['label']))}")
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(((manifest["label"] == target_class) & (manifest["split"] == split)).to_numpy())
    chosen = set(rng.permutation(pool)[:int(round(degree * len(pool)))].tolist())
    rows = []
    for i, row in enumerate(manifest.itertuples(index=False)):
        rel = Path(row.path).relative_to(src_root)
        dst = dst_root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        confounded = i in chosen
        if confounded:
            try:
                img, _ = fn(read_gray(row.path), np.random.default_rng([seed, i]))
            except ImageReadError:           # unreadable: copied as is, the training scan skips and reports it
                confounded = False
            else:
                dst = dst.with_suffix(".png")
                cv2.imwrite(str(dst), img)
        if not confounded:
            shutil.copy2(row.path, dst)
        mask = getattr(row, "mask_path", None)
        if isinstance(mask, str):
            shutil.copy2(mask, dst_root / Path(mask).relative_to(src_root))
        rows.append({"path": str(dst), "split": row.split, "label": row.label, "confounded": confounded})
    out = pd.DataFrame(rows)
    write_csv_atomic(out, dst_root / "confounders.csv")
    return out
