"""Synthetic film shifts: what another hospital's machine, processing or framing does to a film, made on Kermany's
own films so that the truth is known. They choose and test the referral rule (``benchmarks/referral_check.py``:
leave-one-shift-out over these, never the external films) and measure how many films the folder shift test needs.

Each shift maps uint8 films (N, S, S) at the model's size, *before* CLAHE, to shifted uint8 films of the same shape;
the noise is seeded. ``SHIFTS``: name → (function, what it stands for).
"""
from __future__ import annotations

import cv2
import numpy as np


def _gamma(films, rng):                 # a different exposure curve (another detector's look-up table)
    lut = (255 * (np.arange(256) / 255) ** 1.6).astype(np.uint8)
    return lut[films]


def _contrast(films, rng):              # a flatter film: the range squeezed to 60% around its mean
    f = films.astype(np.float32)
    mean = f.mean(axis=(1, 2), keepdims=True)
    return np.clip(mean + 0.6 * (f - mean), 0, 255).astype(np.uint8)


def _blur(films, rng):                  # a softer detector or a lower resolution
    s = films.shape[1]
    return np.stack([cv2.GaussianBlur(f, (0, 0), 0.012 * s) for f in films])


def _noise(films, rng):                 # a noisier, lower-dose film
    return np.clip(films + rng.normal(0, 12, films.shape), 0, 255).astype(np.uint8)


def _sharpen(films, rng):               # edge-enhancing post-processing (an unsharp mask)
    s = films.shape[1]
    out = []
    for f in films:
        soft = cv2.GaussianBlur(f, (0, 0), 0.02 * s).astype(np.float32)
        out.append(np.clip(f + 1.5 * (f - soft), 0, 255).astype(np.uint8))
    return np.stack(out)


def _zoom_out(films, rng):              # other framing: the chest smaller, a black collimation border around it
    s = films.shape[1]
    inner = int(round(0.8 * s))
    pad = (s - inner) // 2
    out = np.zeros_like(films)
    for i, f in enumerate(films):
        out[i, pad:pad + inner, pad:pad + inner] = cv2.resize(f, (inner, inner), interpolation=cv2.INTER_AREA)
    return out


def _rotate(films, rng):                # a patient not square to the detector: 8 degrees
    s = films.shape[1]
    m = cv2.getRotationMatrix2D((s / 2, s / 2), 8, 1.0)
    return np.stack([cv2.warpAffine(f, m, (s, s), borderMode=cv2.BORDER_CONSTANT, borderValue=0) for f in films])


SHIFTS = {
    "gamma": (_gamma, "another exposure curve (gamma 1.6)"),
    "contrast": (_contrast, "a flatter film (range × 0.6)"),
    "blur": (_blur, "a softer detector (Gaussian blur, σ = 1.2% of the side)"),
    "noise": (_noise, "a noisier film (Gaussian noise, sd 12 grey levels)"),
    "sharpen": (_sharpen, "edge-enhancing processing (unsharp mask × 1.5)"),
    "zoom_out": (_zoom_out, "other framing (chest at 80%, black border)"),
    "rotate": (_rotate, "a rotated patient (8°)"),
}


def shift_films(films: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """``films`` (N, S, S) uint8 under the shift ``name`` (a key of ``SHIFTS``)."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; choose from {sorted(SHIFTS)}")
    return SHIFTS[name][0](np.asarray(films, np.uint8), np.random.default_rng(seed))
