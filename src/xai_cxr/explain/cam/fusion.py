"""Multi-layer fusion and robust target-layer choice."""
from __future__ import annotations

import numpy as np

from .base import BaseCAM, conv_layer_names


class FusedCAM:
    """Weighted mean (default: plain mean) of the normalised, upsampled maps of several layers (default: the
    last ``n_layers`` convs), rescaled to a maximum of 1.

    Deeper layers say *what*, earlier ones sharpen *where*; averaging trades a little of one for the other.
    For a stacked ensemble the layers are the members' own target layers, so the map is the members' maps
    weighted by ``weights``."""

    def __init__(self, model, layers=None, method: type[BaseCAM] | None = None, n_layers: int = 3,
                 batch_size: int = 16, weights=None):
        from .gradcam import GradCAM
        layers = list(layers) if layers else conv_layer_names(model)[-n_layers:]
        self.cams = [(method or GradCAM)(model, name, batch_size) for name in layers]
        self.target_layer = "+".join(layers)
        w = np.ones(len(layers)) if weights is None else np.asarray(weights, float)
        if w.shape != (len(layers),) or (w < 0).any() or w.sum() == 0:
            raise ValueError(f"weights must be {len(layers)} non-negative numbers, not all zero; got {weights}")
        self.weights = w / w.sum()

    def __call__(self, images, targets=None, upsample: bool = True) -> np.ndarray:
        if not upsample:
            raise ValueError("fused maps come from layers of different sizes; they are always upsampled")
        maps = np.tensordot(self.weights, np.stack([cam(images, targets) for cam in self.cams]), axes=1)
        hi = maps.max(axis=(1, 2), keepdims=True)
        return np.where(hi > 0, maps / np.where(hi > 0, hi, 1), 0).astype(np.float32)


def choose_target_layer(model, images, method: type[BaseCAM] | None = None, min_size: int = 7,
                        max_saturated: float = 0.5) -> tuple[str, list[str]]:
    """The last conv layer whose maps are fine enough (h, w ≥ ``min_size``), not empty and not saturated
    (≤ ``max_saturated`` of pixels above 0.9) on ``images``; steps back one conv layer at a time.

    Returns (layer, reasons for each layer passed over)."""
    import warnings

    from .gradcam import GradCAM
    method = method or GradCAM
    reasons = []
    names = conv_layer_names(model)
    for name in reversed(names):
        cam = method(model, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            maps = cam(images, upsample=False)
        h, w = maps.shape[1:]
        if min(h, w) < min_size:
            reasons.append(f"{name}: {h}×{w} is coarser than {min_size}×{min_size}")
        elif (maps.max(axis=(1, 2)) == 0).mean() > 0.5:
            reasons.append(f"{name}: empty maps for most images")
        elif (maps > 0.9).mean() > max_saturated:
            reasons.append(f"{name}: saturated ({(maps > 0.9).mean():.0%} of pixels above 0.9)")
        else:
            return name, reasons
    raise ValueError("no conv layer gives usable maps: " + "; ".join(reasons))
