"""Grad-CAM++ (Chattopadhay et al., 2018): pixel-wise α from second/third-order terms, weights = Σ α·ReLU(g).

With an exponential score the higher derivatives reduce to powers of the gradient, the closed form used by
the paper and by pytorch-grad-cam: α = g² / (2g² + Σ_ij A · g³).
"""
import numpy as np

from .base import BaseCAM


class GradCAMPlusPlus(BaseCAM):
    def weights(self, acts, grads):
        g2, g3 = grads ** 2, grads ** 3
        sum_acts = acts.sum(axis=(1, 2), keepdims=True)                  # (B, 1, 1, C)
        denom = 2 * g2 + sum_acts * g3
        alpha = np.where(grads != 0, g2 / np.where(denom != 0, denom, 1e-7), 0.0)
        return (alpha * np.maximum(grads, 0)).sum(axis=(1, 2))           # (B, C)
