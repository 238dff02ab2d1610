"""The phantom model: a small ``cxr-small`` classifier trained on synthetic phantoms at 64 px (about a minute on a
CPU). The app and the API serve it, clearly labelled, when no trained weights exist, so they work offline. Built
from the data and training layers directly, so serving code never reaches up into the pipeline."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path


def train_phantom_model(folder: str | Path, seed: int = 42, n_train: int = 120, epochs: tuple[int, int] = (6, 2),
                        size: int = 64) -> Path:
    """Train (once; later calls reuse it) into ``folder/weights`` and return that folder."""
    from ..config import ModelConfig, TrainConfig
    from ..data import class_weights, load_images, make_dataset, scan_dataset
    from ..data.phantom import PhantomConfig, write_phantom_dataset
    from . import files
    from .backbones import BACKBONES
    from .classifier import build_model
    from .folder import ModelCard
    from .ood import fit_for_model
    from .train import seed_everything, train_two_stage
    folder = Path(folder)
    weights = folder / "weights"
    if all((weights / f).is_file() for f in (files.WEIGHTS, files.CARD, files.OOD)):
        return weights
    root = write_phantom_dataset(folder / "data" / "chest_xray",
                                 PhantomConfig(image_size=size, n_train=n_train, n_test=max(4, n_train // 4),
                                               seed=seed))
    manifest = scan_dataset(root)
    train, val = (load_images(manifest[manifest.split == s], size, progress=False) for s in ("train", "test"))
    spec = BACKBONES["cxr-small"]
    seed_everything(seed)
    model = build_model(ModelConfig(backbone="cxr-small", weights="none"), size)
    card = ModelCard("cxr-small", size, ("NORMAL", "PNEUMONIA"), target_layer=spec.target_layer)
    card.save(weights)                                   # the card first: weights never pair with another card
    batches = [make_dataset(s.images, s.labels, spec.preprocess, 2, 16, shuffle=s is train, seed=seed)
               for s in (train, val)]
    train_two_stage(model, *batches, replace(TrainConfig(seed=seed).with_epochs(*epochs), verbose=0), weights,
                    class_weights(train.labels, 2), spec.finetune_from)
    fit_for_model(model, spec.preprocess, train.images, train.labels, val.images, val.labels).save(weights)
    return weights
