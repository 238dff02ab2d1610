"""Pixel attributions from input gradients: Integrated Gradients (Sundararajan et al. 2017) and SmoothGrad
(Smilkov et al. 2017), batched in TensorFlow. Like the CAMs they explain the class logit (pre-softmax) and
return maps (B, H, W) in [0, 1], so the faithfulness audit and the overlays take them as they are."""
from __future__ import annotations

import numpy as np

from .cam.base import _last_dense_logits, normalize_maps


class _InputGradients:
    """Shared part: the logit function and a batched gradient of the target logit w.r.t. the input."""

    target_layer = "input"

    def __init__(self, model, target_layer: str | None = None, batch_size: int = 16):
        import keras
        import tensorflow as tf
        self.model, self.batch_size = model, batch_size
        head, _ = _last_dense_logits(model)
        if head is None:
            self._logits = model
        else:
            body = keras.Model(model.inputs, head.input)
            self._logits = lambda x: tf.matmul(body(x, training=False), head.kernel) + head.bias
        self._grad = tf.function(self._grad_fn, reduce_retracing=True)

    def _grad_fn(self, x, targets):
        import tensorflow as tf
        with tf.GradientTape() as tape:
            tape.watch(x)
            picked = tf.gather(self._logits(x), targets, axis=1, batch_dims=1)
        return tape.gradient(picked, x), picked

    def gradients(self, x: np.ndarray, targets: np.ndarray):
        """(∂ logit_target / ∂ x, logit_target) for a batch, in chunks of ``batch_size``."""
        import tensorflow as tf
        grads, logits = [], []
        for s in range(0, len(x), self.batch_size):
            g, l = self._grad(tf.constant(x[s:s + self.batch_size], tf.float32),
                              tf.constant(targets[s:s + self.batch_size], tf.int32))
            grads.append(g.numpy())
            logits.append(l.numpy())
        return np.concatenate(grads), np.concatenate(logits)

    def _targets(self, images, targets):
        if targets is None:
            return self.model.predict(images, verbose=0).argmax(1).astype(np.int32)
        return np.broadcast_to(np.asarray(targets, np.int32), (len(images),)).copy()

    def __call__(self, images, targets=None) -> np.ndarray:
        images = np.asarray(images, np.float32)
        attr = self.attribute(images, self._targets(images, targets))
        return normalize_maps(np.abs(attr).sum(-1)).astype(np.float32)


class IntegratedGradients(_InputGradients):
    """∫₀¹ ∂f(b + α(x − b))/∂x dα · (x − b), trapezoid rule over ``steps``; baseline ``b`` = zeros of the
    model input (black image after preprocessing) unless given. Completeness: Σ attributions ≈ f(x) − f(b)."""

    def __init__(self, model, target_layer=None, batch_size: int = 16, steps: int = 32, baseline=None):
        super().__init__(model, target_layer, batch_size)
        self.steps, self.baseline = steps, baseline

    def attribute(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        alphas = np.linspace(0.0, 1.0, self.steps + 1, dtype=np.float32)
        weights = np.full(self.steps + 1, 1.0 / self.steps, np.float32)
        weights[[0, -1]] /= 2                                           # trapezoid
        out = np.empty_like(images)
        for i, (x, t) in enumerate(zip(images, targets)):
            b = np.zeros_like(x) if self.baseline is None else np.broadcast_to(self.baseline, x.shape)
            path = b[None] + alphas[:, None, None, None] * (x - b)[None]
            grads, _ = self.gradients(path, np.full(len(path), t, np.int32))
            out[i] = np.tensordot(weights, grads, axes=1) * (x - b)
        return out


class SmoothGrad(_InputGradients):
    """Mean input gradient over ``n`` noisy copies (Gaussian, σ = ``noise`` × the image's value range), seeded."""

    def __init__(self, model, target_layer=None, batch_size: int = 16, n: int = 16, noise: float = 0.15,
                 seed: int = 0):
        super().__init__(model, target_layer, batch_size)
        self.n, self.noise, self.seed = n, noise, seed

    def attribute(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        out = np.empty_like(images)
        for i, (x, t) in enumerate(zip(images, targets)):
            sigma = self.noise * float(x.max() - x.min())
            noisy = x[None] + rng.normal(0, 1, (self.n, *x.shape)).astype(np.float32) * sigma
            grads, _ = self.gradients(noisy, np.full(self.n, t, np.int32))
            out[i] = grads.mean(0)
        return out


ATTRIBUTION_METHODS = {"integrated_gradients": IntegratedGradients, "smoothgrad": SmoothGrad}
