"""Segmentation stage for data sets with lesion masks: a small U-Net with residual encoder blocks, trained on
the masks, run on the images the classifier calls positive (classify, then segment). Its masks are the
supervised localisation to set beside Grad-CAM's weakly supervised one, scored with the same IoU / Dice
(``explain.metrics.localization.mask_scores``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentConfig:
    base_filters: int = 16
    depth: int = 3                   # pooling steps; the input side must be divisible by 2**depth
    epochs: int = 15
    batch_size: int = 16
    learning_rate: float = 1e-3
    threshold: float = 0.5           # mask = probability ≥ threshold
    seed: int = 42


def _res_block(x, filters, name):
    from keras import layers
    shortcut = layers.Conv2D(filters, 1, padding="same", name=f"{name}_proj")(x)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn2")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build_unet(image_size: int, cfg: SegmentConfig = SegmentConfig()):
    """Gray (S, S, 1) in [0, 1] → lesion probability (S, S, 1). Residual encoder, skip connections."""
    import keras
    from keras import layers
    if image_size % 2 ** cfg.depth:
        raise ValueError(f"U-Net input side must be divisible by {2 ** cfg.depth}, got {image_size}")
    inputs = keras.Input((image_size, image_size, 1), name="gray")
    x, skips = inputs, []
    for d in range(cfg.depth):
        x = _res_block(x, cfg.base_filters * 2 ** d, f"enc{d + 1}")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"pool{d + 1}")(x)
    x = _res_block(x, cfg.base_filters * 2 ** cfg.depth, "bottleneck")
    for d in reversed(range(cfg.depth)):
        x = layers.UpSampling2D(name=f"up{d + 1}")(x)
        x = layers.Concatenate(name=f"skip{d + 1}")([x, skips[d]])
        x = _res_block(x, cfg.base_filters * 2 ** d, f"dec{d + 1}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    return keras.Model(inputs, outputs, name="unet")


def dice_bce_loss(y_true, y_pred, smooth: float = 1.0):
    """Soft Dice + binary cross-entropy: Dice copes with small lesions, BCE keeps early gradients sane."""
    import keras
    from keras import ops
    y_true = ops.cast(y_true, y_pred.dtype)
    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    total = ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3))
    dice = (2 * inter + smooth) / (total + smooth)
    return ops.mean(1 - dice) + ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))


def _inputs(images):
    return (np.asarray(images, np.float32) / 255.0)[..., None]


def train_unet(images, masks, val_images=None, val_masks=None, cfg: SegmentConfig = SegmentConfig(),
               verbose: int = 0):
    """Train a U-Net on uint8 gray images (N, S, S) and boolean masks (N, S, S). Returns (model, history)."""
    import keras
    keras.utils.set_random_seed(cfg.seed)
    model = build_unet(images.shape[1], cfg)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=dice_bce_loss)
    val = None if val_images is None else (_inputs(val_images), np.asarray(val_masks, np.float32)[..., None])
    hist = model.fit(_inputs(images), np.asarray(masks, np.float32)[..., None], batch_size=cfg.batch_size,
                     epochs=cfg.epochs, validation_data=val, shuffle=True, verbose=verbose)
    return model, hist.history


def segment(model, images, batch_size: int = 32) -> np.ndarray:
    """Lesion probabilities (N, S, S) for uint8 gray images."""
    return model.predict(_inputs(images), batch_size=batch_size, verbose=0)[..., 0]


def classify_then_segment(classifier, preprocess, unet, images, threshold: float = 0.5, batch_size: int = 32):
    """The two-step pipeline: (class probabilities, masks). Images the classifier calls negative (class 0
    most probable) get an empty mask; the U-Net runs only on the others."""
    from .predict import predict_images
    proba = predict_images(classifier, images, preprocess, batch_size)
    masks = np.zeros(images.shape[:3], bool)
    pos = np.flatnonzero(proba.argmax(1) > 0)
    if len(pos):
        masks[pos] = segment(unet, images[pos], batch_size) >= threshold
    return proba, masks
