"""LayerCAM (Jiang et al., 2021): pixel weights = ReLU(gradient); works on earlier layers too."""
import numpy as np

from .base import BaseCAM


class LayerCAM(BaseCAM):
    def weights(self, acts, grads):
        return np.maximum(grads, 0)                                      # (B, h, w, C)
