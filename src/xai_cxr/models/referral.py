"""Refer instead of guess: one rule that turns what is known about a film into "answer" or "refer", with reasons.

A film is referred to a reader when any of these holds (each is a reason; several may hold at once):
- ``out_of_distribution``: the out-of-distribution detector (``models/ood.py``) flags it — unlike the training
  films at some depth of the network or at the input;
- ``uncertain``: the model is not confident enough to answer at the error level stated beside its weights
  (``models/selective.py``: its calibrated probability is under the threshold that keeps the answered holdout films'
  error bounded by that level); folders written before that rule refer by the MC-dropout standard deviation instead
  (above ``REFER_ABOVE``), a limit that in practice almost never fires;
- ``age``: its DICOM header gives an age outside the model's training population (``data/population.py``);
- ``foreign_folder``: it came in a folder of films that, as a whole, the folder shift test (``models/shift.py``)
  finds unlike the model's holdout films — the error level is stated for Kermany-like films, so no answer in such a
  folder has its backing (``evaluate``, and the app for ten films or more; a film alone never gets this reason).
Otherwise the model answers. The report, the app, the API, ``explain`` and ``evaluate`` all use this rule.
"""
from __future__ import annotations

import numpy as np

from .ood import CONTRASTIVE_BRANCH, ENERGY_BRANCH, ERROR_BRANCH, HEAD_BRANCH, LATENT_BRANCH

REFER_ABOVE = 0.15          # MC-dropout sd of the predicted class's probability that triggers "refer"
REASONS = {                 # code → the reason in plain words
    "out_of_distribution": "this film is unlike the films the model was trained on",
    "uncertain": "the model is not confident enough to answer at its stated error level",
    "age": "the patient's age (DICOM header) is outside the model's training population",
    "foreign_folder": "the films it came with are, as a group, unlike the training films (folder shift test)",
}
BRANCH_WORDS = {ERROR_BRANCH: "the image itself (the autoencoder rebuilds it badly)",
                LATENT_BRANCH: "the image itself (coded unlike any training film)",
                CONTRASTIVE_BRANCH: "the image itself (unlike the training films to an encoder trained on them alone)",
                HEAD_BRANCH: "the features the decision is made from", ENERGY_BRANCH: "the output logits"}


def reasons(out_of_distribution, uncertain, age_outside=None) -> list[tuple]:
    """Per film, the tuple of reason codes (empty = answer). ``out_of_distribution`` (N,) bool, ``uncertain`` (N,)
    bool (below the error level's confidence, or ``mc_uncertain``), ``age_outside`` (N,) of True / False / None
    (unknown age: no reason) or None for all."""
    ood = np.asarray(out_of_distribution, bool)
    unc = np.asarray(uncertain, bool)
    age = [None] * len(ood) if age_outside is None else list(age_outside)
    return [tuple(code for code, hit in (("out_of_distribution", o), ("uncertain", u), ("age", a is True)) if hit)
            for o, u, a in zip(ood, unc, age)]


def mc_uncertain(sd, refer_above: float = REFER_ABOVE) -> np.ndarray:
    """The rule of folders without an error level: the MC-dropout sd of the predicted class above ``refer_above``."""
    return np.asarray(sd, float) > refer_above


def decision(codes: tuple) -> str:
    return "refer" if codes else "answer"


def in_words(codes: tuple, branch: str | None = None) -> list[str]:
    """The reasons in plain words; the out-of-distribution one says which depth saw the film as strange."""
    out = []
    for code in codes:
        text = REASONS[code]
        if code == "out_of_distribution" and branch:
            text += f" (most visible in {BRANCH_WORDS.get(branch, f'the network at {branch}')})"
        out.append(text)
    return out


def summary(codes: list[tuple], correct: np.ndarray | None = None) -> dict:
    """Share of films answered (the coverage), referred, and referred for each reason (a film may have several);
    with ``correct`` (N,) bool, the accuracy of the answered and of the referred films."""
    n = max(len(codes), 1)
    answered = np.array([not c for c in codes], bool)
    out = {"coverage": float(answered.sum() / n), "referred": float((~answered).sum() / n)}
    out.update({f"referred_{code}": sum(code in c for c in codes) / n for code in REASONS})
    if correct is not None and len(codes):
        correct = np.asarray(correct, bool)
        out["accuracy_answered"] = float(correct[answered].mean()) if answered.any() else None
        out["accuracy_referred"] = float(correct[~answered].mean()) if (~answered).any() else None
        out["accuracy_all"] = float(correct.mean())
    return out
