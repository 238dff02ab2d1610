"""Heat map vs. known lesion mask (phantoms, or any data set with masks)."""
from __future__ import annotations

import numpy as np

from ..overlay import top_fraction_mask


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask.astype(bool)
    import cv2
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def standard_tolerance(image_size: int) -> int:
    """The pointing game's usual tolerance: 15 px at 224 px (Zhang et al., 2016), scaled to ``image_size``."""
    return max(1, round(15 * image_size / 224))


def pointing_game(heats: np.ndarray, masks: np.ndarray, tolerance_px: int | None = None) -> np.ndarray:
    """Per image: is the hottest pixel inside the lesion mask dilated by ``tolerance_px``
    (None = ``standard_tolerance`` of the map size)?"""
    heats = np.asarray(heats)
    if tolerance_px is None:
        tolerance_px = standard_tolerance(heats.shape[1])
    hits = []
    for heat, mask in zip(heats, masks):
        y, x = np.unravel_index(np.argmax(heat), heat.shape)
        hits.append(bool(_dilate(mask, tolerance_px)[y, x]))
    return np.array(hits)


def top_fraction_hit_rate(heats: np.ndarray, masks: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Per image: share of the top-``fraction`` heat pixels that fall inside the lesion mask."""
    rates = []
    for heat, mask in zip(heats, masks):
        top = top_fraction_mask(heat, fraction)
        rates.append((top & mask.astype(bool)).sum() / max(1, top.sum()))
    return np.array(rates)


def iou_dice(heats: np.ndarray, masks: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per image: IoU and Dice between ``heat ≥ threshold`` and the lesion mask."""
    pred = np.asarray(heats) >= threshold
    masks = np.asarray(masks).astype(bool)
    inter = (pred & masks).sum(axis=(1, 2))
    union = (pred | masks).sum(axis=(1, 2))
    total = pred.sum(axis=(1, 2)) + masks.sum(axis=(1, 2))
    return inter / np.maximum(union, 1), 2 * inter / np.maximum(total, 1)


def relevance_mass(heats: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: the share of the map's total (non-negative) heat inside the mask (Arras et al. 2022, relevance
    mass accuracy)."""
    heats = np.maximum(np.asarray(heats, np.float64), 0)
    masks = np.asarray(masks, bool)
    inside = (heats * masks).sum(axis=(1, 2))
    return inside / np.maximum(heats.sum(axis=(1, 2)), 1e-12)


def relevance_rank(heats: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: of the K hottest pixels, K = the mask's size, the share inside the mask (Arras et al. 2022,
    relevance rank accuracy). Ties are broken by pixel order."""
    out = []
    for heat, mask in zip(np.asarray(heats), np.asarray(masks, bool)):
        k = int(mask.sum())
        top = np.argsort(-heat.ravel(), kind="stable")[:k]
        out.append(mask.ravel()[top].sum() / max(k, 1))
    return np.array(out)


def mask_scores(pred_masks, true_masks) -> dict:
    """Mean IoU and Dice over images whose true mask is not empty."""
    true_masks = np.asarray(true_masks, bool)
    keep = true_masks.reshape(len(true_masks), -1).any(1)
    iou, dice = iou_dice(np.asarray(pred_masks, float)[keep], true_masks[keep], threshold=0.5)
    return {"iou": float(iou.mean()) if keep.any() else float("nan"),
            "dice": float(dice.mean()) if keep.any() else float("nan"), "n_images": int(keep.sum())}
