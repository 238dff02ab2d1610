"""Images → class probabilities, the one path every caller takes: uint8 films (N, S, S) or (N, S, S, 3) are
turned into model input in chunks (bounded memory) and run through ``model.predict``."""
from __future__ import annotations

import numpy as np

CHUNK = 256           # films turned into model input at a time


def predict_images(model, grays: np.ndarray, preprocess=None, batch_size: int = 32) -> np.ndarray:
    """Class probabilities (N, K) float32 of ``model`` on uint8 ``grays``; ``preprocess`` None = the backbone's
    (a ``build_model`` classifier). The same arithmetic as training's tf.data input (``data.to_model_input``)."""
    from ..data import to_model_input
    if preprocess is None:
        from .backbones import BACKBONES
        from .classifier import backbone_of
        preprocess = BACKBONES[backbone_of(model)].preprocess
    grays = np.asarray(grays)
    out = [np.asarray(model.predict(to_model_input(grays[s:s + CHUNK], preprocess).numpy(), batch_size=batch_size,
                                    verbose=0), np.float32)
           for s in range(0, len(grays), CHUNK)]
    return np.concatenate(out) if out else np.zeros((0, int(model.output_shape[-1])), np.float32)
