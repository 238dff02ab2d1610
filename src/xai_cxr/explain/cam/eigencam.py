"""Eigen-CAM (Muhammad & Yeasin, 2020): projection of the activations on their first principal component.

Gradient-free and class-agnostic. The SVD's sign is arbitrary; we orient the component so that it
correlates positively with the channel-summed activation (pytorch-grad-cam leaves it arbitrary)."""
import numpy as np

from .base import BaseCAM


def first_component_projection(acts: np.ndarray) -> np.ndarray:
    """(B, h, w, C) → (B, h, w): centred activations projected on their first right singular vector."""
    b, h, w, c = acts.shape
    out = np.zeros((b, h, w))
    for i in range(b):
        a = acts[i].reshape(h * w, c)
        centred = a - a.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[0]
        if np.dot(proj, a.sum(1) - a.sum(1).mean()) < 0:
            proj = -proj
        out[i] = proj.reshape(h, w)
    return out


class EigenCAM(BaseCAM):
    def compute(self, x, targets):
        """Forward only: no tape, no gradients (the class target is ignored)."""
        acts, _ = self._forward(x)
        return np.maximum(first_component_projection(np.asarray(acts, np.float64)), 0)
