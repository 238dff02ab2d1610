"""The classifier: backbone → GAP → Dropout 0.4 → Dense(L2) → Dropout 0.3 → the task's output layer (softmax, or
one sigmoid per label); freezing and unfreezing for the two training stages.

Models are built *flat* (the backbone's layers live in the top-level functional graph, not in a nested
sub-model), so ``model.get_layer("block5_conv3")`` works for Grad-CAM, also after loading a saved folder.
Saved models are weights + a JSON card, rebuilt from code (``models/folder.py``): nothing from disk is executed.
"""
from __future__ import annotations

from ..config import ModelConfig
from .backbones import BACKBONES, get_backbone
from .imagenet import resolve_weights

HEAD_PREFIX = "head_"


def build_model(cfg: ModelConfig, image_size: int = 256, activation: str = "softmax"):
    """The classifier for ``cfg`` at ``image_size``² × 3, with backbone layers flat in the graph; ``activation``
    of the output layer is the task's (``tasks.Task.activation``)."""
    import keras
    from keras import layers, regularizers
    spec = get_backbone(cfg.backbone)
    if image_size < spec.min_size:
        raise ValueError(f"{cfg.backbone} needs inputs of at least {spec.min_size}px, got {image_size}px")
    weights = resolve_weights(cfg.backbone, cfg.weights, cfg.allow_download)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    # backbone weights from a path go through Keras itself for ImageNet backbones; else a whole-model file
    pretrained = spec.imagenet_file or spec.members
    x = spec.build(inputs, weights if pretrained else None)
    if spec.members:                 # the stacked ensemble's head
        x = layers.BatchNormalization(name=HEAD_PREFIX + "bn1")(x)
        x = layers.Dense(256, activation="relu", name=HEAD_PREFIX + "dense")(x)
        x = layers.Dropout(0.5, name=HEAD_PREFIX + "dropout1")(x)
        x = layers.BatchNormalization(name=HEAD_PREFIX + "bn2")(x)
        x = layers.Dense(128, activation="relu", kernel_regularizer=regularizers.l2(cfg.l2),
                         name=HEAD_PREFIX + "dense2")(x)
        x = layers.Dropout(0.5, name=HEAD_PREFIX + "dropout2")(x)
    else:
        x = layers.GlobalAveragePooling2D(name=HEAD_PREFIX + "gap")(x)
        x = layers.Dropout(cfg.dropout[0], name=HEAD_PREFIX + "dropout1")(x)
        x = layers.Dense(cfg.dense_units, activation="relu", kernel_regularizer=regularizers.l2(cfg.l2),
                         name=HEAD_PREFIX + "dense")(x)
        x = layers.Dropout(cfg.dropout[1], name=HEAD_PREFIX + "dropout2")(x)
    # float32 output under a mixed-precision policy: softmax and the loss stay exact
    outputs = layers.Dense(cfg.num_classes, activation=activation, dtype="float32",
                           name=HEAD_PREFIX + "predictions")(x)
    model = keras.Model(inputs, outputs, name=f"{cfg.backbone}_classifier")
    if weights and not pretrained:
        model.load_weights(weights)
    return model


def backbone_of(model) -> str:
    """Registry key of a model made by ``build_model`` (its name is "<backbone>_classifier")."""
    name = model.name.removesuffix("_classifier")
    if name not in BACKBONES:
        raise ValueError(f"model {model.name!r} was not built by xai_cxr.models.build_model")
    return name


def backbone_layers(model):
    """Layers of the feature extractor, in graph order (everything but the input and the head)."""
    return [l for l in model.layers if not l.name.startswith(HEAD_PREFIX) and l.__class__.__name__ != "InputLayer"]


def set_trainable(model, train_backbone: bool = False, unfreeze_from: str | None = None) -> None:
    """Freeze the backbone, or unfreeze it from layer ``unfreeze_from`` on (stage 2), or train it all."""
    names = [l.name for l in backbone_layers(model)]
    if unfreeze_from is not None and unfreeze_from not in names:
        raise ValueError(f"unfreeze_from={unfreeze_from!r} is not a backbone layer; have {names}")
    start = len(names) if unfreeze_from is None else names.index(unfreeze_from)
    for i, layer in enumerate(backbone_layers(model)):
        layer.trainable = train_backbone or i >= start
    for layer in model.layers:
        if layer.name.startswith(HEAD_PREFIX):
            layer.trainable = True
