"""Tasks: what a model is asked. One registry entry per task, declared once and read everywhere.

A task owns how its manifest is scanned (``scan``), its output layer's activation, its training weights and
objective (loss + metrics), its calibration, its positive class and decision rule, the class a heat map
explains, and its metrics. Its name is saved in the model card, so ``evaluate``, ``audit``, the app and the API read it
back
instead of guessing it from the data or the last layer.

Adding a task = one ``Task`` subclass overriding ``scan`` (and whatever else differs) + one line in ``TASKS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import scan as _scan
from .data.splits import class_weights


@dataclass(frozen=True)
class Task:
    """A single-label task: one softmax over the classes, categorical cross-entropy, balanced class weights, a
    threshold on the second of two classes. A task with another head, loss or rule overrides what differs
    (``MultiLabelTask``); every caller asks the task, none tests which task it is."""
    name: str
    class_names: tuple[str, ...]        # default classes (labels, for a multi-label task)
    help: str
    activation: str = "softmax"         # the output layer's activation (models.build_model's ``activation``)
    unit: str = "class"                 # what an output is called in messages: "class" | "label"
    classes_from: str = "fixed"         # what --classes names: "folders" (or 'auto'), "columns" of a CSV, "fixed"

    def scan(self, root: str | Path, class_names=None, seed: int = 42, labels_csv: str | None = None):
        """The manifest (one row per image: path, split, label, label_idx, patient_id, mask_path)."""
        raise NotImplementedError

    # -- training -------------------------------------------------------------------------------------------
    def training_weights(self, labels: np.ndarray, n_outputs: int) -> dict:
        """Keyword arguments the fit gets from the training labels: balanced class weights n / (k · n_c)."""
        return {"class_weight": class_weights(labels, n_outputs)}

    def objective(self, **training_weights):
        """A callable ``TrainConfig -> (loss, metrics)`` (``models.train``), given what ``training_weights``
        returned: categorical cross-entropy (the class weights go to the fit itself)."""
        from .models.train import categorical_objective
        return categorical_objective

    # -- outputs ---------------------------------------------------------------------------------------------
    def positive_index(self, class_names) -> int | None:
        """Index of the class whose probability is thresholded: the second of two classes (scikit-learn's
        ``pos_label`` convention: NORMAL=0, PNEUMONIA=1); None for K > 2 classes."""
        return 1 if len(class_names) == 2 else None

    def decide(self, proba: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Predicted classes of probabilities (N, K): the positive class when its probability reaches
        ``threshold`` (two classes); else the most probable class."""
        proba = np.asarray(proba)
        if self.positive_index(range(proba.shape[1])) is not None:
            return (proba[:, 1] >= threshold).astype(np.int32)
        return proba.argmax(1).astype(np.int32)

    def explained(self, proba: np.ndarray, decided: np.ndarray) -> np.ndarray:
        """The class a heat map explains for each image: the decided class."""
        return np.asarray(decided, np.int32)

    def calibrate(self, proba: np.ndarray, temperature: float) -> np.ndarray:
        from .models.calibration import apply_temperature
        return apply_temperature(proba, temperature, self.activation)

    def metrics(self, y_true, proba, class_names, threshold: float = 0.5, n_boot: int = 1000,
                seed: int = 42) -> dict:
        """All test metrics as one JSON-ready dict (``evaluate`` does the arithmetic)."""
        from . import evaluate
        if self.positive_index(class_names) is None:
            return {"n_images": int(len(y_true)), "classes": list(class_names),
                    **evaluate.multiclass_metrics(y_true, proba, class_names, n_boot, seed)}
        return evaluate.binary_report(y_true, proba, class_names, threshold, n_boot, seed)

    def stratify(self, labels: np.ndarray) -> np.ndarray:
        """One class index per image for balanced sample picks."""
        return np.asarray(labels)

    def operating_point_applies(self, class_names) -> bool:
        """A decision threshold chosen on validation (``--operating-point``) makes sense: two classes."""
        return self.positive_index(class_names) is not None

    @property
    def per_image_figures(self) -> bool:
        """Reliability diagram, pointing game, referral by uncertainty: defined for one answer per image."""
        return True

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
    """An NIH ChestX-ray14-style CSV of findings per image, the images anywhere under the data folder: one
    sigmoid per finding on multi-hot targets, a binary focal or per-label weighted BCE loss
    (``TrainConfig.multilabel_loss``), per-label metrics, each finding decided at the threshold."""

    def scan(self, root, class_names=None, seed=42, labels_csv=None):
        if not labels_csv:
            raise ValueError("the multilabel task needs --labels-csv (NIH ChestX-ray14 Data_Entry_2017.csv format)")
        return _scan.scan_labels_csv(labels_csv, root, tuple(class_names or self.class_names), seed=seed)

    def training_weights(self, labels, n_outputs):
        """Per-label positive weights, negatives / positives in the training split (1 where a label is absent)."""
        labels = np.asarray(labels)
        pos = labels.sum(0)
        return {"pos_weight": np.where(pos > 0, (len(labels) - pos) / np.maximum(pos, 1), 1.0)}

    def objective(self, pos_weight=None, **_):
        def objective(cfg):
            import keras

            from .models.train import weighted_bce
            loss = (keras.losses.BinaryFocalCrossentropy(gamma=cfg.focal_gamma, alpha=cfg.focal_alpha,
                                                         apply_class_balancing=True)
                    if cfg.multilabel_loss == "focal" else weighted_bce(1.0 if pos_weight is None else pos_weight))
            return loss, ["binary_accuracy", keras.metrics.AUC(name="auc", multi_label=True)]
        return objective

    def positive_index(self, class_names):
        return None

    def decide(self, proba, threshold=0.5):
        return (np.asarray(proba) >= threshold).astype(np.int32)

    def explained(self, proba, decided):
        """The most probable finding of each image."""
        return np.asarray(proba).argmax(1).astype(np.int32)

    def metrics(self, y_true, proba, class_names, threshold=0.5, n_boot=1000, seed=42):
        from . import evaluate
        return evaluate.multilabel_metrics(y_true, proba, class_names, threshold)

    def stratify(self, labels):
        """The first finding present (multi-hot labels)."""
        return np.asarray(labels).argmax(1)

    @property
    def per_image_figures(self):
        return False


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
    FolderTask("binary", ("NORMAL", "PNEUMONIA"), "NORMAL/PNEUMONIA folders (default; --classes for others)",
               classes_from="folders"),
    SubtypeTask("subtype", _scan.SUBTYPE_CLASSES, "NORMAL/BACTERIA/VIRUS from Kermany file names"),
    MultiLabelTask("multilabel", _scan.NIH_FINDINGS, "NIH ChestX-ray14 CSV of findings (--labels-csv)",
                   activation="sigmoid", unit="label", classes_from="columns"),
    MaskTask("mask", _scan.MASK_CLASSES, "<case>/<name> + <name>_mask files, no split folders (LGG brain MRI)"),
)}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None
