"""Faithfulness without masks: ROAD, remove-and-debias (Rong et al. 2022: the headline on real films), and
deletion / insertion (RISE, Petsiuk et al. 2018), with random and centre-bias maps as the floor to beat.

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


# ROAD's neighbour weights (Rong et al. 2022; pytorch-grad-cam's NoisyLinearImputer): direct neighbours 1/6,
# diagonal ones 1/12
NEIGHBOURS = ((-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
              (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12))


def noisy_linear_impute(gray: np.ndarray, removed: np.ndarray, noise: float = 0.01 * 255, seed: int = 0) -> np.ndarray:
    """ROAD's remove-and-debias imputation (Rong et al., ICML 2022): every removed pixel becomes the weighted mean
    of its 8 neighbours (weights 1/6 direct, 1/12 diagonal; removed neighbours are unknowns too), one sparse linear
    system solved for all removed pixels at once, plus Gaussian noise of sd ``noise`` (1% of the range, as in
    pytorch-grad-cam). The removal pattern then carries no class signal of its own, unlike a black or blurred
    patch. ``gray`` (H, W) uint8 or float; returns the same dtype, uint8 rounded and clipped."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve
    removed = np.asarray(removed, bool)
    out = np.asarray(gray, np.float64).copy()
    if not removed.any():
        return gray.copy()
    h, w = removed.shape
    index = -np.ones((h, w), np.int64)
    rr, cc = np.nonzero(removed)
    index[rr, cc] = np.arange(len(rr))
    rows, cols, vals = [], [], []
    b = np.zeros(len(rr))
    total = np.zeros(len(rr))
    for dr, dc, wt in NEIGHBOURS:
        nr, nc = rr + dr, cc + dc
        ok = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
        k, nr, nc = np.flatnonzero(ok), nr[ok], nc[ok]
        total[k] += wt
        unknown = removed[nr, nc]
        rows += [k[unknown]]
        cols += [index[nr[unknown], nc[unknown]]]
        vals += [np.full(unknown.sum(), -wt)]
        b[k[~unknown]] += wt * out[nr[~unknown], nc[~unknown]]
    rows.append(np.arange(len(rr)))
    cols.append(np.arange(len(rr)))
    vals.append(total)
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(rr),) * 2)
    out[rr, cc] = spsolve(a.tocsr(), b) + np.random.default_rng(seed).normal(0, noise, len(rr))
    if np.issubdtype(np.asarray(gray).dtype, np.integer):
        return np.clip(out.round(), 0, 255).astype(np.uint8)
    return out.astype(np.asarray(gray).dtype)


def road(predict, grays, heats, targets, fractions=(0.1, 0.3, 0.5, 0.7, 0.9), order: str = "morf", seed: int = 0):
    """Target-class probability after removing the most (MoRF) or least (LeRF) relevant ``fractions`` of
    pixels with ROAD imputation: (B, len(fractions)). A faithful map drops fast under MoRF."""
    from ..overlay import top_fraction_mask
    out = np.zeros((len(grays), len(fractions)))
    for i, (gray, heat, t) in enumerate(zip(grays, heats, targets)):
        h = heat if order == "morf" else -heat
        stack = np.stack([noisy_linear_impute(gray, top_fraction_mask(h, f), seed=seed) for f in fractions])
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
