"""tf.data batches: uint8 films → 3 identical channels of float32 in [0, 255] → the backbone's own ``preprocess``
(``vgg19.preprocess_input`` for VGG19), with training augmentation as Keras layers and one-hot or multi-hot labels."""
from __future__ import annotations

import numpy as np


def to_model_input(images, preprocess):
    """uint8 (B, H, W) grayscale (replicated to 3 channels) or (B, H, W, 3) RGB → float32 (B, H, W, 3)
    through the backbone's ``preprocess``."""
    import tensorflow as tf
    x = tf.cast(images, tf.float32)
    return preprocess(x if x.shape.rank == 4 else tf.repeat(x[..., None], 3, axis=-1))


def augmenter(cfg, seed: int = 42):
    """A Keras layer stack mapping float (B, H, W, 1) in [0, 255] to augmented images in the same range."""
    import keras
    from keras import layers
    stack = [layers.RandomRotation(cfg.rotation_deg / 360.0, fill_mode="constant", seed=seed),
             layers.RandomZoom(cfg.zoom, fill_mode="constant", seed=seed + 1),
             layers.RandomTranslation(cfg.translate, cfg.translate, fill_mode="constant", seed=seed + 2),
             layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 3),
             layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 4)]
    if cfg.aspect:                      # width only: height factor 0, width zoomed by 1 ± aspect
        stack.append(layers.RandomZoom((0.0, 0.0), (-cfg.aspect, cfg.aspect), fill_mode="constant", seed=seed + 7))
    if cfg.gamma:
        from .gamma import RandomGamma
        stack.append(RandomGamma(cfg.gamma, seed=seed + 6))
    if cfg.horizontal_flip:
        stack.append(layers.RandomFlip("horizontal", seed=seed + 5))
    return keras.Sequential(stack, name="augment")


def augment_batch(images, aug):
    """uint8 (B, H, W) or (B, H, W, 3) → the same shape, through the augmentation stack (training=True)."""
    import tensorflow as tf
    gray = images.shape.rank == 3
    x = tf.cast(images, tf.float32)
    x = aug(x[..., None] if gray else x, training=True)
    x = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)
    return x[..., 0] if gray else x


def label_array(labels) -> np.ndarray:
    """int32 class indices (N,) or float32 multi-hot (N, K), as tf.data should carry them."""
    labels = np.asarray(labels)
    return labels.astype(np.float32) if labels.ndim == 2 else labels.astype(np.int32)


def encode_labels(y, num_classes: int):
    """One-hot for class indices; multi-hot vectors pass through (a tf function: works inside tf.data maps)."""
    import tensorflow as tf
    return tf.cast(y, tf.float32) if y.shape.rank == 2 else tf.one_hot(y, num_classes)


def _memmap_batches(images: np.ndarray, labels, batch_size: int, shuffle: bool, seed: int):
    """Batches of a memory-mapped image array, read row by row from disk: only the batch is in RAM."""
    import tensorflow as tf
    lab = None if labels is None else label_array(labels)
    index = tf.data.Dataset.range(len(images))
    if shuffle:
        index = index.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    shape = tf.TensorShape([None, *images.shape[1:]])

    def gather(idx):
        x = tf.numpy_function(lambda i: np.ascontiguousarray(images[np.sort(i)][np.argsort(np.argsort(i))]),
                              [idx], tf.uint8)
        x = tf.ensure_shape(x, shape)
        if lab is None:
            return x
        return x, tf.gather(tf.constant(lab), idx)
    return index.batch(batch_size).map(gather)


def make_dataset(images: np.ndarray, labels: np.ndarray | None, preprocess, num_classes: int = 2,
                 batch_size: int = 32, shuffle: bool = False, seed: int = 42, augment=None):
    """tf.data pipeline over decoded uint8 images: [shuffle] → batch → [augment] → preprocess + one-hot
    → prefetch. ``augment`` (an ``AugmentConfig``) is for training data only."""
    import tensorflow as tf
    if isinstance(images, np.memmap):              # a disk-backed store (store.py): gather rows per batch
        ds = _memmap_batches(images, labels, batch_size, shuffle, seed)
    else:
        if labels is None:
            ds = tf.data.Dataset.from_tensor_slices(images)
        else:
            ds = tf.data.Dataset.from_tensor_slices((images, label_array(labels)))
        if shuffle:
            ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
    if augment is not None:
        if labels is None:
            raise ValueError("augmentation is for training batches, which need labels")
        aug = augmenter(augment, seed)
        ds = ds.map(lambda x, y: (augment_batch(x, aug), y))   # one random stream: serial map
    if labels is None:
        ds = ds.map(lambda x: to_model_input(x, preprocess), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: (to_model_input(x, preprocess), encode_labels(y, num_classes)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
