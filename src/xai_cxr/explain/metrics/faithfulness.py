"""Faithfulness without masks: deletion / insertion (RISE, Petsiuk et al. 2018) and ROAD-style
remove-and-debias (Rong et al. 2022), with random and centre-bias maps as the floor to beat.

All functions take uint8 grayscale images (B, H, W), maps (B, H, W) and a ``predict`` callable mapping
uint8 images to class probabilities, so they work for any model and any explainer.
"""
from __future__ import annotations

import cv2
import numpy as np


def blurred(gray: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """A heavily blurred copy: the RISE baseline (keeps brightness, removes structure)."""
    sigma = sigma or gray.shape[0] / 16
    return cv2.GaussianBlur(gray, (0, 0), sigma)


def _baseline(gray, kind):
    if kind == "blur":
        return blurred(gray)
    if kind == "mean":
        return np.full_like(gray, int(round(gray.mean())))
    raise ValueError(f"baseline must be 'blur' or 'mean', got {kind!r}")


def perturbation_stack(gray, heat, mode: str = "deletion", steps: int = 20, baseline: str = "blur") -> np.ndarray:
    """(steps + 1, H, W) uint8: the image with the top k/steps of ``heat`` deleted (replaced by the
    baseline) or inserted (into the baseline), k = 0..steps. Ties are broken by pixel order."""
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be deletion or insertion, got {mode!r}")
    base = _baseline(gray, baseline)
    src, dst = (base, gray) if mode == "deletion" else (gray, base)
    order = np.argsort(-heat.ravel(), kind="stable")
    n = heat.size
    out = np.empty((steps + 1, *gray.shape), np.uint8)
    cur = dst.reshape(n, -1).copy()                 # one row per pixel: gray (1 value) or colour (3)
    flat_src = src.reshape(n, -1)
    done = 0
    for k in range(steps + 1):
        upto = int(round(k / steps * n))
        idx = order[done:upto]
        cur[idx] = flat_src[idx]
        done = upto
        out[k] = cur.reshape(gray.shape)
    return out


def curve_auc(probs: np.ndarray) -> np.ndarray:
    """Area under probability-vs-fraction curves (..., steps + 1) on [0, 1], trapezoid rule."""
    steps = probs.shape[-1] - 1
    return np.trapezoid(probs, dx=1.0 / steps, axis=-1)


def deletion_insertion(predict, grays, heats, targets, steps: int = 20, baseline: str = "blur"):
    """Per image: (deletion AUC, insertion AUC) of the target-class probability. Lower deletion and
    higher insertion = a more faithful map. One batched ``predict`` call per image and mode."""
    dele, ins = [], []
    for gray, heat, t in zip(grays, heats, targets):
        for mode, out in (("deletion", dele), ("insertion", ins)):
            stack = perturbation_stack(gray, heat, mode, steps, baseline)
            out.append(curve_auc(predict(stack)[:, t]))
    return np.array(dele), np.array(ins)


def road_impute(gray: np.ndarray, removed: np.ndarray, noise: float = 2.0, seed: int = 0) -> np.ndarray:
    """Remove-and-debias: fill ``removed`` pixels from their neighbours (Telea inpainting) plus a little
    noise, so the removal pattern itself carries no class signal (the ROAD paper's point)."""
    filled = cv2.inpaint(gray, removed.astype(np.uint8), 3, cv2.INPAINT_TELEA).astype(np.float32)
    rng = np.random.default_rng(seed)
    filled[removed] += rng.normal(0, noise, filled[removed].shape)
    return np.clip(filled.round(), 0, 255).astype(np.uint8)


def road(predict, grays, heats, targets, fractions=(0.1, 0.3, 0.5, 0.7, 0.9), order: str = "morf", seed: int = 0):
    """Target-class probability after removing the most (MoRF) or least (LeRF) relevant ``fractions`` of
    pixels with ROAD imputation: (B, len(fractions)). A faithful map drops fast under MoRF."""
    from ..overlay import top_fraction_mask
    out = np.zeros((len(grays), len(fractions)))
    for i, (gray, heat, t) in enumerate(zip(grays, heats, targets)):
        h = heat if order == "morf" else -heat
        stack = np.stack([road_impute(gray, top_fraction_mask(h, f), seed=seed) for f in fractions])
        out[i] = predict(stack)[:, t]
    return out


def random_maps(n: int, shape, seed: int = 0) -> np.ndarray:
    """Smooth random maps (blurred noise): the floor any explainer must beat."""
    rng = np.random.default_rng(seed)
    maps = np.stack([cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), shape[0] / 32) for _ in range(n)])
    lo = maps.min(axis=(1, 2), keepdims=True)
    return (maps - lo) / (maps.max(axis=(1, 2), keepdims=True) - lo + 1e-7)


def centre_bias_maps(n: int, shape, sigma_frac: float = 0.25) -> np.ndarray:
    """A centred Gaussian per image: what a map that ignores the input would look like."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.exp(-(((yy - (h - 1) / 2) / (sigma_frac * h)) ** 2 + ((xx - (w - 1) / 2) / (sigma_frac * w)) ** 2) / 2)
    return np.repeat(g[None].astype(np.float32), n, axis=0)
