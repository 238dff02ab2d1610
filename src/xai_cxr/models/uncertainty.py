"""Monte-Carlo dropout (Gal & Ghahramani 2016): the spread of N stochastic forward passes, with dropout on
and BatchNorm still in inference mode, as a per-image uncertainty next to the calibrated confidence.

Everything before the first Dropout layer is deterministic, so where the layers from it on form a chain (the
classifier's head: Dropout → Dense → Dropout → output) the network is split there: the *trunk* runs once per
image and only the small head runs once per pass — the same samples at a fraction of the cost (a cxr-res film
costs one trunk pass instead of twenty). A graph that branches after its first Dropout is sampled whole."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MCDropoutModel:
    """``trunk`` (deterministic, x → the first Dropout's input; None = sample the whole network) and ``head``
    (that input → output, its Dropout layers dropping at inference too)."""
    trunk: object
    head: object


def _mc_dropout_class():
    import keras

    class MCDropout(keras.layers.Dropout):
        def call(self, inputs, training=None):
            return super().call(inputs, training=True)
    return MCDropout


def _chain_after(model, first: int) -> bool:
    """Whether every layer from index ``first`` on takes the previous layer's output as its only input."""
    layers = model.layers
    for prev, layer in zip(layers[first - 1:], layers[first:]):
        nodes = getattr(layer, "_inbound_nodes", [])
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1 or nodes[0].input_tensors[0] is not prev.output:
            return False
    return layers[-1].output is model.outputs[0] and len(model.outputs) == 1


def mc_dropout_model(model, seed: int = 42) -> MCDropoutModel | None:
    """The MC-dropout form of ``model`` (same weights): Dropout layers drop at inference too; every other layer,
    BatchNorm included, behaves as in ``model.predict``. None when the model has no Dropout layer."""
    import keras
    MCDropout = _mc_dropout_class()
    drops = [i for i, l in enumerate(model.layers) if isinstance(l, keras.layers.Dropout)]
    if not drops:
        return None
    first = drops[0]
    count = [0]

    def clone(layer):
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.Dropout):
            count[0] += 1
            return MCDropout.from_config({**cfg, "seed": seed + count[0]})
        return layer.__class__.from_config(cfg)

    if first > 0 and _chain_after(model, first):
        feature = model.layers[first].input
        trunk = keras.Model(model.input, feature, name="mc_trunk")
        x_in = keras.Input(tuple(feature.shape[1:]), name="trunk_features")
        y = x_in
        for layer in model.layers[first:]:
            twin = clone(layer)
            y = twin(y)
            twin.set_weights(layer.get_weights())
        return MCDropoutModel(trunk, keras.Model(x_in, y, name="mc_head"))
    whole = keras.models.clone_model(model, clone_function=clone)
    whole.set_weights(model.get_weights())
    return MCDropoutModel(None, whole)


def mc_predict(mc_model: MCDropoutModel, x: np.ndarray, passes: int = 20, batch_size: int = 32,
               activation: str = "softmax") -> dict:
    """Mean and standard deviation of the class probabilities over ``passes`` dropout samples, and the
    predictive entropy of the mean (nats; summed over labels when ``activation`` is "sigmoid"). The trunk runs
    once per image; each image's trunk output is repeated ``passes`` times inside a head batch (every row draws its
    own dropout mask)."""
    split, head = (mc_model.trunk is not None), mc_model.head
    chunks = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size]
        inputs = np.asarray(mc_model.trunk(xb, training=False)) if split else xb
        rows = np.repeat(inputs, passes, axis=0)
        step = len(rows) if split else batch_size           # the head is small: one call per batch of images
        p = np.concatenate([np.asarray(head(rows[r:r + step], training=False)) for r in range(0, len(rows), step)])
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
