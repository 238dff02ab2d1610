"""A random gamma (exposure-curve) layer: Keras has brightness and contrast jitter but no gamma."""
from __future__ import annotations

import keras
from keras import ops


class RandomGamma(keras.layers.Layer):
    """x ↦ 255·(x/255)^γ per image, log γ uniform in [-factor, factor]; identity at inference.
    Input float in [0, 255], any shape (B, ...)."""

    def __init__(self, factor: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=True):
        if not training or not self.factor:
            return x
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        gamma = ops.exp(keras.random.uniform(shape, -self.factor, self.factor, seed=self.seed_generator))
        return 255.0 * ops.power(ops.clip(x / 255.0, 0.0, 1.0), gamma)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}
