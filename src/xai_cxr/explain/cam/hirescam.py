"""HiResCAM (Draelos & Carin, 2020): element-wise gradient × activation, summed over channels.

Unlike Grad-CAM it does not average the gradient spatially, so the map provably reflects the locations the
score depends on (for models ending in one fully connected layer)."""
from .base import BaseCAM


class HiResCAM(BaseCAM):
    def weights(self, acts, grads):
        return grads                                                     # (B, h, w, C)
