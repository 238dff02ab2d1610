"""The names of the files in a trained model's folder, in one place (``ModelFolder`` in ``models/folder.py`` reads
them; the modules that write one of them import its name from here), and the one way a small Keras model beside
the weights (the input-level checks) is written and read."""
from __future__ import annotations

from pathlib import Path

WEIGHTS = "model.weights.h5"          # the classifier's weights (weights only: nothing from disk is executed)
CARD = "model_config.json"            # ModelCard: what rebuilds and uses the weights
RUN_CONFIG = "run_config.json"        # the configs of the run that trained them (refits, audits, evaluation)
HISTORY = "history.json"              # per-epoch training history
CALIBRATION = "calibration.json"      # the fitted temperature
OOD = "ood.npz"                       # the out-of-distribution detector (models/ood.py)
INPUT_CHECK = "input_check.weights.h5"  # its input-level autoencoder (models/input_check.py)
CONTRASTIVE = "contrastive.weights.h5"  # its self-supervised encoder of the training films (models/contrastive.py)
SELECTIVE = "selective.json"          # the error-level rule: answer only above a confidence (models/selective.py)


def save_weights(model, folder: str | Path, name: str) -> Path:
    """``model``'s weights → ``folder/name`` in one rename (``config.atomic_path``): never a half-written file."""
    from ..config import atomic_path
    with atomic_path(Path(folder) / name) as tmp:
        model.save_weights(tmp)
    return Path(folder) / name


def load_weights(build, folder: str | Path, name: str, model_of=lambda built: built):
    """What ``build()`` makes, built in float32 whatever the global policy, its model ``model_of(built)`` holding
    the weights of ``folder/name``; None when there is no such file."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    from ..runtime import full_precision
    with full_precision():
        built = build()
    model_of(built).load_weights(path)
    return built
