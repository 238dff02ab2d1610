"""Tasks: what a model is asked. One registry entry per task, declared once and read everywhere.

A task owns how its manifest is scanned (``scan``, the one hook a new task overrides), its output head
(one softmax, or one sigmoid per label), its loss kind, its metrics, its positive class and its decision
rule. Its name is saved in the model card, so ``evaluate``, ``audit``, the app and the API read it back
instead of guessing it from the data or the last layer.

Adding a task = one ``Task`` subclass overriding ``scan`` + one line in ``TASKS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import scan as _scan


@dataclass(frozen=True)
class Task:
    name: str
    class_names: tuple[str, ...]        # default classes (labels, for a multi-label task)
    help: str
    multilabel: bool = False            # one sigmoid per label on multi-hot targets instead of one softmax

    @property
    def activation(self) -> str:
        return "sigmoid" if self.multilabel else "softmax"

    @property
    def loss(self) -> str:
        """Loss family: per-label binary losses (focal or weighted BCE) or categorical cross-entropy."""
        return "binary_per_label" if self.multilabel else "categorical"

    def scan(self, root: str | Path, class_names=None, seed: int = 42, labels_csv: str | None = None):
        """The manifest (one row per image: path, split, label, label_idx, patient_id, mask_path)."""
        raise NotImplementedError

    def positive_index(self, class_names) -> int | None:
        """Index of the class whose probability is thresholded: the second of two classes (scikit-learn's
        ``pos_label`` convention: NORMAL=0, PNEUMONIA=1); None for K > 2 classes or multi-label."""
        return 1 if not self.multilabel and len(class_names) == 2 else None

    def decide(self, proba: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Predicted labels of probabilities (N, K): multi-hot at ``threshold`` (multi-label); the positive
        class when its probability reaches ``threshold`` (two classes); else the most probable class."""
        proba = np.asarray(proba)
        if self.multilabel:
            return (proba >= threshold).astype(np.int32)
        if self.positive_index(range(proba.shape[1])) is not None:
            return (proba[:, 1] >= threshold).astype(np.int32)
        return proba.argmax(1).astype(np.int32)

    def metrics(self, y_true, proba, class_names, threshold: float = 0.5, n_boot: int = 1000,
                seed: int = 42) -> dict:
        """All test metrics as one JSON-ready dict (``evaluate`` does the arithmetic)."""
        from . import evaluate
        if self.multilabel:
            return evaluate.multilabel_metrics(y_true, proba, class_names, threshold)
        if self.positive_index(class_names) is None:
            return {"n_images": int(len(y_true)), "classes": list(class_names),
                    **evaluate.multiclass_metrics(y_true, proba, class_names, n_boot, seed)}
        return evaluate.binary_report(y_true, proba, class_names, threshold, n_boot, seed)

    def stratify(self, labels: np.ndarray) -> np.ndarray:
        """One class index per image for balanced sample picks (the first finding present, for multi-hot labels)."""
        labels = np.asarray(labels)
        return labels.argmax(1) if self.multilabel else labels


class FolderTask(Task):
    """One sub-folder per class under train/ [val/] test/ (Kermany's NORMAL/PNEUMONIA, or any ``--classes``)."""

    def scan(self, root, class_names=None, seed=42, labels_csv=None):
        root = _data_root(root)
        if not _scan.has_split_folders(root) and _looks_like_mask_layout(root):
            raise _scan.DatasetLayoutError(f"{root} has case folders with *_mask files but no train/test folders: "
                                           "use --task mask for that layout\n" + _scan.LAYOUT.format(root=root))
        return _scan.scan_dataset(root, tuple(class_names or self.class_names))


class SubtypeTask(Task):
    """Kermany's NORMAL/PNEUMONIA folders relabelled NORMAL / BACTERIA / VIRUS from the file names."""

    def scan(self, root, class_names=None, seed=42, labels_csv=None):
        return _scan.apply_subtypes(_scan.scan_dataset(_data_root(root), TASKS["binary"].class_names))


class MultiLabelTask(Task):
    """An NIH ChestX-ray14-style CSV of findings per image; the images anywhere under the data folder."""

    def scan(self, root, class_names=None, seed=42, labels_csv=None):
        if not labels_csv:
            raise ValueError("the multilabel task needs --labels-csv (NIH ChestX-ray14 Data_Entry_2017.csv format)")
        return _scan.scan_labels_csv(labels_csv, root, tuple(class_names or self.class_names), seed=seed)


class MaskTask(Task):
    """``<case>/<name>.<ext>`` with ``<name>_mask.<ext>`` beside it, no split folders (e.g. the LGG brain-MRI
    set): label = the mask is not empty; split by case."""

    def scan(self, root, class_names=None, seed=42, labels_csv=None):
        return _scan.scan_mask_folders(root, seed=seed)


def _data_root(root) -> Path:
    root, note = _scan.find_data_root(root)
    if note:
        _scan.log.warning(note)
    return root


def _looks_like_mask_layout(root: Path) -> bool:
    return root.is_dir() and any(_scan.is_mask_file(f.name) for d in root.iterdir() if d.is_dir()
                                 for f in d.iterdir())


TASKS: dict[str, Task] = {t.name: t for t in (
    FolderTask("binary", ("NORMAL", "PNEUMONIA"), "NORMAL/PNEUMONIA folders (default; --classes for others)"),
    SubtypeTask("subtype", _scan.SUBTYPE_CLASSES, "NORMAL/BACTERIA/VIRUS from Kermany file names"),
    MultiLabelTask("multilabel", _scan.NIH_FINDINGS, "NIH ChestX-ray14 CSV of findings (--labels-csv)",
                   multilabel=True),
    MaskTask("mask", _scan.MASK_CLASSES, "<case>/<name> + <name>_mask files, no split folders (LGG brain MRI)"),
)}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None
