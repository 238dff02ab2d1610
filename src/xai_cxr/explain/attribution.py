"""Pixel attributions beyond CAMs. From input gradients: Integrated Gradients (Sundararajan et al. 2017) and
SmoothGrad (Smilkov et al. 2017), batched in TensorFlow, explaining the class logit. Model-agnostic, on
superpixels: LIME (Ribeiro et al. 2016, the ``lime`` package) and SHAP (Lundberg & Lee 2017, the ``shap``
package's Partition explainer), explaining the class probability. All return maps (B, H, W) in [0, 1]
(positive evidence only for LIME/SHAP), so the faithfulness audit and the overlays take them as they are."""
from __future__ import annotations

import contextlib
import io

import numpy as np

from .cam.base import normalize_maps
from .perturbation import BlackBoxExplainer
from .targets import ClassLogit, as_targets, head_logits, output_head, predicted_class


class _InputGradients:
    """Shared part: the class logits (``targets.py``) and a batched gradient of the target score w.r.t. the input."""

    target_layer = "input"

    def __init__(self, model, target_layer: str | None = None, batch_size: int = 16, target=None):
        import keras
        import tensorflow as tf
        self.model, self.batch_size = model, batch_size
        self.target = target or ClassLogit()
        head, self._head_act = output_head(model)
        if head is None:
            self._logits = model
        else:
            body = keras.Model(model.input, head.input)
            self._logits = lambda x: head_logits(head, body(x, training=False))
        self._grad = tf.function(self._grad_fn, reduce_retracing=True)

    def _grad_fn(self, x, targets):
        import tensorflow as tf
        with tf.GradientTape() as tape:
            tape.watch(x)
            picked = self.target(self._logits(x), targets, self._head_act)
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
            return np.asarray(predicted_class(self.model.predict(images, verbose=0)))
        return as_targets(targets, len(images))

    def __call__(self, images, targets=None) -> np.ndarray:
        images = np.asarray(images, np.float32)
        attr = self.attribute(images, self._targets(images, targets))
        return normalize_maps(np.abs(attr).sum(-1)).astype(np.float32)


class IntegratedGradients(_InputGradients):
    """∫₀¹ ∂f(b + α(x − b))/∂x dα · (x − b), trapezoid rule over ``steps``; baseline ``b`` = zeros of the
    model input (black image after preprocessing) unless given. Completeness: Σ attributions ≈ f(x) − f(b)."""

    def __init__(self, model, target_layer=None, batch_size: int = 16, steps: int = 32, baseline=None, target=None):
        super().__init__(model, target_layer, batch_size, target)
        self.steps, self.baseline = steps, baseline

    def attribute(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        alphas = np.linspace(0.0, 1.0, self.steps + 1, dtype=np.float32)
        weights = np.full(self.steps + 1, 1.0 / self.steps, np.float32)
        weights[[0, -1]] /= 2                                           # trapezoid
        out = np.empty_like(images)
        for i, (x, t) in enumerate(zip(images, targets)):
            b = self.baseline_for(x)
            path = b[None] + alphas[:, None, None, None] * (x - b)[None]
            grads, _ = self.gradients(path, np.full(len(path), t, np.int32))
            out[i] = np.tensordot(weights, grads, axes=1) * (x - b)
        return out


    def baseline_for(self, x: np.ndarray) -> np.ndarray:
        return np.zeros_like(x) if self.baseline is None else np.broadcast_to(self.baseline, x.shape)


class BlurIntegratedGradients(IntegratedGradients):
    """Integrated Gradients from a blurred copy of the image (σ = 1/16 of its side) instead of a black one.

    With the black baseline, every pixel that *is* black — a text tag, a black wedge, the film's border — gets
    zero attribution by construction, since attribution = (x − b) · ∫∇f; a blurred baseline keeps such
    structures visible to the method (Sturmfels, Lundberg & Lee, Distill 2020, on the choice of baseline)."""

    def baseline_for(self, x: np.ndarray) -> np.ndarray:
        import cv2
        blurred = cv2.GaussianBlur(np.ascontiguousarray(x), (0, 0), x.shape[0] / 16)
        return blurred.reshape(x.shape)


class SmoothGrad(_InputGradients):
    """Mean input gradient over ``n`` noisy copies (Gaussian, σ = ``noise`` × the image's value range), seeded."""

    def __init__(self, model, target_layer=None, batch_size: int = 16, n: int = 16, noise: float = 0.15,
                 seed: int = 0, target=None):
        super().__init__(model, target_layer, batch_size, target)
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


def superpixels(x: np.ndarray, n_segments: int = 50) -> np.ndarray:
    """SLIC superpixels (scikit-image) of one model input (H, W, C), on its first channel rescaled to [0, 1]."""
    from skimage.segmentation import slic
    g = x[..., 0].astype(np.float64)
    g = (g - g.min()) / (np.ptp(g) or 1.0)
    return slic(g, n_segments=n_segments, compactness=0.1, channel_axis=None, start_label=0)


class _Perturbation(BlackBoxExplainer):
    """Shared part of the superpixel explainers: samples, superpixels and random seed."""

    def __init__(self, model, target_layer: str | None = None, batch_size: int = 32, n_samples: int = 300,
                 n_segments: int = 50, seed: int = 42):
        super().__init__(model, target_layer, batch_size)
        self.n_samples, self.n_segments, self.seed = n_samples, n_segments, seed


class LimeSuperpixels(_Perturbation):
    """LIME: a ridge model on ``n_samples`` random on/off masks of SLIC superpixels (off = the image's mean
    value, not LIME's per-superpixel mean, which leaves a smooth region unchanged); each superpixel is painted
    with its coefficient for the target class."""

    def explain_one(self, x: np.ndarray, target: int) -> np.ndarray:
        from lime import lime_image
        segments = superpixels(x, self.n_segments)
        explainer = lime_image.LimeImageExplainer(random_state=self.seed)
        with contextlib.redirect_stderr(io.StringIO()):          # lime 0.2 always draws a progress bar
            exp = explainer.explain_instance(x.astype(np.float64), self._proba, labels=(target,), top_labels=None,
                                             hide_color=float(x.mean()), num_samples=self.n_samples,
                                             batch_size=self.batch_size, segmentation_fn=lambda _: segments)
        weights = np.zeros(segments.max() + 1)
        for seg, w in exp.local_exp[target]:
            weights[seg] = w
        return weights[segments]


class ShapPartition(_Perturbation):
    """SHAP Partition explainer (Owen values over a hierarchy of image regions) with a blurred-image masker:
    hidden regions are replaced by their blur, ``n_samples`` model evaluations per image."""

    def explain_one(self, x: np.ndarray, target: int) -> np.ndarray:
        import shap
        blur = max(3, x.shape[0] // 4) | 1
        masker = shap.maskers.Image(f"blur({blur},{blur})", x.shape)
        explainer = shap.Explainer(self._proba, masker, seed=self.seed)
        sv = explainer(x[None].astype(np.float32), max_evals=self.n_samples, batch_size=self.batch_size,
                       outputs=[target], silent=True)
        return np.asarray(sv.values)[0, ..., 0].sum(-1)
