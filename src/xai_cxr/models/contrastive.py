"""A self-supervised input check: an encoder trained on the training films alone, and how far a film is from them.

The classifier's features are trained to keep what separates its classes and to drop the rest — the patient's age
and the hospital's acquisition among it — and the input-level autoencoder (``models/input_check``) learns to rebuild
pixels, not to tell films apart. A contrastive encoder (SimCLR, Chen et al. 2020) learns what makes one training film
unlike another: two random views of a film (a crop rescaled, a small change of brightness and contrast, a little
noise) are pulled together and every other film in the batch pushed away (the NT-Xent loss). Its representation
separates in-distribution films from others by its distance to the training films (SSD, Sehwag et al. ICLR 2021:
Mahalanobis; Sun et al. ICML 2022: k-NN). The branch ``input_contrastive`` of the detector (``models/ood.py``) is
that representation, scored by the detector's distance (Mahalanobis: on the synthetic shifts it caught more than
k-NN did, docs/results.md).

The encoder never sees a label or the classifier: 64 px grayscale films (``input_check.to_input``), five stride-2
or stride-1 convolutions with batch normalisation, a 256-number representation and a 128-number projection head
used only in training. Seeded: the same films and seed give the same weights on one machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import CONTRASTIVE as FILE
from .files import load_weights, save_weights
from .input_check import INPUT_PREFIX, SIZE, to_input

BRANCH = INPUT_PREFIX + "contrastive"
EPOCHS = 30
BATCH = 256
TEMPERATURE = 0.2           # SimCLR's NT-Xent temperature (Chen et al. 2020, small batches: 0.1–0.5)
LEARNING_RATE = 1e-3
CROP_AREA = (0.5, 1.0)      # share of the film a view keeps, before it is rescaled to 64 px
JITTER = 0.15               # brightness ± and contrast × (1 ±) of a view
NOISE = 0.02                # sd of the Gaussian noise added to a view (pixel values in [0, 1])


def build_encoder(size: int = SIZE):
    """(encoder, projector): 64² grayscale → 256 numbers → 128 (the projection head, used only in training)."""
    import keras
    from keras import layers
    x_in = keras.Input((size, size, 1), name="film")
    x = x_in
    for i, (filters, stride) in enumerate(((32, 2), (64, 2), (64, 1), (128, 2), (256, 2))):
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
    encoder = keras.Model(x_in, layers.GlobalAveragePooling2D(name="representation")(x), name="contrastive_encoder")
    h = keras.Input((256,), name="representation")
    z = layers.Dense(128, name="projection")(layers.Dense(256, activation="relu", name="projection_hidden")(h))
    return encoder, keras.Model(h, z, name="contrastive_projector")


def nt_xent(z1, z2, temperature: float = TEMPERATURE):
    """SimCLR's loss for N pairs of views (N, D) each: for every one of the 2N views, the cross-entropy of finding
    its partner among the other 2N − 1 by cosine similarity / ``temperature``."""
    from keras import ops
    z = ops.concatenate([z1, z2], 0)
    z = z / ops.maximum(ops.norm(z, axis=1, keepdims=True), 1e-12)
    n2 = ops.shape(z)[0]
    n = n2 // 2
    sim = ops.matmul(z, ops.transpose(z)) / temperature
    sim = ops.where(ops.eye(n2) > 0, -1e9, sim)                      # a view is not its own partner
    partner = ops.concatenate([ops.arange(n) + n, ops.arange(n)], 0)
    return ops.mean(ops.sparse_categorical_crossentropy(partner, sim, from_logits=True))


def _simclr(encoder, projector, seed: int, temperature: float):
    """The training wrapper: two augmented views per film, NT-Xent, one optimizer step (TensorFlow backend)."""
    import keras
    import tensorflow as tf

    class SimCLR(keras.Model):
        def __init__(self):
            super().__init__(name="simclr")
            self.encoder, self.projector = encoder, projector
            self.seeds = keras.random.SeedGenerator(seed)
            self.loss_tracker = keras.metrics.Mean(name="loss")

        @property
        def metrics(self):
            return [self.loss_tracker]

        def call(self, x, training=False):
            return self.encoder(x, training=training)

        def view(self, x):
            """A random resized crop, brightness and contrast jitter and noise of each film of a batch."""
            n = tf.shape(x)[0]
            u = lambda lo, hi: keras.random.uniform((n,), lo, hi, seed=self.seeds)  # noqa: E731
            area = u(*CROP_AREA)
            ratio = tf.exp(u(np.log(3 / 4), np.log(4 / 3)))
            h = tf.minimum(tf.sqrt(area / ratio), 1.0)
            w = tf.minimum(tf.sqrt(area * ratio), 1.0)
            y0, x0 = u(0.0, 1.0) * (1.0 - h), u(0.0, 1.0) * (1.0 - w)
            boxes = tf.stack([y0, x0, y0 + h, x0 + w], 1)
            v = tf.image.crop_and_resize(x, boxes, tf.range(n), (SIZE, SIZE))
            mean = tf.reduce_mean(v, [1, 2, 3], keepdims=True)
            contrast = tf.reshape(u(1 - JITTER, 1 + JITTER), (-1, 1, 1, 1))
            bright = tf.reshape(u(-JITTER, JITTER), (-1, 1, 1, 1))
            v = (v - mean) * contrast + mean + bright
            v = v + NOISE * keras.random.normal(tf.shape(v), seed=self.seeds)
            return tf.clip_by_value(v, 0.0, 1.0)

        def train_step(self, x):
            with tf.GradientTape() as tape:
                z1 = self.projector(self.encoder(self.view(x), training=True), training=True)
                z2 = self.projector(self.encoder(self.view(x), training=True), training=True)
                loss = nt_xent(z1, z2, temperature)
            variables = self.encoder.trainable_variables + self.projector.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            self.loss_tracker.update_state(loss)
            return {"loss": self.loss_tracker.result()}

    return SimCLR()


@dataclass(frozen=True)
class ContrastiveCheck:
    encoder: object                        # 64² film → 256-number representation
    plain_branches: tuple[str, ...] = ()   # none: the representation is scored by the detector's distance
    history: tuple[float, ...] = ()        # the training loss per epoch (empty when loaded)

    def branch_values(self, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """``input_contrastive``: (N, 256) representations of decoded films."""
        x = to_input(images)
        parts = [np.asarray(self.encoder(x[s:s + batch_size], training=False), np.float32)
                 for s in range(0, len(x), batch_size)]
        return {BRANCH: np.concatenate(parts) if parts else np.zeros((0, int(self.encoder.outputs[0].shape[-1])))}

    def save(self, folder: str | Path) -> Path:
        return save_weights(self.encoder, folder, FILE)

    @classmethod
    def load(cls, folder: str | Path) -> "ContrastiveCheck | None":
        built = load_weights(build_encoder, folder, FILE, model_of=lambda b: b[0])
        return None if built is None else cls(built[0])


def fit_contrastive_check(images: np.ndarray, seed: int = 42, epochs: int = EPOCHS, batch_size: int = BATCH,
                          temperature: float = TEMPERATURE, progress: bool = False) -> ContrastiveCheck:
    """Train the encoder on the training films (SimCLR, Adam, a fixed number of epochs, seeded); ``progress``: one
    line per epoch with the time left."""
    import keras
    import tensorflow as tf

    from ..runtime import full_precision
    from .callbacks import EpochProgress
    x = to_input(images)
    keras.utils.set_random_seed(seed)
    with full_precision():
        encoder, projector = build_encoder()
        model = _simclr(encoder, projector, seed, temperature)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    # a batch of one film has no other films to push away: the last partial batch is dropped when there is a full one
    data = tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=seed, reshuffle_each_iteration=True) \
        .batch(min(batch_size, len(x)), drop_remainder=len(x) >= 2 * batch_size)
    history = model.fit(data, epochs=epochs, verbose=0, shuffle=False,
                        callbacks=[EpochProgress("input check (contrastive encoder)", epochs)] if progress else [])
    return ContrastiveCheck(encoder, history=tuple(float(v) for v in history.history["loss"]))
