"""Knowing when not to answer: an out-of-distribution score from the trained model alone.

The score of a film is the squared Mahalanobis distance of its penultimate features (the head's global
average pool) to the nearest training class mean, under one shared covariance (Lee et al., NeurIPS 2018),
estimated with Ledoit-Wolf shrinkage so that a few hundred films suffice for 256 features. The threshold
is a high quantile (default the 99th percentile) of the scores of in-distribution films the model did not
train on (the holdout), or of the training films when there is no holdout. A film above it is "outside
what this model has seen": its prediction should not be trusted, however confident the softmax is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

OOD_FILE = "ood.npz"
WARNING = "outside what this model has seen — do not trust this prediction"


@dataclass(frozen=True)
class OODDetector:
    means: np.ndarray          # (K, D) class means of the training features
    precision: np.ndarray      # (D, D) inverse of the shared (shrunk) covariance
    threshold: float           # scores above it are flagged
    quantile: float            # which quantile of the calibration scores the threshold is
    layer: str                 # the feature layer
    calibrated_on: str         # "holdout" | "train"

    def score(self, features: np.ndarray) -> np.ndarray:
        """(N,) squared Mahalanobis distance of each row of ``features`` to its nearest class mean."""
        f = np.asarray(features, np.float64)
        d = f[:, None, :] - self.means[None]                               # (N, K, D)
        return np.einsum("nkd,de,nke->nk", d, self.precision, d).min(1)

    def flag(self, features: np.ndarray) -> np.ndarray:
        return self.score(features) > self.threshold

    def save(self, folder: str | Path) -> Path:
        import os
        path = Path(folder) / OOD_FILE
        tmp = path.with_name("ood.tmp.npz")
        np.savez(tmp, means=self.means, precision=self.precision, threshold=self.threshold,
                 quantile=self.quantile, layer=self.layer, calibrated_on=self.calibrated_on)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "OODDetector | None":
        path = Path(folder) / OOD_FILE
        if not path.is_file():
            return None
        z = np.load(path, allow_pickle=False)
        return cls(z["means"], z["precision"], float(z["threshold"]), float(z["quantile"]), str(z["layer"]),
                   str(z["calibrated_on"]))


def fit_ood(train_features: np.ndarray, train_labels: np.ndarray, calibration_features: np.ndarray,
            quantile: float = 0.99, layer: str = "", calibrated_on: str = "holdout") -> OODDetector:
    """Class means and a shared Ledoit-Wolf covariance on the training features; the threshold is the
    ``quantile`` of the calibration films' scores. Multi-hot labels (multi-label tasks) use one mean."""
    from sklearn.covariance import LedoitWolf
    f = np.asarray(train_features, np.float64)
    labels = np.asarray(train_labels)
    classes = np.zeros(len(f), int) if labels.ndim == 2 else labels.astype(int)
    means = np.stack([f[classes == k].mean(0) for k in np.unique(classes)])
    centred = f - means[np.searchsorted(np.unique(classes), classes)]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    partial = OODDetector(means, precision, np.inf, quantile, layer, calibrated_on)
    threshold = float(np.quantile(partial.score(calibration_features), quantile))
    return OODDetector(means, precision, threshold, quantile, layer, calibrated_on)


def feature_layer(model) -> str:
    """The penultimate features: the head's global average pool when the model has one, else the input
    layer of the first head Dense."""
    from .registry import HEAD_PREFIX
    names = [l.name for l in model.layers]
    if HEAD_PREFIX + "gap" in names:
        return HEAD_PREFIX + "gap"
    first_dense = next(l for l in model.layers if l.name.startswith(HEAD_PREFIX) and "Dense" in type(l).__name__)
    return names[names.index(first_dense.name) - 1]


def feature_model(model, layer: str | None = None):
    """x → features of ``layer`` (default ``feature_layer``), sharing ``model``'s weights."""
    import keras
    return keras.Model(model.inputs, model.get_layer(layer or feature_layer(model)).output)


def extract(feature_net, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Features of model inputs ``x`` (direct calls per chunk, inference mode)."""
    return np.concatenate([np.asarray(feature_net(x[s:s + batch_size], training=False))
                           for s in range(0, len(x), batch_size)]) if len(x) else np.zeros((0, 0))


def image_features(model, images: np.ndarray, preprocess, layer: str | None = None, chunk: int = 256) -> np.ndarray:
    """Penultimate features of decoded images (uint8, (N, S, S) or (N, S, S, 3)), in chunks: bounded memory."""
    from ..data import to_model_input
    net = feature_model(model, layer)
    parts = [extract(net, to_model_input(images[s:s + chunk], preprocess).numpy())
             for s in range(0, len(images), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def fit_for_model(model, preprocess, train_images, train_labels, calibration_images=None,
                  quantile: float = 0.99) -> OODDetector:
    """The detector of a trained model: training films' features, threshold on ``calibration_images``
    (in-distribution films it did not train on), or on the training films when None."""
    layer = feature_layer(model)
    train = image_features(model, train_images, preprocess, layer)
    held_out = calibration_images is not None
    calib = image_features(model, calibration_images, preprocess, layer) if held_out else train
    return fit_ood(train, train_labels, calib, quantile, layer, "holdout" if held_out else "train")
