"""Models: the backbone registry (``backbones``), ImageNet weights as Keras gets them (``imagenet``), the
classifier (``classifier``) and a trained model's folder (``folder``, file names in ``files``); training, the
feature cache, calibration, uncertainty, the out-of-distribution detector and the referral rule in the other
submodules."""
from .backbones import BACKBONES, Backbone, get_backbone, resolve_backbone  # noqa: F401
from .classifier import HEAD_PREFIX, backbone_layers, backbone_of, build_model, set_trainable  # noqa: F401
from .folder import ModelCard, ModelFolder, load_trained_model  # noqa: F401
from .imagenet import (  # noqa: F401
                       NO_DOWNLOAD_ENV,
                       WeightsNotFoundError,
                       download_allowed,
                       fetch_imagenet,
                       imagenet_available,
                       keras_models_dir,
                       resolve_weights,
)
