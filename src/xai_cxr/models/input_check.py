"""An input-level check that does not depend on the classifier: what does a training film look like?

A small convolutional autoencoder learns to rebuild the training films at 64 px (grayscale, as the model sees
them: resized and CLAHE-equalised by the same path). Two branches for the out-of-distribution detector
(``models/ood.py``): ``input_error``, the mean squared reconstruction error of a film (a film unlike the training
set is rebuilt badly), and ``input_latent``, its 256-number code, scored there by Mahalanobis distance to the
training films' codes (a film rebuilt well but coded unlike any training film). Neither sees the labels' logic,
so a shift the classifier was trained to ignore — age, hospital, acquisition — can still show.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import INPUT_CHECK as FILE
from .files import load_weights, save_weights

SIZE = 64
INPUT_PREFIX = "input_"
ERROR_BRANCH, LATENT_BRANCH = INPUT_PREFIX + "error", INPUT_PREFIX + "latent"   # the branches it gives
EPOCHS = 20


def to_input(images: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(N, S, S[, 3]) uint8 films → (N, size, size, 1) float32 in [0, 1] (area-averaged, grayscale)."""
    import cv2
    imgs = np.asarray(images)
    if imgs.ndim == 4:
        imgs = imgs.mean(-1).astype(np.uint8) if imgs.shape[-1] == 3 else imgs[..., 0]
    out = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in imgs]) if len(imgs) \
        else np.zeros((0, size, size), np.uint8)
    return (out.astype(np.float32) / 255.0)[..., None]


def build_autoencoder(size: int = SIZE):
    """(scorer, autoencoder): 64² → 8×8×4 code (256 numbers) → 64², three stride-2 convolutions each way; the
    scorer shares its layers and gives the code and the rebuilt film from one forward pass."""
    import keras
    from keras import layers
    x_in = keras.Input((size, size, 1), name="film")
    x = x_in
    for i, filters in enumerate((16, 32, 64)):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name=f"enc{i}")(x)
    code = layers.Conv2D(4, 1, name="code")(x)
    y = code
    for i, filters in enumerate((64, 32, 16)):
        y = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu", name=f"dec{i}")(y)
    y = layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="rebuilt")(y)
    return keras.Model(x_in, [layers.Flatten(name="code_flat")(code), y], name="input_scorer"), \
        keras.Model(x_in, y, name="input_autoencoder")


@dataclass(frozen=True)
class InputCheck:
    scorer: object                      # film → (code, rebuilt film)
    autoencoder: object                 # film → rebuilt film (what trains and is saved)
    plain_branches: tuple[str, ...] = (ERROR_BRANCH,)

    def branch_values(self, images: np.ndarray, batch_size: int = 128) -> dict[str, np.ndarray]:
        """``input_error`` (N,) and ``input_latent`` (N, 256) of decoded films."""
        x = to_input(images)
        errors, codes = [], []
        for s in range(0, len(x), batch_size):
            b = x[s:s + batch_size]
            code, rebuilt = (np.asarray(o) for o in self.scorer(b, training=False))
            errors.append(((rebuilt - b) ** 2).mean((1, 2, 3)))
            codes.append(code)
        dim = int(self.scorer.outputs[0].shape[-1])
        return {ERROR_BRANCH: np.concatenate(errors) if errors else np.zeros(0),
                LATENT_BRANCH: np.concatenate(codes) if codes else np.zeros((0, dim))}

    def save(self, folder: str | Path) -> Path:
        return save_weights(self.autoencoder, folder, FILE)

    @classmethod
    def load(cls, folder: str | Path) -> "InputCheck | None":
        built = load_weights(build_autoencoder, folder, FILE, model_of=lambda b: b[1])
        return None if built is None else cls(*built)


def fit_input_check(images: np.ndarray, seed: int = 42, epochs: int = EPOCHS, batch_size: int = 64,
                    progress: bool = False) -> InputCheck:
    """Train the autoencoder on the training films (MSE, Adam 1e-3, a fixed number of epochs, seeded);
    ``progress``: one line per epoch with the time left."""
    import keras

    from .callbacks import EpochProgress
    x = to_input(images)
    keras.utils.set_random_seed(seed)              # here, not in the builder: loading a detector seeds nothing
    scorer, autoencoder = build_autoencoder()
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    autoencoder.fit(x, x, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
                    callbacks=[EpochProgress("input check (autoencoder)", epochs)] if progress else [])
    return InputCheck(scorer, autoencoder)
