"""Grad-CAM (Selvaraju et al., 2017): channel weight = spatial mean of the score's gradient."""

from .base import BaseCAM


class GradCAM(BaseCAM):
    def weights(self, acts, grads):
        return grads.mean(axis=(1, 2))                      # (B, C)
