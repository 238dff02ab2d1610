"""Models: the backbone registry, ImageNet weights, the classifier head and its saved description;
training, the feature cache, calibration, uncertainty and segmentation in the submodules."""
from .registry import (  # noqa: F401
    HEAD_PREFIX, NO_DOWNLOAD_ENV, IMAGENET_SOURCES, WeightsNotFoundError, Backbone, BACKBONES,
    keras_models_dir, imagenet_available, imagenet_url, download_allowed, fetch_imagenet, resolve_backbone,
    resolve_weights, get_backbone, build_model, backbone_of, backbone_layers, set_trainable, ModelCard,
    load_trained_model,
)
