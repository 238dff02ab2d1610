"""Backbone registry and the classifier: backbone → GAP → Dropout 0.4 → Dense(L2) → Dropout 0.3 → softmax.

Models are built *flat* (the backbone's layers live in the top-level functional graph, not in a nested
sub-model), so ``model.get_layer("block5_conv3")`` works for Grad-CAM, also after ``load_trained_model``.
Saved models are weights + a JSON config, rebuilt from code: nothing from disk is executed.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..config import ModelConfig, write_json_atomic

HEAD_PREFIX = "head_"
NO_DOWNLOAD_ENV = "XAI_CXR_NO_DOWNLOAD"       # set to 1 to forbid any download (as --no-download does)
_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"

# Where Keras itself downloads each backbone's "notop" ImageNet file, and the hash it checks (md5), copied from
# keras.applications (tests/test_weights.py compares them with the installed Keras source).
IMAGENET_SOURCES: dict[str, tuple[str, str | None]] = {
    "vgg19": (_KERAS_APPS + "vgg19/", "253f8cb515780f3b799900260a226db6"),
    "vgg16": (_KERAS_APPS + "vgg16/", "6d6bbae143d832006294945121d1f1fc"),
    "resnet50": (_KERAS_APPS + "resnet/", "4d473c1dd8becc155b73f8504c6f6626"),
    "densenet121": (_KERAS_APPS + "densenet/", "30ee3e1110167f948a6b9946edeeb738"),
    "densenet169": (_KERAS_APPS + "densenet/", "b8c4d4c20dd625c148057b9ff1c1176b"),
    "mobilenetv2": (_KERAS_APPS + "mobilenet_v2/", None),           # Keras publishes no hash for MobileNetV2
    "inceptionv3": (_KERAS_APPS + "inception_v3/", "bcbd6486424b2319ff4ef7d526e38f63"),
    "xception": (_KERAS_APPS + "xception/", "b0042744bf5b25fce3cb969f33bebb97"),
    "efficientnetb0": ("https://storage.googleapis.com/keras-applications/", "50bc09e76180e00e4465e1a485ddc09d"),
}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights were asked for but could not be had (not on disk, and no download possible)."""


@dataclass(frozen=True)
class Backbone:
    name: str
    build: Callable          # (input_tensor, weights_path_or_None) -> output tensor of the feature extractor
    preprocess: Callable     # float32 RGB in [0, 255] -> model input
    target_layer: str        # default Grad-CAM layer
    finetune_from: str | None  # first layer unfrozen in stage 2; None = no pretrained weights, train it all
    imagenet_file: str | None  # file name in ~/.keras/models/ holding ImageNet weights
    fusion_layers: tuple[str, ...] = ()  # layers the multi-layer CAM fuses (coarse to fine scales)
    chain: bool = True         # layers form a single chain (VGG, cxr-small): the stage-2 feature cache can cut it
    min_size: int = 32         # smallest input side the architecture accepts
    members: tuple[str, ...] = ()  # a stacked ensemble of these backbones (build → pooled features, 2-D)
    ood_layers: tuple[str, ...] = ()  # depths the out-of-distribution detector pools (models/ood.py); () = the
                                      # last layer at each spatial resolution


def _application(constructor: str, module: str):
    """Builder + preprocessing of a ``keras.applications`` network, built on our input tensor so its layers
    sit flat in the classifier's graph."""
    def build(inputs, weights):
        import keras
        return getattr(keras.applications, constructor)(include_top=False, weights=weights,
                                                        input_tensor=inputs).output

    def preprocess(x):
        import keras
        return getattr(keras.applications, module).preprocess_input(x)
    build.__qualname__ = f"build_{constructor}"
    preprocess.__qualname__ = f"preprocess_{module}"
    return build, preprocess


_vgg19, _vgg19_preprocess = _application("VGG19", "vgg19")


def _cxr_small(inputs, weights):
    """Compact BatchNorm CNN: four blocks of two 3×3 convs, 32→256 filters (trains on a CPU in minutes).

    BatchNorm momentum 0.9, not Keras's 0.99: with a few hundred steps the moving statistics must converge,
    otherwise training accuracy is high and inference accuracy is at chance (measured in a trial run).
    """
    from keras import layers
    x = inputs
    for block, filters in enumerate((32, 64, 128, 256), start=1):
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}")(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
        if block < 4:
            x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return x


def _cxr_res(inputs, weights, widths=(32, 64, 128, 256)):
    """Residual BatchNorm network for training from scratch on a CPU (He et al. 2016 basic blocks): a stride-2
    3×3 stem, then one block per stage — two 3×3 convs with BatchNorm, added to the identity or a strided 1×1
    projection — stages 2-4 halving the resolution. At 128 px: ~1.2 M parameters, ~0.25 G multiply-adds
    per image (cxr-small: ~0.85 G), an 8×8 map at ``stage4_out`` for Grad-CAM. BatchNorm momentum 0.9 as in
    cxr-small (few steps; see there)."""
    from keras import layers

    def conv_bn(x, filters, kernel, stride, name):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name + "_conv")(x)
        return layers.BatchNormalization(momentum=0.9, name=name + "_bn")(x)

    x = layers.Activation("relu", name="stem_relu")(conv_bn(inputs, widths[0], 3, 2, "stem"))
    for stage, filters in enumerate(widths, start=1):
        stride = 1 if stage == 1 else 2
        y = layers.Activation("relu", name=f"stage{stage}_relu1")(conv_bn(x, filters, 3, stride, f"stage{stage}_a"))
        y = conv_bn(y, filters, 3, 1, f"stage{stage}_b")
        shortcut = x if stride == 1 and x.shape[-1] == filters else conv_bn(x, filters, 1, stride, f"stage{stage}_proj")
        x = layers.Activation("relu", name=f"stage{stage}_out")(layers.Add(name=f"stage{stage}_add")([y, shortcut]))
    return x


def _unit_scale(x):
    return x / 255.0


def _ensemble_build(members):
    """Each member on the shared [0, 255] input with its own preprocessing inside the graph, global-average
    pooled and concatenated: (B, sum of member channels)."""
    def build(inputs, weights):
        from keras import layers
        feats = []
        for name, w in zip(members, weights or [None] * len(members)):
            spec = BACKBONES[name]
            x = _PREPROCESS_LAYERS[name](inputs)
            feats.append(layers.GlobalAveragePooling2D(name=f"{name}_gap")(spec.build(x, w)))
        return layers.Concatenate(name="ensemble_features")(feats)
    return build


def _preprocess_layers(mode: str, name: str):
    """Keras-layer versions of keras.applications' "tf" and "torch" preprocessing modes."""
    def make(x):
        from keras import layers
        if mode == "tf":                                   # [-1, 1]
            return layers.Rescaling(1 / 127.5, offset=-1.0, name=f"{name}_preprocess")(x)
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)   # "torch": ImageNet mean/std on [0, 1]
        x = layers.Rescaling(1 / 255.0, name=f"{name}_rescale")(x)
        return layers.Normalization(mean=mean, variance=[v * v for v in std], name=f"{name}_preprocess")(x)
    return make


_PREPROCESS_LAYERS = {"mobilenetv2": _preprocess_layers("tf", "mobilenetv2"),
                      "densenet169": _preprocess_layers("torch", "densenet169")}


def _keras_app(name, constructor, module, target, finetune, weights_file, fusion, min_size=32):
    build, preprocess = _application(constructor, module)
    return Backbone(name, build, preprocess, target, finetune, weights_file, fusion, chain=False, min_size=min_size)


# One dict: the CLI's --backbone choices come from it. Per network: preprocessing, default Grad-CAM layer (the
# last spatial block), first layer unfrozen in stage 2 (the last block) and the ImageNet file Keras caches.
BACKBONES: dict[str, Backbone] = {
    "vgg19": Backbone("vgg19", _vgg19, _vgg19_preprocess, "block5_conv3", "block5_conv1",
                      "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                      ("block4_conv4", "block5_conv2", "block5_conv3")),
    "cxr-small": Backbone("cxr-small", _cxr_small, _unit_scale, "block4_relu2", None, None,
                          ("block3_relu2", "block4_relu1", "block4_relu2")),
    "cxr-res": Backbone("cxr-res", _cxr_res, _unit_scale, "stage4_out", None, None,
                        ("stage3_out", "stage4_out"), chain=False,
                        ood_layers=("stem_relu", "stage1_out", "stage2_out", "stage3_out", "stage4_out")),
    "vgg16": Backbone("vgg16", *_application("VGG16", "vgg16"), "block5_conv3", "block5_conv1",
                      "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                      ("block4_conv3", "block5_conv2", "block5_conv3")),
    "resnet50": _keras_app("resnet50", "ResNet50", "resnet50", "conv5_block3_out", "conv5_block1_1_conv",
                           "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                           ("conv4_block6_out", "conv5_block2_out", "conv5_block3_out")),
    "densenet121": _keras_app("densenet121", "DenseNet121", "densenet", "relu", "conv5_block1_0_bn",
                              "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                              ("pool4_relu", "conv5_block8_concat", "relu")),
    "densenet169": _keras_app("densenet169", "DenseNet169", "densenet", "relu", "conv5_block1_0_bn",
                              "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5",
                              ("pool4_relu", "conv5_block16_concat", "relu")),
    "mobilenetv2": _keras_app("mobilenetv2", "MobileNetV2", "mobilenet_v2", "out_relu", "block_16_expand",
                              "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                              ("block_13_expand_relu", "block_16_project", "out_relu")),
    "inceptionv3": _keras_app("inceptionv3", "InceptionV3", "inception_v3", "mixed10", "conv2d_85",
                              "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                              ("mixed7", "mixed9", "mixed10"), min_size=75),
    "xception": _keras_app("xception", "Xception", "xception", "block14_sepconv2_act", "block14_sepconv1",
                           "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                           ("block13_sepconv2_act", "block14_sepconv1_act", "block14_sepconv2_act"), min_size=71),
    "efficientnetb0": _keras_app("efficientnetb0", "EfficientNetB0", "efficientnet", "top_activation",
                                 "block7a_expand_conv", "efficientnetb0_notop.h5",
                                 ("block5c_add", "block6d_add", "top_activation")),
}
# Stacked ensemble: MobileNetV2 + DenseNet169 pooled features → BN → Dense 256 → Dropout 0.5 → BN → Dense 128 →
# Dropout 0.5 → softmax. Its Grad-CAM fuses the members' own target layers with equal weights (explain.registry).
BACKBONES["ensemble"] = Backbone(
    "ensemble", _ensemble_build(("mobilenetv2", "densenet169")), lambda x: x,
    "out_relu+relu", "conv5_block1_0_bn", None, ("out_relu", "relu"), chain=False,
    members=("mobilenetv2", "densenet169"))


def keras_models_dir() -> Path:
    """Keras's download cache, ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def imagenet_available(backbone: str = "vgg19") -> bool:
    """The backbone's ImageNet file is already on disk (no network needed)."""
    spec = BACKBONES[backbone]
    return spec.imagenet_file is not None and (keras_models_dir() / spec.imagenet_file).is_file()


def imagenet_url(backbone: str) -> str:
    return IMAGENET_SOURCES[backbone][0] + BACKBONES[backbone].imagenet_file


def download_allowed(allow: bool | None = None) -> bool:
    """``allow`` when given, else True unless the environment variable XAI_CXR_NO_DOWNLOAD is set (not 0)."""
    if allow is not None:
        return allow
    return os.environ.get(NO_DOWNLOAD_ENV, "").strip().lower() in ("", "0", "false", "no")


def fetch_imagenet(backbone: str, allow_download: bool | None = None, origin: str | None = None,
                   file_hash: str | None = "keras", timeout: float = 30.0) -> str:
    """Path of the backbone's ImageNet "notop" weights, as Keras gets them: the file in ``~/.keras/models/``
    when present (trusted as is), otherwise downloaded there once with ``keras.utils.get_file`` (progress bar,
    Keras's published hash checked). ``origin``/``file_hash`` override the URL and hash ("keras" = the
    published one; None = no check). Any failure — offline, refused, timed out, wrong hash — raises
    ``WeightsNotFoundError`` naming the URL and the fixes; no partial or unverified file is left behind."""
    import socket
    spec = get_backbone(backbone)
    if spec.imagenet_file is None:
        raise WeightsNotFoundError(f"backbone {backbone!r} has no ImageNet weights; use --weights none "
                                   "or --weights PATH")
    path = keras_models_dir() / spec.imagenet_file
    if path.is_file():
        return str(path)
    url = origin or imagenet_url(backbone)
    if file_hash == "keras":
        file_hash = IMAGENET_SOURCES[backbone][1]

    def fail(reason: str):
        return WeightsNotFoundError(
            f"ImageNet weights for {backbone} could not be had: {reason}\n"
            f"  Fix: on a machine with internet, download\n    {url}\n  and copy it to {path}\n"
            f"  (or pass --weights /path/to/{spec.imagenet_file}). Without ImageNet weights, train the compact "
            f"CNN made for that case: --backbone cxr-small (notebook: BACKBONE = \"cxr-small\").")

    if not download_allowed(allow_download):
        raise fail(f"not in {path.parent}, and downloads are switched off (--no-download or {NO_DOWNLOAD_ENV})")
    import keras
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)            # urllib has no timeout of its own here: no hang when offline
    try:
        got = keras.utils.get_file(spec.imagenet_file, url, cache_subdir="models", file_hash=file_hash,
                                   cache_dir=str(keras_models_dir().parent))
    except ValueError as exc:                    # Keras keeps a file whose hash is wrong: remove it
        path.unlink(missing_ok=True)
        raise fail(f"the downloaded file failed the hash check ({exc})") from exc
    except Exception as exc:                     # noqa: BLE001 - Keras wraps URLError/HTTPError in Exception
        path.unlink(missing_ok=True)
        raise fail(f"download failed ({exc})") from exc
    finally:
        socket.setdefaulttimeout(old)
    return got


def resolve_backbone(name: str) -> str:
    """"auto" → "vgg19" (the reference design's model); its ImageNet weights are fetched by ``resolve_weights``, which
    stops with the fix when they cannot be had. Other names pass through."""
    return "vgg19" if name == "auto" else name


def resolve_weights(backbone: str, weights: str | None, allow_download: bool | None = None):
    """Map "imagenet" | "none" | PATH to a local file path (or None); "imagenet" downloads like Keras when
    the file is missing (``fetch_imagenet``). An ensemble with "imagenet" gives one path per member."""
    spec = get_backbone(backbone)
    if weights in (None, "none", "None"):
        return None
    if spec.members and weights == "imagenet":
        return [resolve_weights(m, "imagenet", allow_download) for m in spec.members]
    if weights == "imagenet":
        return fetch_imagenet(backbone, allow_download)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path} (use --weights imagenet|none|PATH)")
    return str(path)


def get_backbone(name: str) -> Backbone:
    """The registry entry, or an error listing the registry."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    return BACKBONES[name]


def build_model(cfg: ModelConfig, image_size: int = 256):
    """The classifier for ``cfg`` at ``image_size``² × 3, with backbone layers flat in the graph."""
    import keras
    from keras import layers, regularizers
    spec = get_backbone(cfg.backbone)
    if image_size < spec.min_size:
        raise ValueError(f"{cfg.backbone} needs inputs of at least {spec.min_size}px, got {image_size}px")
    weights = resolve_weights(cfg.backbone, cfg.weights, cfg.allow_download)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    # backbone weights from a path go through Keras itself for vgg19; for a full-model file see load_trained_model
    pretrained = spec.imagenet_file or spec.members
    x = spec.build(inputs, weights if pretrained else None)
    if spec.members:                 # the stacked-ensemble head
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
    outputs = layers.Dense(cfg.num_classes, activation="sigmoid" if cfg.multilabel else "softmax", dtype="float32",
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


@dataclass(frozen=True)
class ModelCard:
    """What is needed to rebuild and use saved weights, stored as ``model_config.json`` beside them."""
    backbone: str
    image_size: int
    class_names: tuple[str, ...]
    threshold: float = 0.5
    target_layer: str | None = None
    dense_units: int = 256
    dropout: tuple[float, float] = (0.4, 0.3)
    l2: float = 1e-4
    task: str = "binary"                # a key of tasks.TASKS: scan, head, metrics and decision rule
    color: bool = False
    seed: int = 42                      # the run's seed: evaluate/audit rebuild the same seeded test split
    clahe: bool = False                 # images are CLAHE-equalised after resizing (data.images.equalize)
    geometry: str = "squash"            # how films were brought to image_size (data.images.GEOMETRIES); cards
                                        # written before it existed were squashed
    population_age: tuple[float, float] | None = None   # ages (years) of the training population; None = unknown

    def save(self, folder: str | Path) -> Path:
        return write_json_atomic(asdict(self), Path(folder) / "model_config.json")

    @classmethod
    def load(cls, folder: str | Path) -> "ModelCard":
        data = json.loads((Path(folder) / "model_config.json").read_text())
        data["class_names"] = tuple(data["class_names"])
        data["dropout"] = tuple(data["dropout"])
        if data.get("population_age") is not None:
            data["population_age"] = tuple(data["population_age"])
        return cls(**data)

    def model_config(self) -> ModelConfig:
        from ..tasks import get_task
        return ModelConfig(backbone=self.backbone, weights="none", num_classes=len(self.class_names),
                           dense_units=self.dense_units, dropout=self.dropout, l2=self.l2,
                           multilabel=get_task(self.task).multilabel)



def load_trained_model(folder: str | Path = "saved_weights"):
    """Rebuild the model from ``model_config.json`` and load ``model.weights.h5``: returns (model, card)."""
    folder = Path(folder)
    for f in ("model_config.json", "model.weights.h5"):
        if not (folder / f).is_file():
            raise FileNotFoundError(f"{folder / f} not found: train first (`xai-cxr train` or `xai-cxr demo`)")
    card = ModelCard.load(folder)
    model = build_model(card.model_config(), card.image_size)
    try:
        model.load_weights(folder / "model.weights.h5")
    except ValueError as exc:
        reason = str(exc).split("Target variable")[0].strip()       # keep the shapes, drop the value dump
        raise ValueError(f"{folder / 'model.weights.h5'} does not fit a {card.backbone} model with "
                         f"{len(card.class_names)} classes at {card.image_size}px as model_config.json says: "
                         f"{reason}") from exc
    return model, card
