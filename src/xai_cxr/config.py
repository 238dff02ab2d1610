"""Configuration: one frozen dataclass per concern. The defaults are the reference design's values — the notebook
this project grew from: two-stage VGG19, 7 + 14 epochs, the test split as validation.

The CLI and the notebook build these; library code receives them as arguments and reads no globals.
Stage 2 of training is an override of a few stage-1 values (see ``TrainConfig``).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class DataConfig:
    root: str = "chest_xray"            # folder holding train/ [val/] test/ with one sub-folder per class
    image_size: int = 256               # square input side
    geometry: str = "squash"            # how a film becomes that square: "squash" | "crop" (centre square) | "pad"
                                        # (letterbox); data.images.GEOMETRIES, docs/results.md "Input geometry"
    batch_size: int = 32
    validation: str = "test"            # "test" (seed: val has 16 images) | "val" | "holdout:0.1"
    limit: int | None = None            # cap on train images, stratified by class (quick runs); None = all
    class_names: tuple[str, ...] = ("NORMAL", "PNEUMONIA")
    # "binary" | "subtype" (NORMAL/BACTERIA/VIRUS from Kermany file names) | "multilabel" | "mask" (tasks.TASKS)
    task: str = "binary"
    labels_csv: str | None = None       # multilabel: NIH ChestX-ray14-style CSV; images are found under ``root``
    seed: int = 42
    workers: int = 4                    # decoder threads (OpenCV releases the GIL)
    color: bool = False                 # keep RGB (non-X-ray data sets); X-rays are decoded to grayscale
    # CLAHE after resizing (acquisition-shift lever; off = the reference design's input)
    clahe: bool = False
    image_store: str | None = None      # decode once into memory-mapped files here (bounded RAM); None = in memory
    population_age: tuple[float, float] | None = None   # ages (years) of the training films' patients, saved in the
                                        # card: a DICOM whose PatientAge is outside is referred. Kermany: (1, 5)
    # on-the-fly train augmentation; None = off. Default: the "aspect" preset (the width jitter): squashed films
    # of class-dependent shape otherwise teach how wide a chest looks (docs/results.md, "Input geometry")
    augment: "AugmentConfig | None" = field(default_factory=lambda: AUGMENT_PRESETS["aspect"])


@dataclass(frozen=True)
class AugmentConfig:
    """Small geometric and photometric changes applied in tf.data to training batches only.
    No horizontal flip by default: the heart sits on the left, a flipped film is not a plausible X-ray."""
    rotation_deg: float = 5.0
    zoom: float = 0.1                   # ± fraction
    translate: float = 0.05             # ± fraction of height/width
    brightness: float = 0.1             # ± fraction of the 0-255 range
    contrast: float = 0.1               # ± factor
    gamma: float = 0.0                  # ± log of a gamma factor: x ↦ 255·(x/255)^γ, γ = e^u (exposure curve); 0 = off
    aspect: float = 0.0                 # ± zoom of the width alone (the chest made wider or narrower); 0 = off
    horizontal_flip: bool = False


# `--augment [standard|strong|aspect]`: "strong" widens the photometric jitter (gamma, contrast, brightness) and the
# random zoom/shift, aimed at the acquisition shift between Kermany's train and test films (a lever against that shift).
# "aspect" adds a random change of the width alone: films of every aspect ratio were squashed to squares, and the
# original aspect ratio predicts the label (docs/results.md, "The squash shortcut"), so the model must not learn
# how wide a chest looks.
AUGMENT_PRESETS = {"standard": AugmentConfig(),
                   "strong": AugmentConfig(zoom=0.15, translate=0.08, brightness=0.15, contrast=0.3, gamma=0.4),
                   "aspect": AugmentConfig(aspect=0.3)}


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "vgg19"             # a key of models.BACKBONES; "auto" = vgg19 (the demo on phantoms falls back)
    weights: str = "imagenet"           # "imagenet" | "none" | path to a weights file
    num_classes: int = 2
    dense_units: int = 256
    dropout: tuple[float, float] = (0.4, 0.3)
    l2: float = 1e-4                    # L2 penalty on the dense layer of the head
    allow_download: bool | None = None  # ImageNet weights may be downloaded; None = unless XAI_CXR_NO_DOWNLOAD is set


@dataclass(frozen=True)
class StageConfig:
    epochs: int
    learning_rate: float
    clipnorm: float | None = None
    unfreeze_from: str | None = None    # first backbone layer made trainable; None = backbone frozen
    train_backbone: bool = False        # True = the whole backbone trains (models without pretrained weights)


@dataclass(frozen=True)
class TrainConfig:
    stage1: StageConfig = field(default_factory=lambda: StageConfig(epochs=7, learning_rate=3e-4))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(
        epochs=14, learning_rate=1e-5, clipnorm=1.0, unfreeze_from="block5_conv1"))
    label_smoothing: float = 0.05
    multilabel_loss: str = "focal"      # multi-label only: "focal" (binary focal loss) | "bce" (per-label weighted BCE)
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    class_weighting: bool = True        # sklearn compute_class_weight("balanced")
    early_stopping_patience: int = 4
    reduce_lr_patience: int = 2
    reduce_lr_factor: float = 0.5
    min_lr: float = 1e-7
    seed: int = 42
    deterministic: bool = True          # TensorFlow op determinism (same seed → same weights on one machine)
    feature_cache: bool = True          # train frozen-backbone stages on features computed once (cache.py)
    feature_cache_dir: str | None = None  # also keep those features on disk, keyed, memory-mapped; None = memory
    verbose: int = 1                    # Keras progress bar (1) or one line per epoch (2)
    budget_minutes: float | None = None  # wall-clock training budget: stop after the last epoch that fits
    optimizer: str = "adam"             # "adam" (the reference design) | "adamw" (decoupled weight decay)
    weight_decay: float = 1e-4          # AdamW only
    # "plateau" (ReduceLROnPlateau + early stopping, the reference design) | "cosine" (warm-up +
    schedule: str = "plateau"
                                        # cosine decay over the planned epochs, no early stopping; best epoch kept)
    ema_momentum: float | None = None   # average the weights (Keras use_ema, e.g. 0.99); validation and the best
                                        # checkpoint use the average; None = off
    warmup_epochs: int = 1              # cosine only: linear warm-up from 0 to the stage's learning rate
    # weights kept at a stage's end: "best" (lowest validation loss, the reference design's
    keep: str = "best"
                                        # checkpoint) | "last" (the final epoch: a cosine schedule's end)
    operating_point: str | None = None  # two classes: decision threshold chosen on validation after calibration,
                                        # "sensitivity:0.95" | "specificity:0.9" | "youden"; None = 0.5
    error_level: float = 0.05           # the error of the answered films the referral rule bounds on validation
                                        # (models/selective.py): films below its confidence threshold are referred

    def with_epochs(self, stage1: int | None = None, stage2: int | None = None) -> "TrainConfig":
        """Same schedule with other epoch counts (quick runs, tests)."""
        s1 = self.stage1 if stage1 is None else replace(self.stage1, epochs=stage1)
        s2 = self.stage2 if stage2 is None else replace(self.stage2, epochs=stage2)
        return replace(self, stage1=s1, stage2=s2)


@dataclass(frozen=True)
class CamConfig:
    method: str = "gradcam"
    target_layer: str | None = None     # None = the backbone's default (block5_conv3 for VGG19)
    top_fraction: float = 0.05          # share of pixels painted red in the overlay
    batch_size: int = 16
    n_samples: int = 8                  # images in sample_results.png


@dataclass(frozen=True)
class AuditConfig:
    methods: tuple[str, ...] = ()       # () = explain.registry.explainer_names(audited_by_default=True)
    n_images: int = 50                  # positive test images scored against lesion masks / perturbed
    steps: int = 20                     # deletion/insertion steps (pixels removed per step = 1/steps)
    baseline: str = "blur"              # deletion/insertion baseline: "blur" (RISE) or "mean"
    top_fraction: float = 0.05          # the "top-5%" region for hit rate and overlays
    tolerance_px: int | None = None     # pointing-game tolerance; None = 15 px at 224 px (Zhang et al. 2016), scaled
    sanity_images: int = 8              # images for the randomization checks
    images: str = "positive"            # "positive" (pneumonia images, needed for lesion masks) | "all"
    target: str = "true"                # class explained: "true" label or the model's "predicted" class
    seed: int = 42


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; when the block ends without an error it replaces ``path`` in one
    rename, so a reader never sees a half-written file (on an error the temporary file is removed). The temporary
    name keeps the extensions (``.ood.<pid>.tmp.npz``, ``.model.<pid>.tmp.weights.h5``: Keras and numpy check
    them) and holds the process id, so two processes writing the same file never share a temporary one."""
    path = Path(path)
    base, dot, rest = path.name.partition(".")
    tmp = path.with_name(f".{base}.{os.getpid()}.tmp{dot}{rest}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` through ``atomic_path`` (creating the folder), so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_json_atomic(obj, path: str | Path) -> Path:
    """``obj`` as indented JSON through ``write_text_atomic``."""
    return write_text_atomic(json.dumps(obj, indent=2), path)


def write_csv_atomic(frame, path: str | Path) -> Path:
    """A pandas DataFrame as CSV (no index) through ``atomic_path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def to_json(*configs) -> str:
    """Serialise configs as one JSON object keyed by class name (saved next to the weights)."""
    return json.dumps({type(c).__name__: asdict(c) for c in configs}, indent=2)


CONFIG_CLASSES = {c.__name__: c for c in (DataConfig, ModelConfig, TrainConfig, CamConfig)}


def merged(base, values: dict):
    """``base`` (a config dataclass) with ``values`` applied, recursively: nested configs (a stage, the
    augmentation) merge field by field, lists become tuples, ``augment`` may name a preset ("aspect") or be null.
    A key that is not a field raises ValueError naming it (the configs' field names are the vocabulary)."""
    names = {f.name for f in fields(base)}
    unknown = sorted(set(values) - names - _RETIRED.get(type(base).__name__, set()))
    if unknown:
        raise ValueError(f"{type(base).__name__} has no field(s) {unknown}; its fields: {sorted(names)}")
    kw = {}
    for name, value in values.items():
        if name not in names:
            continue
        current = getattr(base, name)
        if name == "augment" and isinstance(value, str):
            value = AUGMENT_PRESETS[value]
        elif name == "augment" and isinstance(value, dict):
            value = merged(current or AugmentConfig(), value)
        elif is_dataclass(current) and isinstance(value, dict):
            value = merged(current, value)
        elif isinstance(value, list):
            value = tuple(value)
        kw[name] = value
    return replace(base, **kw)


_RETIRED = {"ModelConfig": {"multilabel"}}     # fields of older run_config.json files, now read from the task


def from_json(text: str, base: dict | None = None) -> dict:
    """Inverse of ``to_json``: {class name: config instance}. Each config present is merged onto ``base``'s (or
    the class defaults), so a partial object — a recipe file naming only what differs — works too."""
    raw = json.loads(text)
    base = base or {}
    return {name: merged(base.get(name) or cls(), raw[name]) for name, cls in CONFIG_CLASSES.items() if name in raw}
