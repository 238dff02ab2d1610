"""One trained model ready for single images: decode (PNG/JPEG/DICOM bytes), calibrated probabilities,
MC-dropout uncertainty and explanation maps. The app, the HTTP API and the report all go through it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import decode_image, fit_size
from ..explain.registry import make_explainer
from ..models import ModelFolder, referral
from ..models.ood import WARNING as OOD_WARNING
from ..tasks import Task, get_task

MAX_UPLOAD_BYTES = 20 * 1024 * 1024        # the largest Kermany JPEG is ~3 MB; a 16-bit 3k×3k DICOM ~18 MB


@dataclass
class Prediction:
    """What one image gets: calibrated class probabilities, the predicted label and its uncertainty."""
    probabilities: dict[str, float]
    label: str
    confidence: float                   # calibrated probability of ``label``
    uncertainty: float                  # MC-dropout standard deviation of that probability (0 without dropout)
    entropy: float                      # predictive entropy of the MC mean, nats
    decision: str = "answer"            # "answer" | "refer" (models/referral.py): lead with it
    reasons: list[str] = field(default_factory=list)       # reason codes of a referral (referral.REASONS)
    reason_text: list[str] = field(default_factory=list)   # the same in plain words
    ood_score: float | None = None      # combined out-of-distribution score (models/ood.py); None = no detector
    ood_threshold: float | None = None  # the detector's threshold on that score
    ood_branch: str | None = None       # the depth that saw the film as strangest (its largest z-score)
    ood_z: dict[str, float] | None = None   # each summed branch's z-score (how unusual at that depth)
    out_of_distribution: bool = False   # above the detector's threshold: do not trust this prediction
    warning: str | None = None          # what to tell the reader when out of distribution

    @property
    def referred(self) -> bool:
        return self.decision == "refer"

    def refer_for(self, code: str) -> None:
        """Add a referral reason (a key of ``referral.REASONS``) found after the prediction, e.g. the folder's."""
        if code not in self.reasons:
            self.reasons.append(code)
            self.reason_text.extend(referral.in_words((code,)))
        self.decision = "refer"

    def as_dict(self) -> dict:
        """The API's answer: the decision and its reasons first; ``answer`` is the label only when the model
        answers (None when referred); the model's output (label, confidence, probabilities) stays, secondary."""
        first = {"decision": self.decision, "reasons": self.reasons, "reason_text": self.reason_text,
                 "answer": self.label if self.decision == "answer" else None}
        return {**first, **{k: v for k, v in self.__dict__.items() if k not in first}}


@dataclass
class Predictor:
    model: object
    card: object                        # models.ModelCard
    temperature: float = 1.0
    weights_id: str = "untrained"
    source: str = ""                    # where the weights came from, shown on the page / in the report
    calibrated: bool = False            # a temperature was fitted (calibration.json beside the weights)
    mc_passes: int = 20
    refer_above: float = referral.REFER_ABOVE   # MC std of the predicted-class probability that triggers "refer"
                                        # when the folder has no error-level rule (``selective``)
    selective: object = None            # models.selective.SelectiveRule fitted after training (selective.json)
    mc_batch: int = 32                  # images per MC trunk call (the head samples all their passes at once)
    ood: object = None                  # models.ood.OODDetector fitted after training (ood.npz), or None
    _mc: object = field(default=None, repr=False)
    _cams: dict = field(default_factory=dict, repr=False)
    _features: object = field(default=None, repr=False)    # x → pooled features at each depth, for the OOD score

    @classmethod
    def from_weights_dir(cls, folder: str | Path, **kw) -> "Predictor":
        """Load ``model_config.json`` + ``model.weights.h5`` (weights only, no pickle) and the fitted
        temperature; raises FileNotFoundError / ValueError with the fix when they are missing or do not fit."""
        saved = ModelFolder(folder)
        model, card = saved.load()
        return cls(model, card, saved.temperature(), saved.weights_sha256(), source=str(folder),
                   calibrated=saved.calibrated, ood=saved.detector(), selective=saved.selective(), **kw)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.card.class_names)

    @property
    def task(self) -> Task:
        return get_task(self.card.task)

    def load(self, data: bytes, name: str = "<upload>") -> np.ndarray:
        """Bytes of one PNG/JPEG/DICOM → (S, S) uint8 at the model's input size (ImageReadError if bad, blank
        or constant images included)."""
        from ..data import ImageReadError
        if len(data) > MAX_UPLOAD_BYTES:
            raise ImageReadError(name, f"refused: {len(data) / 1e6:.1f} MB exceeds the "
                                       f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB upload limit")
        img = decode_image(data, name, self.card.color)
        refuse_blank(img, name)
        return fit_size(img, self.card.image_size, self.card.clahe, self.card.geometry)

    def age_outside(self, data: bytes) -> bool | None:
        """Whether the DICOM header of ``data`` puts the patient outside the card's training population (True /
        False / None = unknown); the age itself never leaves ``data.population``."""
        from ..data.population import age_outside
        return age_outside(data, self.card.population_age)

    def _inputs(self, grays: np.ndarray):
        from ..data import to_model_input
        from ..models import BACKBONES
        return to_model_input(np.asarray(grays), BACKBONES[self.card.backbone].preprocess).numpy()

    def _forward(self, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities; a direct call per chunk (``model.predict`` costs more than a small batch)."""
        return np.concatenate([np.asarray(self.model(x[s:s + batch_size], training=False))
                               for s in range(0, len(x), batch_size)])

    def predict(self, grays: np.ndarray, mc: bool = True, threshold: float | None = None,
                age_outside=None) -> list[Prediction]:
        """Calibrated predictions for a batch of (S, S) uint8 images by the task's decision rule at
        ``threshold`` (default: the card's); ``mc`` adds MC-dropout uncertainty. Each gets a decision, answer or
        refer, by ``models.referral`` from the out-of-distribution detector, the uncertainty and ``age_outside``
        (per image True / False / None, from ``age_outside(bytes)``). A multi-label model's label is its most
        probable finding."""
        from ..models.uncertainty import mc_dropout_model, mc_predict, predictive_entropy
        x = self._inputs(grays)
        task = self.task
        proba = task.calibrate(self._forward(x), self.temperature)
        std = np.zeros_like(proba)
        entropy = np.zeros(len(x), np.float32)
        if mc and self.mc_passes > 1:
            if self._mc is None:
                self._mc = mc_dropout_model(self.model) or False
            if self._mc:
                r = mc_predict(self._mc, x, self.mc_passes, batch_size=self.mc_batch, activation=task.activation)
                mean = task.calibrate(r["mean"], self.temperature)
                std, entropy = r["std"], predictive_entropy(mean, task.activation)
        decided = task.decide(proba, self.card.threshold if threshold is None else threshold)
        labels = [int(k) for k in task.explained(proba, decided)]
        sd = np.array([s[k] for s, k in zip(std, labels)], float)
        verdict = self.assess(grays)
        flags = np.zeros(len(x), bool) if verdict is None else verdict.flagged
        confidence = np.array([p[k] for p, k in zip(proba, labels)], float)
        uncertain = ~self.selective.answers(confidence) if self.selective is not None else \
            referral.mc_uncertain(sd, self.refer_above)
        codes = referral.reasons(flags, uncertain, age_outside)
        out = []
        for i, (p, k) in enumerate(zip(proba, labels)):
            branch = verdict.loudest[i] if verdict is not None and flags[i] else None
            pred = Prediction({n: float(v) for n, v in zip(self.class_names, p)}, self.class_names[k],
                              float(p[k]), float(sd[i]), float(entropy[i]), referral.decision(codes[i]),
                              list(codes[i]), referral.in_words(codes[i], branch))
            if verdict is not None:
                pred.ood_score, pred.ood_threshold = float(verdict.score[i]), float(self.ood.threshold)
                pred.ood_branch, pred.out_of_distribution = branch, bool(flags[i])
                pred.ood_z = {b: float(verdict.z[i, self.ood.branches.index(b)]) for b in self.ood.combine}
                pred.warning = OOD_WARNING if flags[i] else None
            out.append(pred)
        return out

    def confidence_rule(self) -> str:
        """The "uncertain" reason's rule in words: the error level and its threshold, or the MC-dropout limit."""
        if self.selective is not None:
            return (f"refer below a calibrated probability of {self.selective.min_confidence:.3f} — the threshold "
                    f"that keeps the answered holdout films' error bounded by {self.selective.error_level:.0%}")
        return f"refer when the MC-dropout sd is above {self.refer_above:.2f} (no error level beside the weights)"

    def folder_test(self, grays: np.ndarray, label: int | None = None):
        """The folder shift test (``models/shift.py``) of decoded films against the model's holdout films — those of
        class ``label`` when the films are known to be of one class (a folder of one class is not a shift) — and
        the films' combined out-of-distribution scores: (ShiftTest, scores), or None without a detector that keeps
        its holdout's scores (and classes, for ``label``) or with fewer than ``MIN_FILMS`` films on a side."""
        det = self.ood
        if det is None or det.reference_z is None or (label is not None and det.reference_labels is None):
            return None
        from ..models.shift import MIN_FILMS, c2st
        reference = det.reference(label)
        if min(len(reference), len(grays)) < MIN_FILMS:
            return None
        verdict = self.assess(grays)
        return c2st(reference, verdict.z[:, det.summed]), verdict.score

    def assess(self, grays: np.ndarray):
        """What the out-of-distribution detector says of decoded images (``models.ood.Assessment``), or None
        without a fitted detector."""
        if self.ood is None:
            return None
        from ..models import BACKBONES
        if self._features is None:
            self._features = self.ood.branch_model(self.model)
        return self.ood.assess(self.ood.image_values(self.model, np.asarray(grays),
                                                     BACKBONES[self.card.backbone].preprocess, self._features))

    def explainer(self, method: str):
        """The (cached) explainer object of ``method`` for this model (from the explainer registry)."""
        if method not in self._cams:
            self._cams[method] = make_explainer(method, self.model, self.card.backbone, self.card.target_layer)
        return self._cams[method]

    def explain(self, grays: np.ndarray, method: str = "gradcam", targets=None) -> np.ndarray:
        """Maps (B, S, S) in [0, 1] of ``method`` for the predicted class (or ``targets``)."""
        x = self._inputs(grays)
        if targets is None:
            targets = self._forward(x).argmax(1)
        return np.asarray(self.explainer(method)(x, targets=targets), np.float32)


def refuse_blank(img: np.ndarray, name: str = "<upload>") -> None:
    """A blank or constant image is bad input, not a film to answer: ImageReadError with the reason."""
    from ..data import ImageReadError
    if img.size and int(img.max()) - int(img.min()) <= 1:
        raise ImageReadError(name, f"refused: the image is blank (every pixel is gray level {int(img.min())}); "
                                   "send the film itself")


def overlay_png(gray: np.ndarray, heat: np.ndarray, fraction: float = 0.05) -> bytes:
    """PNG bytes of the red top-``fraction`` overlay of ``heat`` on ``gray``."""
    from ..explain.overlay import png_bytes, red_overlay
    return png_bytes(red_overlay(gray, heat, fraction))


def phantom_predictor(folder: str | Path | None = None, seed: int = 42, n_train: int = 120,
                      epochs: tuple[int, int] = (6, 2)) -> Predictor:
    """The phantom model (``models.phantom_model``: cxr-small on synthetic phantoms at 64 px, a minute on a CPU),
    cached in ``folder`` (default ``$XAI_CXR_CACHE`` or ``~/.cache/xai_cxr``)/phantom_model: what the app and the
    API serve when no trained weights exist, so that they work offline, clearly labelled as a phantom model."""
    from ..models.phantom_model import train_phantom_model
    base = Path(folder or os.environ.get("XAI_CXR_CACHE", Path.home() / ".cache" / "xai_cxr"))
    weights = train_phantom_model(base / "phantom_model", seed, n_train, epochs)
    p = Predictor.from_weights_dir(weights)
    p.source = f"phantom model (synthetic images, not for real X-rays): {weights}"
    return p


def load_predictor(weights_dir: str | Path | None = "saved_weights", allow_phantom: bool = True) -> Predictor:
    """The trained model in ``weights_dir``, or — when there is none and ``allow_phantom`` — the phantom model."""
    if weights_dir and ModelFolder(weights_dir).weights.is_file():
        return Predictor.from_weights_dir(weights_dir)
    if not allow_phantom:
        raise FileNotFoundError(f"{ModelFolder(weights_dir or 'saved_weights').weights} not found: "
                                "train first (`xai-cxr train` or `xai-cxr demo`)")
    return phantom_predictor()
