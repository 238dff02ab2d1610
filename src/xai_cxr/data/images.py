"""Images: decode each file once (``decode``), bring it to the model's square, hold the set as uint8; test-time
views. The tf.data batches are in ``batches``.

Pixel convention: images are decoded to grayscale uint8 (any bit depth or channel count in, EXIF
orientation applied), brought to ``image_size`` squared by the model's input geometry (``GEOMETRIES``: squashed,
centre-cropped or letterboxed; saved in the model card, so training and serving agree), and kept in memory as uint8.
The tf.data
pipeline turns a batch into 3 identical channels of float32 in [0, 255] and applies the backbone's own
``preprocess`` (``vgg19.preprocess_input`` for VGG19). Decoding happens once, before tf.data, so a
corrupt file is found, skipped and reported instead of killing an epoch half-way.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .decode import ImageReadError, read_gray

log = logging.getLogger(__name__)
CLAHE_CLIP, CLAHE_TILES = 2.0, 8


def equalize(img: np.ndarray) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV's CLAHE, clip 2.0 on an 8×8 grid) of a uint8
    image, per channel for RGB: evens out exposure and contrast between hospitals and machines."""
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=(CLAHE_TILES, CLAHE_TILES))
    if img.ndim == 2:
        return clahe.apply(img)
    return np.stack([clahe.apply(np.ascontiguousarray(img[..., c])) for c in range(img.shape[-1])], -1)


# How a film of any shape becomes the square the network takes (``DataConfig.geometry``, saved in the model card):
# "squash" resizes width and height independently (the 224-px Kermany copy was made so; the film's aspect ratio
# survives as how wide the chest looks), "crop" takes the centre square first (torchxrayvision's convention: the
# aspect survives as how much of the chest is cut off), "pad" letterboxes the whole film on black (the aspect
# survives as the bars). docs/results.md, "Input geometry", measures what each leaves for a model to read.
GEOMETRIES = ("squash", "crop", "pad")


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = img.shape[0] >= height and img.shape[1] >= width
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def fit_size(img: np.ndarray, size: int, clahe: bool = False, geometry: str = "squash") -> np.ndarray:
    """A decoded image (H, W[, 3]) as (size, size[, 3]) by ``geometry`` (one of ``GEOMETRIES``), area-averaging
    when shrinking; then CLAHE when asked (at the model's resolution, so training, evaluation and serving see the
    same equalisation)."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown input geometry {geometry!r}; choose from {GEOMETRIES}")
    h, w = img.shape[:2]
    if geometry == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        out = _resize(img[top:top + side, left:left + side], size, size)
    elif geometry == "pad":
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        out = np.zeros((size, size, *img.shape[2:]), img.dtype)
        top, left = (size - nh) // 2, (size - nw) // 2
        out[top:top + nh, left:left + nw] = _resize(img, nw, nh)
    else:
        out = _resize(img, size, size)
    return equalize(out) if clahe else out


def load_image(path: str | Path, size: int, color: bool = False, clahe: bool = False,
               geometry: str = "squash") -> np.ndarray:
    """Decode one image and bring it to (size, size) uint8 by ``geometry``, or (size, size, 3) RGB with ``color``."""
    return fit_size(read_gray(path, color), size, clahe, geometry)


@dataclass
class ImageSet:
    """Decoded images of one manifest: ``images`` (N, S, S) uint8 aligned with ``manifest`` rows."""
    images: np.ndarray
    manifest: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)

    @property
    def labels(self) -> np.ndarray:
        """(N,) class indices, or (N, K) float32 multi-hot vectors for multi-label data."""
        if "label_vec" in self.manifest:
            return np.stack(self.manifest["label_vec"].to_list()).astype(np.float32) if len(self.manifest) \
                else np.zeros((0, 0), np.float32)
        return self.manifest["label_idx"].to_numpy()


def load_images(manifest: pd.DataFrame, size: int, workers: int = 4, progress: bool = True,
                color: bool = False, clahe: bool = False, geometry: str = "squash") -> ImageSet:
    """Decode every image of ``manifest`` once; unreadable files are dropped and listed in ``skipped``.
    Grayscale (N, S, S) by default; ``color`` keeps RGB (N, S, S, 3) for non-X-ray data sets."""
    from tqdm.auto import tqdm

    def one(path):
        try:
            return load_image(path, size, color, clahe, geometry), None
        except (ImageReadError, cv2.error, OSError, ValueError) as exc:
            return None, getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"

    paths = manifest["path"].tolist()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(tqdm(pool.map(one, paths), total=len(paths), desc=f"decoding {size}px",
                            disable=not progress, leave=False))
    keep = [i for i, (img, _) in enumerate(results) if img is not None]
    skipped = [(paths[i], err) for i, (img, err) in enumerate(results) if img is None]
    for p, why in skipped:
        log.warning("skipped %s: %s", p, why)
    images = np.stack([results[i][0] for i in keep]) if keep else np.zeros((0, size, size, *(3,) * color), np.uint8)
    return ImageSet(images, manifest.iloc[keep].reset_index(drop=True), skipped)


def _zoom(img: np.ndarray, factor: float = 0.9) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = round(h * factor), round(w * factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(img[top:top + ch, left:left + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def _shift(img: np.ndarray, fraction: float) -> np.ndarray:
    w = img.shape[1]
    m = np.float32([[1, 0, round(fraction * w)], [0, 1, 0]])
    return cv2.warpAffine(img, m, (w, img.shape[0]), borderMode=cv2.BORDER_REPLICATE)


# Test-time views of a decoded image (uint8 in, same shape out). No flips: the heart is on the left.
TTA_TRANSFORMS = {
    "identity": lambda img: img,
    "zoom": _zoom,                                   # centre 90%, resized back
    "shift_left": lambda img: _shift(img, -0.04),    # 4% of the width, edge pixels repeated
    "shift_right": lambda img: _shift(img, 0.04),
}


def tta_views(images: np.ndarray, names) -> list[np.ndarray]:
    """``images`` (N, S, S[, 3]) under each named transform of ``TTA_TRANSFORMS``."""
    unknown = [n for n in names if n not in TTA_TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown test-time transform(s) {unknown}; choose from {list(TTA_TRANSFORMS)}")
    return [np.stack([TTA_TRANSFORMS[n](img) for img in images]) for n in names]
