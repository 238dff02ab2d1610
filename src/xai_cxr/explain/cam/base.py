"""The CAM base class: target-layer lookup, the activation+score forward, one tape per batch, ReLU,
epsilon-guarded normalisation and upsampling. A method overrides ``weights(acts, grads)`` only.

What is explained is a ``Target`` of the class logits (``explain/targets.py``, shared with the input
attributions): by default the class's logit before the softmax/sigmoid, computed from the head's input and
kernel (the caller's model is never edited or cloned). Layers inside nested sub-models are reached by running the outer
model
layer by layer, which avoids Keras 3's "Graph disconnected" and "layer has never been called" errors.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..targets import ClassLogit, as_targets, head_logits, output_head, predicted_class

EPS = 1e-7


def _is_model(layer) -> bool:
    return hasattr(layer, "layers") and hasattr(layer, "get_layer")


def _contains(model, name: str) -> bool:
    return any(l.name == name or (_is_model(l) and _contains(l, name)) for l in model.layers)


def _spatial_layers(model, prefix=""):
    """Names of layers with a 4-D (B, H, W, C) output, nested ones as 'outer/inner'."""
    out = []
    for l in model.layers:
        if _is_model(l):
            out += _spatial_layers(l, prefix + l.name + "/")
        else:
            try:
                shape = l.output.shape
            except (AttributeError, ValueError):
                continue
            if len(shape) == 4 and l.__class__.__name__ != "InputLayer":
                out.append(prefix + l.name)
    return out


def conv_layer_names(model) -> list[str]:
    """Names of Conv2D layers (also nested), in graph order."""
    out = []
    for l in model.layers:
        if _is_model(l):
            out += conv_layer_names(l)
        elif "Conv" in l.__class__.__name__:
            out.append(l.name)
    return out


def _chain_forward(model, name, x, stop_before=None):
    """Run a layer chain, returning (activations of ``name``, output). Requires a linear chain."""
    acts = None
    for layer in model.layers:
        if layer.__class__.__name__ == "InputLayer":
            continue
        if layer is stop_before:
            break
        if layer.name == name:
            x = layer(x, training=False)
            acts = x
        elif _is_model(layer) and _contains(layer, name):
            acts, x = _forward_fn(layer, name)(x)
        else:
            x = layer(x, training=False)
    return acts, x


def _forward_fn(model, name, stop_before=None):
    """A callable x → (activations of layer ``name``, output before ``stop_before``)."""
    import keras
    direct = [l for l in model.layers if l.name == name]
    inputs = getattr(model, "inputs", None)
    is_sequential = isinstance(model, keras.Sequential)
    if direct and inputs and not is_sequential:
        out = stop_before.input if stop_before is not None else model.outputs[0]
        sub = keras.Model(inputs, [direct[0].output, out])
        return lambda x: sub(x, training=False)
    # nested target or Sequential: replay the top-level layers as a chain (branching graphs unsupported)
    return lambda x: _chain_forward(model, name, x, stop_before)


class BaseCAM:
    """Class activation maps for a Keras classifier.

    Args:
        model: a built Keras model taking (B, H, W, C) images. Never modified.
        target_layer: layer name (searched in nested models too); None = the last Conv2D layer.
        batch_size: images per tape.
        jit_compile: compile the forward + gradient step with XLA (see benchmarks/README.md for when it pays).
        target: the score explained (``targets.ClassLogit()`` by default; see ``explain/targets.py``).

    Calling the object on preprocessed images returns maps (B, H, W) in [0, 1].
    """

    def __init__(self, model, target_layer: str | None = None, batch_size: int = 16, jit_compile: bool = False,
                 target=None):
        import tensorflow as tf
        self.model = model
        if not model.built or not getattr(model, "inputs", None) and not model.layers:
            raise ValueError("model is not built; call it on a batch or give it an Input first")
        convs = conv_layer_names(model)
        if target_layer is None:
            if not convs:
                raise ValueError("model has no Conv2D layer; pass target_layer")
            target_layer = convs[-1]
        if not _contains(model, target_layer):
            raise ValueError(f"no layer named {target_layer!r} in {model.name}; conv layers: {convs}; "
                             f"layers with spatial output: {_spatial_layers(model)}")
        self.target_layer = target_layer
        self.batch_size = batch_size
        self.target = target or ClassLogit()
        self._head, self._head_act = output_head(model)
        self._forward = _forward_fn(model, target_layer, stop_before=self._head)
        self._step = tf.function(self._acts_and_grads, reduce_retracing=True, jit_compile=jit_compile)

    def _scores(self, x):
        """(activations of the target layer, per-class logits) — see ``explain/targets.py``."""
        acts, out = self._forward(x)
        return acts, (out if self._head is None else head_logits(self._head, out))

    def _acts_and_grads(self, x, targets):
        import tensorflow as tf
        with tf.GradientTape() as tape:
            acts, scores = self._scores(x)
            if len(acts.shape) != 4:
                raise ValueError(f"layer {self.target_layer!r} has output shape {acts.shape}; CAM needs a "
                                 "spatial (B, H, W, C) layer")
            if targets is None:
                targets = predicted_class(scores)
            picked = self.target(scores, targets, self._head_act)
        grads = tape.gradient(picked, acts)
        return tf.cast(acts, tf.float32), tf.cast(grads, tf.float32), scores

    def weights(self, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """Channel weights (B, C) or pixel weights (B, h, w, C) of a method."""
        raise NotImplementedError

    def cam_raw(self, acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """ReLU(Σ_c w_c · A_c): (B, h, w), before normalisation."""
        w = self.weights(acts, grads)
        if w.ndim == 2:
            w = w[:, None, None, :]
        return np.maximum((w * acts).sum(-1), 0)

    def compute(self, x, targets):
        """Raw maps (B, h, w) for one batch ``x`` (a tf tensor) and ``targets`` (tensor of ints or None)."""
        acts, grads, _ = self._step(x, targets)
        return self.cam_raw(acts.numpy().astype(np.float64), grads.numpy().astype(np.float64))

    def __call__(self, images, targets=None, upsample: bool = True) -> np.ndarray:
        """Maps for ``images`` (B, H, W, C) and class ``targets`` (None = predicted; int; or (B,) ints)."""
        import tensorflow as tf
        images = np.asarray(images, np.float32)
        if images.ndim != 4:
            raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")
        n = len(images)
        targets = as_targets(targets, n)
        maps = []
        for start in range(0, n, self.batch_size):
            x = tf.constant(images[start:start + self.batch_size])
            t = None if targets is None else tf.constant(targets[start:start + self.batch_size])
            maps.append(self.compute(x, t))
        cams = normalize_maps(np.concatenate(maps) if maps else np.zeros((0, 1, 1)))
        if upsample and len(cams):
            cams = upsample_maps(cams, images.shape[1:3])
        return cams.astype(np.float32)


def normalize_maps(cams: np.ndarray, warn: bool = True) -> np.ndarray:
    """Per map: (m - min) / (max - min + eps). A flat map becomes zeros, never NaN (with a warning unless
    ``warn`` is False: Score-CAM's per-channel masks are often flat by design)."""
    cams = np.nan_to_num(np.asarray(cams, np.float64))
    lo = cams.min(axis=(1, 2), keepdims=True)
    span = cams.max(axis=(1, 2), keepdims=True) - lo
    flat = span[:, 0, 0] <= EPS
    if warn and flat.any():
        warnings.warn(f"{int(flat.sum())} CAM map(s) are constant (no positive evidence at the target layer); "
                      "returned as zeros", RuntimeWarning, stacklevel=3)
    return np.where(span > EPS, (cams - lo) / (span + EPS), 0.0)


def upsample_maps(cams: np.ndarray, size, clip: bool = True) -> np.ndarray:
    """Bilinear upsampling of (B, h, w) maps to (B, *size), clipped to [0, 1] unless ``clip`` is False (raw
    activations, normalised after)."""
    import tensorflow as tf
    up = tf.image.resize(np.asarray(cams)[..., None].astype(np.float32), size, method="bilinear")[..., 0].numpy()
    return np.clip(up, 0.0, 1.0) if clip else up
