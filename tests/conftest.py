import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KERMANY224 = SHARED / "kermany224" / "chest_xray"


def build_tiny(head: str = "gap", seed: int = 0, size: int = 8, channels: int = 1, filters: int = 3):
    """Input(size, size, channels) → Conv2D(3×3, valid, relu, name="conv") → GAP|Flatten → Dense(2, softmax),
    with fixed random weights."""
    import keras
    from keras import layers
    inp = keras.Input((size, size, channels))
    x = layers.Conv2D(filters, 3, activation="relu", name="conv")(inp)
    x = layers.GlobalAveragePooling2D()(x) if head == "gap" else layers.Flatten()(x)
    out = layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture
def kermany224():
    if not KERMANY224.is_dir():
        pytest.skip(f"real Kermany images not present at {KERMANY224} (../shared/data is only on project machines)")
    return KERMANY224
