"""Data for a run: scan with the task, limit, choose validation, decode once (corrupt files skipped and reported),
the task's training weights, tf.data datasets, balanced sample picks and lesion masks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..data import ImageSet, find_data_root, limit_train, load_images, make_dataset, require_splits, select_validation
from ..tasks import get_task


def has_split(root: str | Path, split: str = "train") -> bool:
    """``root`` (or the Kaggle zip's nested folder inside it) has a ``split`` folder."""
    root, _ = find_data_root(root)
    return root.is_dir() and any(p.is_dir() and p.name.lower() == split for p in root.iterdir())


@dataclass
class Prepared:
    """Decoded splits ready for training."""
    train: ImageSet
    val: ImageSet
    test: ImageSet
    validation_note: str
    class_weight: dict[int, float]

    @property
    def skipped(self):
        seen = {}
        for s in (self.train, self.val, self.test):
            seen.update(dict(s.skipped))
        return sorted(seen.items())


def prepare_data(cfg: DataConfig, progress: bool = True) -> Prepared:
    """Scan, limit, choose validation, decode once (corrupt files skipped), class weights."""
    task = get_task(cfg.task)
    df = task.scan(cfg.root, cfg.class_names, cfg.seed, cfg.labels_csv)
    require_splits(df, "train", "test", root=cfg.root)
    df = limit_train(df, cfg.limit, cfg.seed)
    train, val, test, note = select_validation(df, cfg.validation, cfg.seed)
    sets = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        if name == "val" and cfg.validation == "test":
            continue
        if cfg.image_store:                       # large sets: decoded once to disk, read back memory-mapped
            from ..data.store import load_images_stored
            sets[name] = load_images_stored(part, cfg.image_size, cfg.image_store, cfg.workers, cfg.color,
                                            cfg.clahe, progress=progress, geometry=cfg.geometry)
        else:
            sets[name] = load_images(part, cfg.image_size, cfg.workers, progress, cfg.color, cfg.clahe, cfg.geometry)
    if cfg.validation == "test":
        sets["val"] = sets["test"]
    return Prepared(sets["train"], sets["val"], sets["test"], note, train_class_weights(sets["train"].labels, cfg))


def train_class_weights(labels: np.ndarray, cfg: DataConfig) -> dict[int, float]:
    """The task's class weights for the fit (balanced n / (k · n_c)); {} when the task weighs otherwise (per-label
    positive weights of a multi-label task go to its objective)."""
    return get_task(cfg.task).training_weights(labels, len(cfg.class_names)).get("class_weight", {})


def datasets(prep: Prepared, cfg: DataConfig, preprocess):
    train = make_dataset(prep.train.images, prep.train.labels, preprocess, len(cfg.class_names),
                         cfg.batch_size, shuffle=True, seed=cfg.seed, augment=cfg.augment)
    val = make_dataset(prep.val.images, prep.val.labels, preprocess, len(cfg.class_names), cfg.batch_size)
    return train, val


def pick_samples(labels: np.ndarray, n: int, seed: int = 42) -> np.ndarray:
    """Indices of up to ``n`` images, as balanced over classes as the data allow (seeded)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    picked = []
    while len(picked) < n and any(per.values()):
        for c in classes:
            if per[c] and len(picked) < n:
                picked.append(per[c].pop(0))
    return np.array(sorted(picked), int)


def lesion_masks(images: ImageSet, size: int):
    """Lesion masks aligned with ``images`` when the data set has them (phantoms), else None."""
    if "mask_path" not in images.manifest or images.manifest["mask_path"].isna().all():
        return None
    import cv2
    out = np.zeros((len(images.manifest), size, size), bool)
    for i, p in enumerate(images.manifest["mask_path"]):
        if isinstance(p, str):
            out[i] = cv2.resize(cv2.imread(p, cv2.IMREAD_GRAYSCALE), (size, size),
                                interpolation=cv2.INTER_NEAREST) > 127
    return out


