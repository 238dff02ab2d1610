"""Sanity checks for saliency (Adebayo et al., 2018): a map that survives randomizing the model's weights
(or its training labels) does not explain the model. Similarity is the Spearman rank correlation and SSIM
between the original and the randomized maps, per image."""
from __future__ import annotations

import numpy as np

PASS_RHO = 0.3      # randomized maps must correlate below this with the originals


def spearman_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.stats import spearmanr
    out = []
    for x, y in zip(a, b):
        x, y = x.ravel(), y.ravel()
        out.append(0.0 if x.std() == 0 or y.std() == 0 else spearmanr(x, y).statistic)
    return np.array(out, float)


def ssim_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import tensorflow as tf
    size = min(11, a.shape[1], a.shape[2])
    return tf.image.ssim(a[..., None].astype(np.float32), b[..., None].astype(np.float32), max_val=1.0,
                         filter_size=size).numpy()


def weighted_layers(model) -> list[str]:
    """Conv and Dense layers, input to output (the ones the cascade re-initializes)."""
    return [l.name for l in model.layers
            if ("Conv" in l.__class__.__name__ or "Dense" in l.__class__.__name__) and l.get_weights()]


def randomized_copy(model, layer_names, seed: int = 0):
    """A copy of ``model`` whose ``layer_names`` have fresh Gaussian kernels (same std as the trained ones)
    and zero biases. The original model is untouched."""
    import keras
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    for name in layer_names:
        layer = copy.get_layer(name)
        ws = layer.get_weights()
        new = [rng.normal(0, ws[0].std() or 0.05, ws[0].shape).astype(ws[0].dtype)]
        new += [np.zeros_like(w) for w in ws[1:]]
        layer.set_weights(new)
    return copy


def cascading_randomization(model, images, targets, method, target_layer: str, seed: int = 0, stop_at=None):
    """Re-initialize weighted layers from the output down, one more at a time; after each step compare the
    maps with the original ones. ``stop_at`` limits the steps to those numbers of randomized layers (None =
    every step; -1 = all layers). Returns [{"randomized_down_to", "spearman", "ssim"}, ...], top first."""
    import warnings
    original = method(model, target_layer)(images, targets)
    names = weighted_layers(model)
    ks = range(1, len(names) + 1) if stop_at is None else sorted({len(names) if k == -1 else k for k in stop_at})
    rows = []
    for k in ks:
        randomized = names[-k:]
        with warnings.catch_warnings():            # randomized nets often give flat maps; zeros are expected
            warnings.simplefilter("ignore", RuntimeWarning)
            maps = method(randomized_copy(model, randomized, seed), target_layer)(images, targets)
        rows.append({"randomized_down_to": randomized[0], "n_layers_randomized": k,
                     "spearman": float(np.mean(spearman_per_image(original, maps))),
                     "ssim": float(np.mean(ssim_per_image(original, maps)))})
    return rows


def permuted_labels(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The training labels shuffled (same class counts): a model trained on them can only memorize."""
    return np.random.default_rng(seed).permutation(np.asarray(labels))


def label_randomization(model, random_label_model, images, targets, method, target_layer: str) -> dict:
    """Compare maps of ``model`` with those of the same architecture trained on permuted labels
    (Adebayo et al.'s data randomization test): {"spearman", "ssim"}, means over images."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a = method(model, target_layer)(images, targets)
        b = method(random_label_model, target_layer)(images, targets)
    return {"spearman": float(np.mean(spearman_per_image(a, b))), "ssim": float(np.mean(ssim_per_image(a, b)))}


def verdict(rho: float) -> str:
    return "pass" if rho < PASS_RHO else "FAIL (maps barely change when the model is randomized)"
