"""The backbone registry: one ``Backbone`` entry per network, keyword fields, everything about it in the entry —
how to build it, its preprocessing, its Grad-CAM and fusion layers, where stage 2 unfreezes, the depths the
out-of-distribution detector reads, and the ImageNet file Keras downloads for it (URL and md5 copied from
``keras.applications``; ``tests/test_weights.py`` reads them back from the installed Keras source).

A new backbone is one builder function and one entry in ``BACKBONES``; the CLI's ``--backbone`` choices, the
app, the notebook and the explainers read this dict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True, kw_only=True)
class Backbone:
    name: str
    build: Callable            # (input_tensor, weights_path_or_None) -> output tensor of the feature extractor
    preprocess: Callable       # float32 RGB in [0, 255] -> model input
    target_layer: str          # default Grad-CAM layer (the last spatial block)
    finetune_from: str | None = None    # first layer unfrozen in stage 2; None = no pretrained weights, train all
    imagenet_file: str | None = None    # file name in ~/.keras/models/ holding ImageNet "notop" weights
    imagenet_url: str | None = None     # where Keras downloads it
    imagenet_md5: str | None = None     # the hash Keras checks (None: Keras publishes none)
    fusion_layers: tuple[str, ...] = ()  # layers the multi-layer CAM fuses (coarse to fine scales)
    chain: bool = True         # layers form a single chain (VGG, cxr-small): the stage-2 feature cache can cut it
    min_size: int = 32         # smallest input side the architecture accepts
    members: tuple[str, ...] = ()       # a stacked ensemble of these backbones (build → pooled features, 2-D)
    ood_layers: tuple[str, ...] = ()    # depths the out-of-distribution detector pools (models/ood.py); () = the
                                        # last layer at each spatial resolution
    graph_preprocess: Callable | None = None   # the preprocessing as Keras layers (an ensemble member needs it)


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


def _keras_app(name: str, constructor: str, module: str, url_folder: str, file: str, md5: str | None,
               **fields) -> Backbone:
    """A ``keras.applications`` network: built on our input tensor, Keras's preprocessing, Keras's file."""
    build, preprocess = _application(constructor, module)
    return Backbone(name=name, build=build, preprocess=preprocess, imagenet_file=file,
                    imagenet_url=url_folder + file, imagenet_md5=md5, **fields)


def _cxr_small(inputs, weights):
    """Compact BatchNorm CNN: four blocks of two 3×3 convs, 32→256 filters (trains on a CPU in minutes).

    BatchNorm momentum 0.9, not Keras's 0.99: with a few hundred steps the moving statistics must converge,
    otherwise training accuracy is high while inference, on the lagging moving statistics, stays at chance.
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


def _ensemble_build(members):
    """Each member on the shared [0, 255] input with its own preprocessing inside the graph, global-average
    pooled and concatenated: (B, sum of member channels)."""
    def build(inputs, weights):
        from keras import layers
        feats = []
        for name, w in zip(members, weights or [None] * len(members)):
            spec = BACKBONES[name]
            x = spec.graph_preprocess(inputs)
            feats.append(layers.GlobalAveragePooling2D(name=f"{name}_gap")(spec.build(x, w)))
        return layers.Concatenate(name="ensemble_features")(feats)
    return build


_vgg19, _vgg19_preprocess = _application("VGG19", "vgg19")
_GOOGLE = "https://storage.googleapis.com/keras-applications/"      # EfficientNet's folder

# The CLI's --backbone choices come from this dict.
BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone(name="vgg19", build=_vgg19, preprocess=_vgg19_preprocess, target_layer="block5_conv3",
             finetune_from="block5_conv1", imagenet_file="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
             imagenet_url=_KERAS_APPS + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
             imagenet_md5="253f8cb515780f3b799900260a226db6",
             fusion_layers=("block4_conv4", "block5_conv2", "block5_conv3")),
    Backbone(name="cxr-small", build=_cxr_small, preprocess=_unit_scale, target_layer="block4_relu2",
             fusion_layers=("block3_relu2", "block4_relu1", "block4_relu2")),
    Backbone(name="cxr-res", build=_cxr_res, preprocess=_unit_scale, target_layer="stage4_out",
             fusion_layers=("stage3_out", "stage4_out"), chain=False,
             ood_layers=("stem_relu", "stage1_out", "stage2_out", "stage3_out", "stage4_out")),
    _keras_app("vgg16", "VGG16", "vgg16", _KERAS_APPS + "vgg16/", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
               "6d6bbae143d832006294945121d1f1fc", target_layer="block5_conv3", finetune_from="block5_conv1",
               fusion_layers=("block4_conv3", "block5_conv2", "block5_conv3")),
    _keras_app("resnet50", "ResNet50", "resnet50", _KERAS_APPS + "resnet/",
               "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "4d473c1dd8becc155b73f8504c6f6626",
               target_layer="conv5_block3_out", finetune_from="conv5_block1_1_conv", chain=False,
               fusion_layers=("conv4_block6_out", "conv5_block2_out", "conv5_block3_out")),
    _keras_app("densenet121", "DenseNet121", "densenet", _KERAS_APPS + "densenet/",
               "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", "30ee3e1110167f948a6b9946edeeb738",
               target_layer="relu", finetune_from="conv5_block1_0_bn", chain=False,
               fusion_layers=("pool4_relu", "conv5_block8_concat", "relu")),
    _keras_app("densenet169", "DenseNet169", "densenet", _KERAS_APPS + "densenet/",
               "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5", "b8c4d4c20dd625c148057b9ff1c1176b",
               target_layer="relu", finetune_from="conv5_block1_0_bn", chain=False,
               fusion_layers=("pool4_relu", "conv5_block16_concat", "relu"),
               graph_preprocess=_preprocess_layers("torch", "densenet169")),
    _keras_app("mobilenetv2", "MobileNetV2", "mobilenet_v2", _KERAS_APPS + "mobilenet_v2/",
               "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5", None,   # Keras publishes no hash
               target_layer="out_relu", finetune_from="block_16_expand", chain=False,
               fusion_layers=("block_13_expand_relu", "block_16_project", "out_relu"),
               graph_preprocess=_preprocess_layers("tf", "mobilenetv2")),
    _keras_app("inceptionv3", "InceptionV3", "inception_v3", _KERAS_APPS + "inception_v3/",
               "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "bcbd6486424b2319ff4ef7d526e38f63",
               target_layer="mixed10", finetune_from="conv2d_85", chain=False, min_size=75,
               fusion_layers=("mixed7", "mixed9", "mixed10")),
    _keras_app("xception", "Xception", "xception", _KERAS_APPS + "xception/",
               "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", "b0042744bf5b25fce3cb969f33bebb97",
               target_layer="block14_sepconv2_act", finetune_from="block14_sepconv1", chain=False, min_size=71,
               fusion_layers=("block13_sepconv2_act", "block14_sepconv1_act", "block14_sepconv2_act")),
    _keras_app("efficientnetb0", "EfficientNetB0", "efficientnet", _GOOGLE, "efficientnetb0_notop.h5",
               "50bc09e76180e00e4465e1a485ddc09d", target_layer="top_activation",
               finetune_from="block7a_expand_conv", chain=False,
               fusion_layers=("block5c_add", "block6d_add", "top_activation")),
    # Stacked ensemble: MobileNetV2 + DenseNet169 pooled features → BN → Dense 256 → Dropout 0.5 → BN → Dense 128
    # → Dropout 0.5 → softmax (models/classifier.py). Its Grad-CAM fuses the members' own target layers.
    Backbone(name="ensemble", build=_ensemble_build(("mobilenetv2", "densenet169")), preprocess=lambda x: x,
             target_layer="out_relu+relu", finetune_from="conv5_block1_0_bn", fusion_layers=("out_relu", "relu"),
             chain=False, members=("mobilenetv2", "densenet169")),
)}


def get_backbone(name: str) -> Backbone:
    """The registry entry, or an error listing the registry."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    return BACKBONES[name]


def resolve_backbone(name: str) -> str:
    """"auto" → "vgg19" (the reference design's model); its ImageNet weights are fetched by ``resolve_weights``,
    which stops with the fix when they cannot be had. Other names pass through."""
    return "vgg19" if name == "auto" else name
