"""Frozen-feature cache: train only what is trainable, on features computed once.

Stage 1 trains the head on a frozen backbone, so the backbone's output is computed once per image and the
head trains on those features (epochs take seconds instead of a full VGG19 pass). Stage 2 trains block 5 and
the head, so the cache holds the output of the layer just below the first trainable one (``block4_pool`` for
VGG19) and each step runs only block 5 + head. The sub-models *share* the full model's layers, so training
them trains the full model. By default the cache lives in memory for one run (float32). With ``cache_dir`` it
is also kept on disk as memory-mapped ``.npy`` files under a key hashed from the image bytes, the image size,
the frozen layers' weights, the preprocessing and the layer, so a stale entry can never be picked up; a cache
folder that cannot be written falls back to memory with a note. It is bypassed for backbones that train whole
(no frozen part) and when augmentation is on (``pipeline.fit``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..config import atomic_path, write_json_atomic
from ..data import encode_labels, label_array, make_dataset
from . import BACKBONES, backbone_layers, backbone_of


def cache_layer(model, train_backbone: bool, unfreeze_from: str | None) -> str | None:
    """The layer whose output can be cached for a stage, or None when nothing is frozen."""
    if train_backbone:
        return None
    names = [l.name for l in backbone_layers(model)]
    if unfreeze_from is None:
        return names[-1]
    i = names.index(unfreeze_from)
    return names[i - 1] if i > 0 else None


def model_after(model, layer_name: str):
    """The part of a chain model above ``layer_name``, as a model on that layer's output (shared layers)."""
    import keras
    layers = model.layers
    idx = [l.name for l in layers].index(layer_name)
    inp = keras.Input(model.get_layer(layer_name).output.shape[1:], name=f"{layer_name}_features")
    x = inp
    for layer in layers[idx + 1:]:
        x = layer(x)
    return keras.Model(inp, x, name=f"{model.name}_above_{layer_name}")


def extract_features(model, layer_name: str, images: np.ndarray, preprocess, batch_size: int = 32,
                     dtype=np.float32) -> np.ndarray:
    """Output of ``layer_name`` for uint8 gray ``images`` (N, h, w, c). float16 halves the memory but, measured
    on VGG19's block4_pool, moves stage-2 gradients by ~6% (ReLUs flip in block 5), so float32 is the default."""
    import keras
    extractor = keras.Model(model.input, model.get_layer(layer_name).output)
    ds = make_dataset(images, None, preprocess, batch_size=batch_size)
    return extractor.predict(ds, verbose=0).astype(dtype)


def cache_key(model, layer_name: str, images: np.ndarray, preprocess, dtype=np.float32) -> str:
    """Hash of everything the features depend on: image bytes and size, the weights of every layer up to
    ``layer_name``, the preprocessing function, the layer and the dtype."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).view(np.uint8).data)
    h.update(repr((images.shape, layer_name, np.dtype(dtype).str, getattr(preprocess, "__module__", ""),
                   getattr(preprocess, "__qualname__", repr(preprocess)))).encode())
    for layer in model.layers:
        for w in layer.get_weights():
            h.update(np.ascontiguousarray(w).data)
        if layer.name == layer_name:
            break
    return h.hexdigest()[:24]


def disk_features(model, layer_name: str, images: np.ndarray, preprocess, cache_dir: str | Path,
                  batch_size: int = 32, dtype=np.float32) -> np.ndarray:
    """``extract_features`` through a keyed on-disk cache: a hit is memory-mapped (never loaded whole), a miss
    is computed and written atomically. An unwritable or full cache folder → note + in-memory features."""
    key = cache_key(model, layer_name, images, preprocess, dtype)
    folder = Path(cache_dir) / key
    path, meta_path = folder / "features.npy", folder / "meta.json"
    if path.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            feats = np.load(path, mmap_mode="r")
            if meta.get("key") == key and list(feats.shape) == meta.get("shape"):
                print(f"feature cache: hit {folder} ({feats.shape[0]} × {layer_name})")
                return feats
        except (OSError, ValueError) as exc:
            print(f"feature cache: ignoring unreadable entry {folder} ({exc}); recomputing")
    feats = extract_features(model, layer_name, images, preprocess, batch_size, dtype)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = _free_bytes(folder)
        if free is not None and free < feats.nbytes + 2**20:
            raise OSError(f"needs {feats.nbytes / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free")
        with atomic_path(path) as tmp:
            np.save(tmp, feats)
        write_json_atomic({"key": key, "layer": layer_name, "shape": list(feats.shape),
                           "dtype": np.dtype(dtype).str}, meta_path)
        return np.load(path, mmap_mode="r")
    except OSError as exc:
        print(f"feature cache: cannot write to {cache_dir} ({exc}); keeping the features in memory for this "
              "run. Pass a writable --cache-dir with enough free space to reuse them across runs.")
        return feats


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
        return st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        return None


def feature_dataset(features: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int = 32,
                    shuffle: bool = False, seed: int = 42):
    """Batches of (features, one-hot). Memory-mapped features are read batch by batch, never copied whole."""
    import tensorflow as tf
    labels = label_array(labels)
    if isinstance(features, np.memmap) or (isinstance(features, np.ndarray) and not features.flags.owndata
                                           and isinstance(features.base, np.memmap)):
        spec = tf.TensorSpec((None, *features.shape[1:]), tf.float32)
        ds = tf.data.Dataset.range(len(features))
        if shuffle:
            ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
        gather = lambda idx: np.asarray(features[np.sort(idx)], np.float32)   # noqa: E731  (sorted: fast reads)
        ds = ds.batch(batch_size).map(
            lambda idx: (tf.ensure_shape(tf.numpy_function(gather, [idx], tf.float32), spec.shape),
                         encode_labels(tf.gather(labels, tf.sort(idx)), num_classes)))
        return ds.prefetch(tf.data.AUTOTUNE)
    ds = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle:
        ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda f, y: (tf.cast(f, tf.float32), encode_labels(y, num_classes)),
                                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class StageFeatureCache:
    """A ``stage_data`` callable for ``train_two_stage``: per stage, (model to fit, train ds, val ds) on cached
    features, or None when the stage has no frozen part (then the plain path runs).

    The images go through the frozen layers once: with ``finetune_from`` given, stage 1 already caches the
    layer below it (stage 2's input) and derives its own, deeper features from that cache by running only the
    layers in between."""

    def __init__(self, model, train_images, train_labels, val_images, val_labels, preprocess, num_classes: int = 2,
                 batch_size: int = 32, seed: int = 42, finetune_from: str | None = None,
                 cache_dir: str | Path | None = None):
        self.model, self.preprocess, self.cache_dir = model, preprocess, cache_dir
        self.images, self.labels = (train_images, val_images), (train_labels, val_labels)
        self.num_classes, self.batch_size, self.seed = num_classes, batch_size, seed
        self.memo: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.chain = BACKBONES[backbone_of(model)].chain      # branching nets (ResNet, DenseNet...) cannot be cut
        self.lowest = cache_layer(model, False, finetune_from) if finetune_from and self.chain else None

    def _extract(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """Run the frozen layers up to ``layer`` once over the train and validation images."""
        train, val = self.images
        print(f"feature cache: computing {layer} outputs once for {len(train)} + {len(val)} images")

        def run(images):
            if self.cache_dir is None:
                return extract_features(self.model, layer, images, self.preprocess, self.batch_size)
            return disk_features(self.model, layer, images, self.preprocess, self.cache_dir, self.batch_size)
        tr = run(train)
        return tr, (tr if val is train else run(val))

    def features(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(train, val) features at ``layer``: computed once, or derived from the lowest cached layer."""
        if layer not in self.memo:
            if self.lowest and layer != self.lowest:
                if self.lowest not in self.memo:
                    self.memo[self.lowest] = self._extract(self.lowest)
                part = _between(self.model, self.lowest, layer)
                self.memo[layer] = tuple(part.predict(f, batch_size=self.batch_size, verbose=0)
                                         for f in self.memo[self.lowest])
            else:
                self.memo[layer] = self._extract(layer)
        return self.memo[layer]

    def __call__(self, stage):
        layer = cache_layer(self.model, stage.train_backbone, stage.unfreeze_from)
        if layer is None or (stage.unfreeze_from and not self.chain):
            return None
        tr, va = self.features(layer)
        return (model_after(self.model, layer),
                feature_dataset(tr, self.labels[0], self.num_classes, self.batch_size, shuffle=True, seed=self.seed),
                feature_dataset(va, self.labels[1], self.num_classes, self.batch_size))


def _between(model, start: str, end: str):
    """The layers strictly after ``start`` up to and including ``end``, as a model on ``start``'s output."""
    import keras
    names = [l.name for l in model.layers]
    inp = keras.Input(model.get_layer(start).output.shape[1:])
    x = inp
    for layer in model.layers[names.index(start) + 1:names.index(end) + 1]:
        x = layer(x)
    return keras.Model(inp, x)
