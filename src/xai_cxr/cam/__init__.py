"""Class activation maps: one base (``BaseCAM``) that owns layer lookup, the tape, batching, ReLU,
normalisation and upsampling; one small subclass per method. ``CAM_METHODS`` is the one registry the CLI,
the audit and the tests read."""
from .base import BaseCAM, conv_layer_names, normalize_maps, upsample_maps
from .eigencam import EigenCAM
from .fusion import FusedCAM, choose_target_layer
from .gradcam import GradCAM
from .gradcam_pp import GradCAMPlusPlus
from .hirescam import HiResCAM
from .layercam import LayerCAM
from .scorecam import ScoreCAM

CAM_METHODS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
    "eigencam": EigenCAM,
}



def cam_for(model, target_layer: str, method: str = "gradcam", batch_size: int = 16):
    """The explainer for ``target_layer``; "a+b" (several layers, e.g. the members of an ensemble) fuses
    those layers' maps of ``method`` with equal weights."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {sorted(CAM_METHODS)}")
    if "+" in target_layer:
        return FusedCAM(model, target_layer.split("+"), CAM_METHODS[method], batch_size=batch_size)
    return CAM_METHODS[method](model, target_layer, batch_size)


__all__ = ["BaseCAM", "CAM_METHODS", "cam_for", "EigenCAM", "FusedCAM", "GradCAM", "GradCAMPlusPlus", "HiResCAM",
           "LayerCAM", "ScoreCAM", "choose_target_layer", "conv_layer_names", "normalize_maps", "upsample_maps"]
