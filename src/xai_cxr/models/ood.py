"""Knowing when not to answer: an out-of-distribution score at several depths of the trained model.

A pneumonia classifier's last features are trained to ignore whatever does not separate its classes — the
patient's age and the hospital's acquisition included — so one distance on them misses exactly the films that
matter (adults from another hospital). The detector therefore looks at several depths (Lee et al., NeurIPS 2018,
"feature ensemble"; Anthony & Kamnitsas 2023, multi-branch Mahalanobis): after each stage of the network the
feature maps are averaged over the image, and each such *branch* gets the squared Mahalanobis distance to the
nearest training class mean under one shared covariance (Ledoit-Wolf shrinkage). A branch may also be a plain
score where larger means stranger (the input-level autoencoder's reconstruction error, ``models/input_check``).
The distance is a key of ``DISTANCES``: Mahalanobis (the reference design) or the k-th nearest training film's
distance after L2 normalisation (Sun et al., ICML 2022), measured beside it and not chosen (docs/results.md, "Answer
only what it can stand behind").

Each branch's score is standardised on in-distribution films the model did not train on (the holdout, or the
training films when there is none): z = (score − mean) / sd. The combined score is the sum of the z-scores of
the branches in ``combine``, and its threshold is the ``quantile`` of the same films' combined scores. A film
above it is "outside what this model has seen"; the branch with the largest z says which depth saw it.

The reference design: the features of every depth of the backbone are averaged over each cell of a 2 × 2 grid
(where the anatomy sits is kept), every depth, the head's features and the input-level check's code are summed,
and the threshold is the 97th percentile of the holdout (an expected 3% of in-distribution films referred, with
room under a 5% budget for the sampling error of ~500 holdout films). The energy score (Liu et al. 2020) and
the autoencoder's reconstruction error are computed beside it, not summed (``NOT_SUMMED``). docs/results.md
("When not to trust the model") gives what each branch and each choice measured.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .contrastive import BRANCH as CONTRASTIVE_BRANCH
from .contrastive import ContrastiveCheck, fit_contrastive_check
from .files import OOD as OOD_FILE
from .input_check import ERROR_BRANCH, INPUT_PREFIX, LATENT_BRANCH, InputCheck, fit_input_check

WARNING = "outside what this model has seen — do not trust this prediction"
HEAD_BRANCH = "head"            # the head's features: the input of the prediction layer
ENERGY_BRANCH = "energy"        # −logsumexp(logits): larger = less like any class (Liu et al. 2020)
DEFAULT_QUANTILE = 0.97
DEFAULT_GRID = 2
# computed and reported, not summed: the energy score is at chance on chest films (Wollek et al. 2023) and the
# autoencoder's reconstruction error is *lower* for smooth, simple images than for films (phantoms, the adult NIH
# film: docs/results.md) — the known failure that its latent distance repairs (Denouden et al. 2018)
NOT_SUMMED = (ENERGY_BRANCH, ERROR_BRANCH)


@dataclass(frozen=True)
class Mahalanobis:
    """Squared Mahalanobis distance to the nearest of K class means under one shared precision matrix."""
    means: np.ndarray          # (K, D)
    precision: np.ndarray      # (D, D)

    def score(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features, np.float64)
        d = f[:, None, :] - self.means[None]                               # (N, K, D)
        return np.einsum("nkd,de,nke->nk", d, self.precision, d).min(1)


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray) -> Mahalanobis:
    """Class means and the Ledoit-Wolf precision of the class-centred features. Multi-hot labels (multi-label
    tasks) use one mean."""
    from sklearn.covariance import LedoitWolf
    f = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    classes = np.zeros(len(f), int) if labels.ndim == 2 else labels.astype(int)
    kinds = np.unique(classes)
    means = np.stack([f[classes == k].mean(0) for k in kinds])
    centred = f - means[np.searchsorted(kinds, classes)]
    return Mahalanobis(means, LedoitWolf(assume_centered=True).fit(centred).precision_)


@dataclass(frozen=True)
class KNearest:
    """Distance to the k-th nearest training film after L2 normalisation of the features (Sun et al., ICML 2022):
    no assumption on the features' shape, where Mahalanobis assumes one Gaussian per class."""
    bank: np.ndarray           # (M, D) L2-normalised training features
    k: int

    def score(self, features: np.ndarray) -> np.ndarray:
        f = l2_normalise(features).astype(np.float32)
        bank = np.asarray(self.bank, np.float32)
        k = min(self.k, len(bank))
        out = np.empty(len(f))
        for s in range(0, len(f), 256):                                    # (256, M) similarities at a time
            sim = f[s:s + 256] @ bank.T
            kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1]             # the k-th largest cosine similarity
            out[s:s + 256] = np.sqrt(np.maximum(2.0 - 2.0 * kth, 0.0))      # its Euclidean distance on the sphere
        return out


def l2_normalise(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


KNN_K = 10                  # neighbours: Sun et al.'s k = 50 for 50,000 films scaled to a bank of a few thousand
KNN_BANK = 2000             # training films kept per branch (a seeded sample: Sun et al. show a sample suffices)


def fit_knn(features: np.ndarray, labels=None, k: int = KNN_K, bank: int = KNN_BANK, seed: int = 0) -> KNearest:
    """The k-NN branch of training features: a seeded sample of at most ``bank`` films, L2-normalised, stored as
    float16 (the distance's precision needs no more)."""
    f = np.asarray(features)
    if len(f) > bank:
        f = f[np.sort(np.random.default_rng(seed).choice(len(f), bank, replace=False))]
    return KNearest(l2_normalise(f).astype(np.float16), int(k))


DISTANCES = {"mahalanobis": fit_mahalanobis, "knn": fit_knn}    # name → fit(features, labels) of a branch's distance


@dataclass(frozen=True)
class InputCheckKind:
    """A kind of input-level check: a model of the training films alone, independent of the classifier, whose
    branches the detector scores beside the classifier's."""
    fit: Callable            # (training films, seed=, progress=) → the check (its ``branch_values``, ``save``)
    load: Callable           # folder → the check saved there, or None
    branches: tuple[str, ...]   # the branches it gives the detector


# the autoencoder is the reference design's; the contrastive encoder is measured beside it and not chosen by the
# leave-one-shift-out protocol (docs/results.md, "Answer only what it can stand behind")
INPUT_CHECKS = {"autoencoder": InputCheckKind(fit_input_check, InputCheck.load, (ERROR_BRANCH, LATENT_BRANCH)),
                "contrastive": InputCheckKind(fit_contrastive_check, ContrastiveCheck.load, (CONTRASTIVE_BRANCH,))}
DEFAULT_INPUT_CHECKS = ("autoencoder",)


@dataclass(frozen=True)
class OODDetector:
    branches: tuple[str, ...]                  # branch names: model layers, "head", "input_error", "energy", ...
    fits: tuple[Mahalanobis | KNearest | None, ...]   # per branch: its distance's fit, or None for a plain score
    centre: np.ndarray                         # (B,) mean of each branch's raw score on the calibration films
    scale: np.ndarray                          # (B,) its standard deviation
    combine: tuple[str, ...]                   # branches summed into the combined score
    threshold: float                           # combined scores above it are flagged
    quantile: float                            # which quantile of the calibration films' combined scores it is
    calibrated_on: str                         # "holdout" | "train, held out of the detector"
    grid: int = 1                              # layer features are averaged over a grid × grid split of the map
    input_checks: tuple = field(default=(), compare=False)     # the input-level checks whose branches it scores
                                            # (models.input_check.InputCheck, models.contrastive.ContrastiveCheck)
    reference_z: np.ndarray | None = field(default=None, compare=False)   # (M, B) z-scores of the calibration films:
                                            # the reference sample of the folder shift test (models/shift.py)
    reference_labels: np.ndarray | None = field(default=None, compare=False)   # (M,) their class indices (None:
                                            # unknown, or a multi-label task): per-class shift tests compare like
                                            # with like

    def raw(self, branch_values: dict[str, np.ndarray]) -> np.ndarray:
        """(N, B) raw scores from each branch's features (Mahalanobis branches) or score (plain branches)."""
        cols = [fit.score(branch_values[name]) if fit is not None else np.asarray(branch_values[name], np.float64)
                for name, fit in zip(self.branches, self.fits)]
        return np.stack(cols, 1)

    def z(self, raw: np.ndarray) -> np.ndarray:
        return (np.asarray(raw, np.float64) - self.centre) / self.scale

    @property
    def summed(self) -> list[int]:
        """Column indices of the ``combine`` branches."""
        return [self.branches.index(b) for b in self.combine]

    def reference(self, label: int | None = None) -> np.ndarray:
        """The holdout films' z-scores of the summed branches — the folder shift test's reference sample — or only
        those of class ``label``."""
        z = np.asarray(self.reference_z)[:, self.summed]
        return z if label is None else z[np.asarray(self.reference_labels) == label]

    def combined(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z)[:, self.summed].sum(1)

    def assess(self, branch_values: dict[str, np.ndarray]) -> "Assessment":
        """The combined score of each film, whether it is flagged, every branch's z and the loudest branch."""
        z = self.z(self.raw(branch_values))
        score = self.combined(z)
        loudest = np.asarray(self.combine)[z[:, self.summed].argmax(1)] if len(z) else np.array([], str)
        return Assessment(score, score > self.threshold, z, tuple(loudest))

    def save(self, folder: str | Path) -> Path:
        from ..config import atomic_path
        arrays = {"branches": np.array(self.branches), "combine": np.array(self.combine),
                  "centre": self.centre, "scale": self.scale, "threshold": self.threshold,
                  "quantile": self.quantile, "calibrated_on": self.calibrated_on, "grid": self.grid}
        if self.reference_z is not None:
            arrays["reference_z"] = self.reference_z
        if self.reference_labels is not None:
            arrays["reference_labels"] = self.reference_labels
        for i, fit in enumerate(self.fits):
            if isinstance(fit, Mahalanobis):
                arrays[f"means_{i}"], arrays[f"precision_{i}"] = fit.means, fit.precision
            elif isinstance(fit, KNearest):
                arrays[f"bank_{i}"], arrays[f"k_{i}"] = fit.bank, fit.k
        with atomic_path(Path(folder) / OOD_FILE) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        for check in self.input_checks:
            check.save(folder)
        return Path(folder) / OOD_FILE

    @classmethod
    def load(cls, folder: str | Path) -> "OODDetector | None":
        """The detector saved beside the weights; None when there is none. A single-layer detector written by
        earlier versions (``layer`` + raw threshold) loads as one branch with centre 0 and scale 1."""
        path = Path(folder) / OOD_FILE
        if not path.is_file():
            return None
        z = np.load(path, allow_pickle=False)
        if "layer" in z:                                   # the earlier single-layer format
            return cls((str(z["layer"]),), (Mahalanobis(z["means"], z["precision"]),), np.zeros(1), np.ones(1),
                       (str(z["layer"]),), float(z["threshold"]), float(z["quantile"]), str(z["calibrated_on"]))
        branches = tuple(str(b) for b in z["branches"])
        fits = tuple(Mahalanobis(z[f"means_{i}"], z[f"precision_{i}"]) if f"means_{i}" in z else
                     KNearest(z[f"bank_{i}"], int(z[f"k_{i}"])) if f"bank_{i}" in z else None
                     for i in range(len(branches)))
        checks = tuple(c for c in (kind.load(folder) for kind in INPUT_CHECKS.values()   # those its branches use
                                   if set(kind.branches) & set(branches)) if c is not None)
        return cls(branches, fits, z["centre"], z["scale"], tuple(str(b) for b in z["combine"]),
                   float(z["threshold"]), float(z["quantile"]), str(z["calibrated_on"]), int(z["grid"]),
                   checks, z["reference_z"] if "reference_z" in z else None,
                   z["reference_labels"] if "reference_labels" in z else None)

    def image_values(self, model, images: np.ndarray, preprocess, net=None,
                     progress: str | None = None) -> dict[str, np.ndarray]:
        """Every branch's input for decoded images (``image_branch_values`` with this detector's settings);
        ``net``: its ``branch_model`` when the caller keeps one; ``progress``: a progress bar's label."""
        return image_branch_values(model, images, preprocess, self.layers, self.input_checks, self.grid, net=net,
                                   progress=progress)

    def branch_model(self, model):
        """The Keras model that computes this detector's layer branches for ``model``."""
        return branch_model(model, self.layers, self.grid)

    @property
    def layers(self) -> tuple[str, ...]:
        """The model layers whose pooled features some branch needs."""
        return tuple(b for b, f in zip(self.branches, self.fits)
                     if f is not None and b != HEAD_BRANCH and not b.startswith(INPUT_PREFIX))


@dataclass(frozen=True)
class Assessment:
    """What the detector says of N films."""
    score: np.ndarray            # (N,) combined score (sum of z)
    flagged: np.ndarray          # (N,) bool, score > threshold
    z: np.ndarray                # (N, B) each branch's z-score
    loudest: tuple[str, ...]     # per film: the summed branch with the largest z (which depth saw it most)


def fit_detector(train: dict[str, np.ndarray], labels: np.ndarray, calibration: dict[str, np.ndarray],
                 plain: tuple[str, ...] = (), combine: tuple[str, ...] | None = None,
                 quantile: float = DEFAULT_QUANTILE, calibrated_on: str = "holdout", grid: int = 1,
                 input_checks=(), calibration_labels=None, distance="mahalanobis") -> OODDetector:
    """Fit a ``distance`` branch (a key of ``DISTANCES``, or a function of the same form) on each training feature
    array in ``train`` (name → (N, D)) except the ``plain`` ones (name → (N,) scores, used as they are); standardise
    every branch on ``calibration`` (same names); sum ``combine`` (default: every branch not in ``NOT_SUMMED``);
    threshold = its ``quantile`` on the calibration films."""
    branches = tuple(train)
    fit = DISTANCES[distance] if isinstance(distance, str) else distance
    fits = tuple(None if b in plain else fit(train[b], labels) for b in branches)
    combine = tuple(combine or (b for b in branches if b not in NOT_SUMMED))
    unit = OODDetector(branches, fits, np.zeros(len(branches)), np.ones(len(branches)), combine, np.inf,
                       quantile, calibrated_on, grid)
    raw = unit.raw(calibration)
    centre, scale = raw.mean(0), raw.std(0, ddof=1)
    scale = np.where(scale > 0, scale, 1.0)
    scored = replace(unit, centre=centre, scale=scale)
    z = scored.z(raw)
    threshold = float(np.quantile(scored.combined(z), quantile))
    reference_labels = None if calibration_labels is None or np.ndim(calibration_labels) != 1 else \
        np.asarray(calibration_labels, int)
    return replace(scored, threshold=threshold, input_checks=tuple(input_checks), reference_z=z,
                   reference_labels=reference_labels)


# --- features of a Keras model at several depths -------------------------------------------------------------

def depth_layers(model) -> tuple[str, ...]:
    """The backbone layers whose pooled features are branches: the backbone's ``ood_layers`` when its registry
    entry names them, else the last layer at each spatial resolution of the backbone."""
    from .backbones import BACKBONES
    from .classifier import HEAD_PREFIX, backbone_of
    named = BACKBONES[backbone_of(model)].ood_layers
    if named:
        return named
    last: dict[tuple, str] = {}
    for layer in model.layers:
        shape = getattr(layer, "output", None) is not None and layer.output.shape
        if layer.name.startswith(HEAD_PREFIX) or not shape or len(shape) != 4 \
                or type(layer).__name__ == "InputLayer":
            continue
        last.pop(tuple(shape[1:3]), None)        # re-insert: keep the order of the *last* layer at each size
        last[tuple(shape[1:3])] = layer.name
    return tuple(last.values())


def _head_layer(model):
    from .classifier import HEAD_PREFIX
    return model.get_layer(HEAD_PREFIX + "predictions")


def grid_pool(x, grid: int, name: str):
    """(B, H, W, C) → (B, grid² · C): the mean of each cell of a grid × grid split of the map (grid 1 = global
    average pooling). Where a film's anatomy sits is kept: an adult's chest fills the film differently."""
    import keras
    h, w = int(x.shape[1]), int(x.shape[2])
    if grid <= 1 or h < grid or w < grid:
        return keras.layers.GlobalAveragePooling2D(name=name)(x)
    cell = (h // grid, w // grid)
    x = keras.layers.AveragePooling2D(cell, strides=cell, name=name + "_cells")(x)
    return keras.layers.Flatten(name=name)(x)


def branch_model(model, layers: tuple[str, ...], grid: int = 1):
    """x → [``grid_pool`` of each layer's features] + [the head's features (the prediction layer's input)], one
    Keras model sharing ``model``'s weights."""
    import keras
    outs = [model.get_layer(n).output for n in layers]
    outs = [grid_pool(o, grid, f"ood_pool_{i}") if len(o.shape) == 4 else o for i, o in enumerate(outs)]
    return keras.Model(model.input, [*outs, _head_layer(model).input])


def logits_of(model, head_features: np.ndarray) -> np.ndarray:
    """Pre-activation outputs of the prediction layer from its input (a Dense layer: x W + b)."""
    kernel, bias = (np.asarray(w, np.float64) for w in _head_layer(model).get_weights())
    return np.asarray(head_features, np.float64) @ kernel + bias


def energy(logits: np.ndarray) -> np.ndarray:
    """−logsumexp of the logits: the energy score (larger = further from every class)."""
    from scipy.special import logsumexp
    return -logsumexp(np.asarray(logits, np.float64), axis=1)


def branch_values(model, net, layers: tuple[str, ...], x: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Every branch's input for model inputs ``x``: pooled features per layer, the head's features, the energy."""
    parts = [[np.asarray(o, np.float32) for o in net(x[s:s + batch_size], training=False)]
             for s in range(0, len(x), batch_size)]
    cols = [np.concatenate(c) for c in zip(*parts)] if parts else [np.zeros((0, 1))] * (len(layers) + 1)
    out = dict(zip(layers, cols[:-1]))
    out[HEAD_BRANCH] = cols[-1]
    out[ENERGY_BRANCH] = energy(logits_of(model, cols[-1])) if len(x) else np.zeros(0)
    return out


def image_branch_values(model, images: np.ndarray, preprocess, layers: tuple[str, ...], input_checks=(),
                        grid: int = 1, chunk: int = 256, net=None,
                        progress: str | None = None) -> dict[str, np.ndarray]:
    """Branch inputs of decoded images (uint8, (N, S, S) or (N, S, S, 3)), ``chunk`` images at a time: memory
    stays bounded by the pooled features, whatever N. ``net``: a ``branch_model`` already built; ``progress``: the
    label of a progress bar (None = quiet)."""
    from tqdm.auto import tqdm

    from ..data import to_model_input
    net = net or branch_model(model, layers, grid)
    parts = [branch_values(model, net, layers, to_model_input(images[s:s + chunk], preprocess).numpy())
             for s in tqdm(range(0, len(images), chunk), desc=progress, disable=progress is None, unit="chunk",
                           leave=False)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    for check in input_checks:
        out.update(check.branch_values(images))
    return out


def fit_for_model(model, preprocess, train_images, train_labels, calibration_images=None, calibration_labels=None,
                  quantile: float = DEFAULT_QUANTILE, input_checks: tuple[str, ...] = DEFAULT_INPUT_CHECKS,
                  seed: int = 42,
                  combine: tuple[str, ...] | None = None, grid: int = DEFAULT_GRID,
                  calibration_share: float = 0.2, progress: bool = False,
                  distance: str = "mahalanobis") -> OODDetector:
    """The detector of a trained model: Mahalanobis branches and the ``input_checks`` (keys of ``INPUT_CHECKS``)
    fitted on the training films, every branch standardised and the threshold set on ``calibration_images``
    (in-distribution films the model did not train on). Without them, a seeded ``calibration_share`` of the
    training films is kept out of the detector's own fit and calibrates it ("train, held out of the detector"):
    scored against a fit that saw them, training films look closer than any new film, and the threshold would flag
    ordinary new films by the dozen (measured: half of the demo's phantom test films). ``progress``: a line per
    stage (the autoencoder's epochs, the features of the fit and calibration films)."""
    layers = depth_layers(model)
    fit_images, fit_labels, calibrated_on = train_images, np.asarray(train_labels), "holdout"
    if calibration_images is None:            # (a memory-mapped store stays mapped on the holdout path)
        order = np.random.default_rng(seed).permutation(len(train_images))
        n_cal = max(1, int(round(calibration_share * len(train_images))))
        fit_idx, cal_idx = np.sort(order[n_cal:]), np.sort(order[:n_cal])
        calibration_labels = fit_labels[cal_idx]
        fit_images, fit_labels = train_images[fit_idx], fit_labels[fit_idx]
        calibration_images, calibrated_on = train_images[cal_idx], "train, held out of the detector"
    checks = tuple(INPUT_CHECKS[name].fit(fit_images, seed=seed, progress=progress) for name in input_checks)
    say = (lambda what: what) if progress else (lambda what: None)  # noqa: E731
    train = image_branch_values(model, fit_images, preprocess, layers, checks, grid,
                                progress=say(f"detector: features of {len(fit_images)} training films"))
    calib = image_branch_values(model, calibration_images, preprocess, layers, checks, grid,
                                progress=say(f"detector: features of {len(calibration_images)} calibration films"))
    plain = (ENERGY_BRANCH, *(b for c in checks for b in c.plain_branches))
    return fit_detector(train, fit_labels, calib, plain, combine, quantile, calibrated_on, grid, checks,
                        calibration_labels, distance)
