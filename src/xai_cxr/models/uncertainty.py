"""Monte-Carlo dropout (Gal & Ghahramani 2016): the spread of N stochastic forward passes, with dropout on
and BatchNorm still in inference mode, as a per-image uncertainty next to the calibrated confidence."""
from __future__ import annotations

import numpy as np


def mc_dropout_model(model, seed: int = 42):
    """A copy of ``model`` (same weights) whose Dropout layers drop at inference too; every other layer,
    BatchNorm included, behaves as in ``model.predict``. None when the model has no Dropout layer."""
    import keras

    class MCDropout(keras.layers.Dropout):
        def call(self, inputs, training=None):
            return super().call(inputs, training=True)

    count = [0]

    def clone(layer):
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.Dropout):
            count[0] += 1
            return MCDropout.from_config({**cfg, "seed": seed + count[0]})
        return layer.__class__.from_config(cfg)

    mc = keras.models.clone_model(model, clone_function=clone)
    if not count[0]:
        return None
    mc.set_weights(model.get_weights())
    return mc


def mc_predict(mc_model, x: np.ndarray, passes: int = 20, batch_size: int = 32, activation: str = "softmax") -> dict:
    """Mean and standard deviation of the class probabilities over ``passes`` dropout samples, and the
    predictive entropy of the mean (nats; summed over labels when ``activation`` is "sigmoid"). Each image is repeated
    ``passes`` times inside a batch (every row draws its own dropout mask), so one image costs one call."""
    per_call = max(1, batch_size // passes)
    chunks = []
    for s in range(0, len(x), per_call):
        xs = np.repeat(x[s:s + per_call], passes, axis=0)
        p = np.concatenate([np.asarray(mc_model(xs[r:r + batch_size], training=False))
                            for r in range(0, len(xs), batch_size)])
        chunks.append(p.reshape(-1, passes, p.shape[-1]))
    samples = np.concatenate(chunks)                    # (N, passes, K)
    mean = samples.mean(1)
    return {"mean": mean.astype(np.float32), "std": samples.std(1).astype(np.float32),
            "entropy": predictive_entropy(mean, activation), "passes": passes}


def predictive_entropy(proba: np.ndarray, activation: str = "softmax") -> np.ndarray:
    """Entropy (nats) of each row of class probabilities; for sigmoid outputs the sum of the per-label
    Bernoulli entropies."""
    p = np.clip(np.asarray(proba, np.float64), 1e-7, 1 - 1e-7)
    if activation == "sigmoid":
        return (-(p * np.log(p) + (1 - p) * np.log(1 - p)).sum(1)).astype(np.float32)
    return (-(p * np.log(p)).sum(1)).astype(np.float32)
