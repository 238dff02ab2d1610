"""Maps that see absences: explainers that *remove* part of the film and watch the class probability fall.

A gradient-weighted activation map shows where evidence is; a black wedge works by taking evidence away, and the
activations under a black region are near zero, so gradient maps stay dark there. Removing a region and measuring
the change finds it — provided the removal really changes the region: replacing a black wedge by its own blur
leaves it black, replacing it by the film's mean grey removes it. Both fills are offered and measured
(docs/results.md, "Does the model cheat?").

- ``Occlusion`` (Zeiler & Fergus, ECCV 2014): a square patch slides over the film; each pixel's value is the mean
  fall of the target probability over the patches that cover it.
- ``RISE`` (Petsiuk, Das & Saenko, BMVC 2018): random smooth masks keep about half of the film each; a pixel's
  value is the probability-weighted mean of the masks that kept it.

Both work on model inputs (B, H, W, C), explain the class probability, batch every perturbed copy of a film
through the model and return maps (B, H, W) in [0, 1] (positive evidence only), as every explainer here does.
"""
from __future__ import annotations

import numpy as np

from .cam.base import normalize_maps
from .targets import ClassProbability, as_targets, predicted_class


def fill_values(x: np.ndarray, fill: str) -> np.ndarray:
    """What a removed pixel becomes, per pixel (H, W, C): the film's mean ("mean") or its blur, σ = side / 16
    ("blur")."""
    if fill == "mean":
        return np.broadcast_to(x.mean(axis=(0, 1), keepdims=True), x.shape).astype(np.float32)
    if fill == "blur":
        import cv2
        return cv2.GaussianBlur(np.ascontiguousarray(x, np.float32), (0, 0), x.shape[0] / 16).reshape(x.shape)
    raise ValueError(f"fill must be 'mean' or 'blur', got {fill!r}")


class BlackBoxExplainer:
    """Shared part of every explainer that sees only the model's probabilities (occlusion, RISE, LIME, SHAP):
    targets (the predicted class when none are given), batched probabilities, positive evidence normalised."""

    target_layer = "input"
    target = ClassProbability()

    def __init__(self, model, target_layer: str | None = None, batch_size: int = 64):
        self.model, self.batch_size = model, batch_size

    def _proba(self, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf
        x = np.asarray(x, np.float32)
        return np.concatenate([np.asarray(self.model(tf.constant(x[s:s + self.batch_size]), training=False))
                               for s in range(0, len(x), self.batch_size)])

    def __call__(self, images, targets=None) -> np.ndarray:
        images = np.asarray(images, np.float32)
        targets = np.asarray(predicted_class(self._proba(images))) if targets is None else \
            as_targets(targets, len(images))
        maps = np.stack([self.explain_one(x, int(t)) for x, t in zip(images, targets)]) if len(images) else \
            np.zeros(images.shape[:3], np.float32)
        return normalize_maps(np.maximum(maps, 0)).astype(np.float32)


class Occlusion(BlackBoxExplainer):
    """A ``patch``-fraction square (default 1/8 of the side) slid with ``stride`` (1/16 of the side) and filled with
    ``fill``; value of a pixel = mean over covering patches of p(target | film) − p(target | patched film)."""

    def __init__(self, model, target_layer=None, batch_size: int = 64, patch: float = 1 / 8, stride: float = 1 / 16,
                 fill: str = "mean"):
        super().__init__(model, target_layer, batch_size)
        self.patch, self.stride, self.fill = patch, stride, fill

    def windows(self, size: int) -> list[int]:
        p, s = max(1, round(size * self.patch)), max(1, round(size * self.stride))
        starts = list(range(0, size - p + 1, s))
        if starts[-1] != size - p:
            starts.append(size - p)                    # the last row/column of patches reaches the edge
        return starts

    def explain_one(self, x: np.ndarray, target: int) -> np.ndarray:
        h, w = x.shape[:2]
        ph, pw = max(1, round(h * self.patch)), max(1, round(w * self.patch))
        fill = fill_values(x, self.fill)
        boxes = [(r, c) for r in self.windows(h) for c in self.windows(w)]
        copies = np.repeat(x[None], len(boxes), axis=0)
        for k, (r, c) in enumerate(boxes):
            copies[k, r:r + ph, c:c + pw] = fill[r:r + ph, c:c + pw]
        base = self._proba(x[None])[0, target]
        falls = base - self._proba(copies)[:, target]
        total, count = np.zeros((h, w)), np.zeros((h, w))
        for fall, (r, c) in zip(falls, boxes):
            total[r:r + ph, c:c + pw] += fall
            count[r:r + ph, c:c + pw] += 1
        return total / np.maximum(count, 1)


class RISE(BlackBoxExplainer):
    """``n_masks`` random masks: a ``grid`` × ``grid`` grid of cells kept with probability ``keep``, upsampled
    bilinearly with a random shift (the paper's construction), seeded; removed pixels take ``fill``. Value of a
    pixel = E[p | the pixel kept] − E[p] = Σ_i (p_i − p̄) M_i / Σ_i M_i, p_i = p(target | film ⊙ M_i + fill ⊙
    (1 − M_i)): the paper's conditional expectation with the masks' own sum as normaliser (not n · keep) and the
    mean probability taken off. Without both, a finite set of masks — the same for every film — adds p̄ × its own
    density pattern to every map, and where p hardly moves that pattern is all the map shows."""

    def __init__(self, model, target_layer=None, batch_size: int = 64, n_masks: int = 500, grid: int = 8,
                 keep: float = 0.5, fill: str = "mean", seed: int = 0):
        super().__init__(model, target_layer, batch_size)
        self.n_masks, self.grid, self.keep, self.fill, self.seed = n_masks, grid, keep, fill, seed
        self._masks = {}

    def masks(self, h: int, w: int) -> np.ndarray:
        """(n_masks, h, w) float32 in [0, 1], the same for every film of that size (seeded)."""
        if (h, w) not in self._masks:
            import cv2
            rng = np.random.default_rng(self.seed)
            cell_h, cell_w = int(np.ceil(h / self.grid)), int(np.ceil(w / self.grid))
            out = np.empty((self.n_masks, h, w), np.float32)
            for i in range(self.n_masks):
                cells = (rng.random((self.grid, self.grid)) < self.keep).astype(np.float32)
                up = cv2.resize(cells, ((self.grid + 1) * cell_w, (self.grid + 1) * cell_h),
                                interpolation=cv2.INTER_LINEAR)
                dy, dx = rng.integers(0, cell_h), rng.integers(0, cell_w)
                out[i] = up[dy:dy + h, dx:dx + w]
            self._masks[(h, w)] = out
        return self._masks[(h, w)]

    def explain_one(self, x: np.ndarray, target: int) -> np.ndarray:
        h, w = x.shape[:2]
        masks = self.masks(h, w)
        fill = fill_values(x, self.fill)
        chunks = (masks[s:s + 256, ..., None] for s in range(0, len(masks), 256))   # bounded memory
        p = np.concatenate([self._proba(x[None] * m + fill[None] * (1 - m))[:, target] for m in chunks])
        p = p.astype(np.float64)
        return np.tensordot(p - p.mean(), masks, axes=1) / np.maximum(masks.sum(axis=0), 1e-6)


class BlurOcclusion(Occlusion):
    """Occlusion whose patches take the film's own blur (local brightness kept, structure removed)."""

    def __init__(self, model, target_layer=None, batch_size: int = 64, patch: float = 1 / 8, stride: float = 1 / 16):
        super().__init__(model, target_layer, batch_size, patch, stride, fill="blur")
