"""Class activation maps: one base (``BaseCAM``) that owns layer lookup, the tape, batching, ReLU,
normalisation and upsampling; one small subclass per method. ``explain.registry`` is where the CLI, the audit,
the app and the API find them."""
from .ablationcam import AblationCAM
from .base import BaseCAM, conv_layer_names, normalize_maps, upsample_maps
from .contrastive import ContrastiveGradCAM
from .eigencam import EigenCAM
from .fusion import FusedCAM, choose_target_layer
from .gradcam import GradCAM
from .gradcam_pp import GradCAMPlusPlus
from .hirescam import HiResCAM
from .layercam import LayerCAM
from .scorecam import ScoreCAM

__all__ = ["AblationCAM", "BaseCAM", "ContrastiveGradCAM", "EigenCAM", "FusedCAM", "GradCAM", "GradCAMPlusPlus",
           "HiResCAM", "LayerCAM", "ScoreCAM", "choose_target_layer", "conv_layer_names", "normalize_maps",
           "upsample_maps"]
