"""A trained model's folder as one object: ``ModelCard`` (what rebuilds and uses the weights, saved as
``model_config.json``) and ``ModelFolder`` (its files, the model, temperature, detector and run configs, the
weights' hash). Every reader of a saved model — the predictor, the commands, evaluation, export, the notebook —
goes through ``ModelFolder``."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import ModelConfig, write_json_atomic
from . import files


@dataclass(frozen=True)
class ModelCard:
    """What is needed to rebuild and use saved weights, stored as ``model_config.json`` beside them."""
    backbone: str
    image_size: int
    class_names: tuple[str, ...]
    threshold: float = 0.5
    target_layer: str | None = None
    dense_units: int = 256
    dropout: tuple[float, float] = (0.4, 0.3)
    l2: float = 1e-4
    task: str = "binary"                # a key of tasks.TASKS: scan, head, metrics and decision rule
    color: bool = False
    seed: int = 42                      # the run's seed: evaluate/audit rebuild the same seeded test split
    clahe: bool = False                 # images are CLAHE-equalised after resizing (data.images.equalize)
    geometry: str = "squash"            # how films were brought to image_size (data.images.GEOMETRIES); cards
                                        # written before it existed were squashed
    population_age: tuple[float, float] | None = None   # ages (years) of the training population; None = unknown
    activation: str | None = None       # the output layer's ("softmax" | "sigmoid"); None in cards written before
                                        # it was stored: read as the task's (``output_activation``)

    @property
    def output_activation(self) -> str:
        """The output layer's activation; for an older card, sigmoid for a multi-label task, else softmax."""
        return self.activation or ("sigmoid" if self.task == "multilabel" else "softmax")

    def save(self, folder: str | Path) -> Path:
        return write_json_atomic(asdict(self), Path(folder) / files.CARD)

    @classmethod
    def load(cls, folder: str | Path) -> "ModelCard":
        data = json.loads((Path(folder) / files.CARD).read_text())
        data["class_names"] = tuple(data["class_names"])
        data["dropout"] = tuple(data["dropout"])
        if data.get("population_age") is not None:
            data["population_age"] = tuple(data["population_age"])
        return cls(**data)

    def model_config(self) -> ModelConfig:
        return ModelConfig(backbone=self.backbone, weights="none", num_classes=len(self.class_names),
                           dense_units=self.dense_units, dropout=self.dropout, l2=self.l2)


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelFolder:
    """A trained model's folder (``saved_weights/`` by default): ``ModelFolder(path).load()`` → (model, card)."""
    path: Path

    def __init__(self, path: str | Path = "saved_weights"):
        object.__setattr__(self, "path", Path(path))

    def file(self, name: str) -> Path:
        """The path of one of ``models.files``' names in this folder."""
        return self.path / name

    @property
    def weights(self) -> Path:
        return self.path / files.WEIGHTS

    def exists(self) -> bool:
        return self.weights.is_file() and (self.path / files.CARD).is_file()

    def card(self) -> ModelCard:
        return ModelCard.load(self.path)

    def load(self):
        """Rebuild the model from the card and load the weights: (model, card). FileNotFoundError names a
        missing file and the fix; ValueError says when the weights do not fit the card."""
        from .classifier import build_model
        for f in (files.CARD, files.WEIGHTS):
            if not (self.path / f).is_file():
                raise FileNotFoundError(f"{self.path / f} not found: train first (`xai-cxr train` or `xai-cxr demo`)")
        from ..runtime import full_precision
        card = self.card()
        with full_precision():
            model = build_model(card.model_config(), card.image_size, card.output_activation)
        try:
            model.load_weights(self.weights)
        except ValueError as exc:
            reason = str(exc).split("Target variable")[0].strip()       # keep the shapes, drop the value dump
            raise ValueError(f"{self.weights} does not fit a {card.backbone} model with {len(card.class_names)} "
                             f"classes at {card.image_size}px as {files.CARD} says: {reason}") from exc
        return model, card

    def temperature(self) -> float:
        """The fitted temperature (1.0 when none was fitted)."""
        from .calibration import load_temperature
        return load_temperature(self.path)

    @property
    def calibrated(self) -> bool:
        return (self.path / files.CALIBRATION).is_file()

    def detector(self):
        """The out-of-distribution detector fitted after training, or None."""
        from .ood import OODDetector
        return OODDetector.load(self.path)

    def selective(self):
        """The error-level rule fitted after training (``models/selective.py``), or None."""
        from .selective import SelectiveRule
        return SelectiveRule.load(self.path)

    def weights_sha256(self) -> str:
        return sha256_of(self.weights)

    def run_configs(self) -> dict:
        """The run's configs by class name (``config.from_json`` of ``run_config.json``)."""
        from ..config import from_json
        path = self.path / files.RUN_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the folder was not written by `xai-cxr train`")
        return from_json(path.read_text())


def load_trained_model(folder: str | Path = "saved_weights"):
    """``ModelFolder(folder).load()``: the model rebuilt from ``model_config.json`` with ``model.weights.h5``
    loaded, and its card."""
    return ModelFolder(folder).load()
