"""Answer at a stated error level: selective classification with guaranteed risk (Geifman & El-Yaniv, NeurIPS
2017, "SGR").

The model answers a film only when its calibrated probability of the predicted class is at least
``min_confidence``; the threshold is the lowest one whose *upper confidence bound* on the error of the answered
holdout films stays under the user's ``error_level``. Its guarantee: on films exchangeable with the holdout
(Kermany-like films), with probability ≥ 1 − ``delta`` over the draw of the holdout, the answered films are wrong
at most ``error_level`` of the time. Off the training distribution it guarantees nothing — that is the
out-of-distribution detector's part (``models/ood.py``); both feed ``models/referral``.

The search is the paper's with one test before it: answering every film is tested first (the bound is not
monotone in coverage, and a small holdout with few errors passes there while the search's first, half-way test
fails), then a binary search over the holdout's sorted confidences; at most k = ⌈log₂ m⌉ + 1 thresholds are tested,
each bound an exact one-sided (Clopper-Pearson) binomial upper limit at level ``delta`` / k (a union bound over the
tested thresholds); where the paper returns the last threshold tested, this returns the largest coverage whose bound
met the level (or none: refer every film). The films the detector already refers are left out of the
fit: the bound is on the films the whole rule answers. MAPIE's risk control (Learn-then-Test) answers the same
question when "answered" is its positive prediction and "right" its label (its precision is then the accuracy of the
answered films), over a fixed grid of thresholds with Hoeffding-Bentkus p-values; the search here tests fewer
thresholds with exact binomial limits (scipy's beta quantiles). tests/test_selective.py checks the two on the same
synthetic holdouts: every threshold MAPIE certifies passes the bound here, and this search answers at least as many.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .files import SELECTIVE

DEFAULT_ERROR_LEVEL = 0.05      # answered films ≥ 95% right
DEFAULT_DELTA = 0.05            # the bound holds with probability ≥ 95% over the draw of the holdout


def error_upper_bound(errors: int, n: int, delta: float) -> float:
    """The exact one-sided (1 − delta) upper confidence limit of an error rate seen as ``errors`` in ``n`` (1.0
    when n = 0 or every film is wrong): the Clopper-Pearson limit, a quantile of the beta distribution."""
    if n == 0 or errors >= n:
        return 1.0
    from scipy.stats import beta
    return float(beta.ppf(1 - delta, errors + 1, n - errors))


@dataclass(frozen=True)
class SelectiveRule:
    """Answer when the calibrated probability of the predicted class is ≥ ``min_confidence``."""
    error_level: float              # the error of the answered films the user accepts
    delta: float                    # the bound fails with probability ≤ delta over the holdout's draw
    min_confidence: float           # inf: no threshold met the bound, nothing is answered
    error_bound: float              # the upper confidence limit of the answered error at the threshold (holdout)
    holdout_coverage: float         # share of the (eligible) holdout films answered
    holdout_error: float            # their observed error
    n_holdout: int                  # eligible holdout films the rule was fitted on
    fitted_on: str = "holdout"

    def answers(self, confidence) -> np.ndarray:
        return np.asarray(confidence, float) >= self.min_confidence

    def in_words(self) -> str:
        if not np.isfinite(self.min_confidence):
            return (f"no confidence threshold keeps the answered films' error under {self.error_level:.0%} on the "
                    f"{self.n_holdout} validation films: every film is referred")
        return (f"answers when the calibrated probability of its class is ≥ {self.min_confidence:.3f}: on the "
                f"{self.n_holdout} validation films it answered {self.holdout_coverage:.0%} with error "
                f"{self.holdout_error:.1%}, bounded by {self.error_bound:.1%} ≤ {self.error_level:.0%} "
                f"with {1 - self.delta:.0%} confidence (for films like those only)")

    def save(self, folder: str | Path) -> Path:
        from ..config import write_json_atomic
        d = asdict(self)
        d["min_confidence"] = None if not np.isfinite(self.min_confidence) else self.min_confidence
        return write_json_atomic(d, Path(folder) / SELECTIVE)

    @classmethod
    def load(cls, folder: str | Path) -> "SelectiveRule | None":
        path = Path(folder) / SELECTIVE
        if not path.is_file():
            return None
        d = json.loads(path.read_text())
        d["min_confidence"] = math.inf if d["min_confidence"] is None else d["min_confidence"]
        return cls(**d)


def fit_selective(confidence, correct, error_level: float = DEFAULT_ERROR_LEVEL, delta: float = DEFAULT_DELTA,
                  eligible=None, fitted_on: str = "holdout") -> SelectiveRule:
    """The SGR threshold on holdout films: ``confidence`` (N,) calibrated probability of the predicted class,
    ``correct`` (N,) bool; ``eligible`` (N,) bool: the films the rest of the referral rule answers (default all).
    The largest coverage among the tested thresholds whose bound is ≤ ``error_level``."""
    if not 0 < error_level < 1 or not 0 < delta < 1:
        raise ValueError(f"error_level and delta must be in (0, 1), got {error_level} and {delta}")
    conf = np.asarray(confidence, float)
    ok = np.asarray(correct, bool)
    if eligible is not None:
        keep = np.asarray(eligible, bool)
        conf, ok = conf[keep], ok[keep]
    m = len(conf)
    none = SelectiveRule(error_level, delta, math.inf, 1.0, 0.0, float("nan"), m, fitted_on)
    if m == 0:
        return none
    order = np.argsort(-conf, kind="stable")                  # most confident first
    conf_sorted, errors_sorted = conf[order], np.cumsum(~ok[order])
    k = max(1, math.ceil(math.log2(m))) + 1                   # answer-all, then the binary search's tests

    def test(z: int) -> SelectiveRule | None:                 # answer the films at least as confident as the z-th
        theta = conf_sorted[z]
        n_answered = int(np.searchsorted(-conf_sorted, -theta, side="right"))     # every film ≥ theta (ties in)
        errors = int(errors_sorted[n_answered - 1])
        bound = error_upper_bound(errors, n_answered, delta / k)
        return SelectiveRule(error_level, delta, float(theta), bound, n_answered / m, errors / n_answered, m,
                             fitted_on) if bound <= error_level else None

    # the bound is not monotone in coverage (more films, a tighter bound): answering every film is tested first,
    # where a small holdout with few errors passes while the search's first half-way test would not
    found = test(m - 1)
    if found is not None:
        return found
    best, lo, hi = none, 0, m - 1                             # index into the sorted list: answer the first z + 1
    for _ in range(k - 1):
        z = (lo + hi + 1) // 2
        found = test(z)
        if found is not None:
            if found.holdout_coverage > best.holdout_coverage or not np.isfinite(best.min_confidence):
                best = found
            lo = z                                            # the bound holds: try answering more
        else:
            hi = z - 1                                        # it does not: answer fewer
        if lo >= hi:
            break
    return best


def predicted_confidence(calibrated_proba: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The calibrated probability of each film's predicted class."""
    p = np.asarray(calibrated_proba, float)
    return p[np.arange(len(p)), np.asarray(predicted, int)]
