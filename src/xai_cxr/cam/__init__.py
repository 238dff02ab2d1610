"""Class activation maps: one base (``BaseCAM``), one small subclass per method."""
from .base import BaseCAM, conv_layer_names, normalize_maps, upsample_maps
from .gradcam import GradCAM

CAM_METHODS = {"gradcam": GradCAM}

__all__ = ["BaseCAM", "GradCAM", "CAM_METHODS", "conv_layer_names", "normalize_maps", "upsample_maps"]
