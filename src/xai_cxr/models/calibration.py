"""Calibrated confidence: temperature scaling (Guo et al. 2017) fitted on validation data, the expected
calibration error and reliability diagram, and accuracy at coverage (refer the least certain cases)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .files import CALIBRATION

_EPS = 1e-7


def to_logits(proba: np.ndarray, activation: str = "softmax") -> np.ndarray:
    """Logits that reproduce ``proba``: log p for softmax (equal to the true logits up to a per-row constant,
    which softmax ignores), log(p / (1 - p)) for sigmoid outputs."""
    # clipped only where a log would be infinite (float32's smallest subnormal, float64's last step below 1): a
    # coarser clip made distinct saturated outputs equal, and the ROC-AUC of the scaled probabilities then moved
    p = np.clip(np.asarray(proba, np.float64), 1e-45, 1 - 2 ** -53)
    return np.log(p / (1 - p)) if activation == "sigmoid" else np.log(p)


def apply_temperature(proba: np.ndarray, temperature: float, activation: str = "softmax") -> np.ndarray:
    """Probabilities of logits / T. T > 1 softens over-confident outputs; the predicted class never changes."""
    z = to_logits(proba, activation) / float(temperature)
    # float64: a float32 result would merge outputs that T > 1 moved closer
    if activation == "sigmoid":
        return 1 / (1 + np.exp(-z))
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(proba: np.ndarray, y: np.ndarray, activation: str) -> float:
    p = np.clip(proba.astype(np.float64), _EPS, 1 - _EPS)
    if activation == "sigmoid":
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def fit_temperature(proba: np.ndarray, y: np.ndarray, activation: str = "softmax") -> float:
    """The T in [0.05, 20] minimising the negative log-likelihood of ``y`` (class indices, or multi-hot when
    ``activation`` is "sigmoid") under ``apply_temperature(proba, T)``; fit it on validation data, never on the test
    split."""
    from scipy.optimize import minimize_scalar
    y = np.asarray(y)
    res = minimize_scalar(lambda log_t: _nll(apply_temperature(proba, np.exp(log_t), activation), y, activation),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def reliability_bins(y: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> dict:
    """Top-label confidence vs accuracy in ``n_bins`` equal-width confidence bins (empty bins give NaN)."""
    conf, correct = proba.max(1), (proba.argmax(1) == np.asarray(y)).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        acc = np.bincount(idx, correct, n_bins) / count
        mean_conf = np.bincount(idx, conf, n_bins) / count
    return {"edges": edges, "count": count, "accuracy": acc, "confidence": mean_conf}


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b| over top-label confidence bins."""
    b = reliability_bins(y, proba, n_bins)
    keep = b["count"] > 0
    return float((b["count"][keep] * np.abs(b["accuracy"][keep] - b["confidence"][keep])).sum() / b["count"].sum())


def accuracy_at_coverage(y: np.ndarray, pred: np.ndarray, uncertainty: np.ndarray,
                         coverages=(1.0, 0.9, 0.8, 0.7, 0.5)) -> dict[str, float]:
    """Accuracy on the ``c`` most certain fraction of cases (the rest referred to a reader), for each c.
    Ties in ``uncertainty`` are broken by index so the result is deterministic."""
    y, pred, u = np.asarray(y), np.asarray(pred), np.asarray(uncertainty)
    order = np.lexsort((np.arange(len(u)), u))
    out = {}
    for c in coverages:
        k = max(1, int(round(c * len(u))))
        keep = order[:k]
        out[f"{c:.0%}"] = float((y[keep] == pred[keep]).mean())
    return out


def calibration_report(y_val, proba_val, y_test, proba_test, activation: str = "softmax") -> dict:
    """Fit T on validation, then report NLL and ECE on the test split before and after, plus accuracy at
    coverage ranked by the calibrated confidence (single-label tasks only)."""
    t = fit_temperature(proba_val, y_val, activation)
    cal = apply_temperature(proba_test, t, activation)
    out = {"temperature": round(t, 4), "fitted_on": "validation",
           "test_nll_before": _nll(proba_test, np.asarray(y_test), activation),
           "test_nll_after": _nll(cal, np.asarray(y_test), activation)}
    if activation != "sigmoid":
        out.update(test_ece_before=expected_calibration_error(y_test, proba_test),
                   test_ece_after=expected_calibration_error(y_test, cal),
                   accuracy_at_coverage=accuracy_at_coverage(y_test, cal.argmax(1), 1 - cal.max(1)))
    return out


def plot_reliability(y, proba_before, proba_after, n_bins: int = 10):
    """Reliability diagram: accuracy per confidence bin before and after temperature scaling."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    for proba, name, style in ((proba_before, "uncalibrated", "o-"), (proba_after, "temperature-scaled", "s-")):
        b = reliability_bins(y, proba, n_bins)
        keep = b["count"] > 0
        ax.plot(b["confidence"][keep], b["accuracy"][keep], style,
                label=f"{name} (ECE {expected_calibration_error(y, proba, n_bins):.3f})")
    ax.set(xlabel="confidence (top class)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02),
           title="Reliability on the test split")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def save_temperature(folder: str | Path, temperature: float, **extra) -> Path:
    """Write ``calibration.json`` beside the weights (atomically)."""
    from ..config import write_json_atomic
    return write_json_atomic({"temperature": temperature, **extra}, Path(folder) / CALIBRATION)


def load_temperature(folder: str | Path) -> float:
    """The fitted temperature, or 1.0 (no scaling) for weights trained before calibration existed."""
    path = Path(folder) / CALIBRATION
    return float(json.loads(path.read_text())["temperature"]) if path.is_file() else 1.0
