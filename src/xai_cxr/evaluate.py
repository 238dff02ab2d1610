"""Evaluation on the test split: accuracy, precision, recall (sensitivity), specificity, F1, ROC-AUC,
confusion matrix, per-class report and bootstrap 95% CIs (scikit-learn does the arithmetic)."""
from __future__ import annotations

import numpy as np


def predict_proba(model, dataset) -> np.ndarray:
    """Class probabilities (N, K) over a tf.data dataset of images or (images, labels)."""
    return model.predict(dataset, verbose=0)


def binary_metrics(y_true, p_pos, threshold: float = 0.5) -> dict:
    """Point metrics for the positive class (index 1) at ``threshold`` on its probability."""
    from sklearn import metrics as skm
    y_true = np.asarray(y_true).astype(int)
    y_pred = (np.asarray(p_pos) >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    both = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y_true, p_pos)) if both else float("nan"),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def bootstrap_ci(y_true, p_pos, threshold: float = 0.5, n_boot: int = 1000, seed: int = 42,
                 level: float = 0.95) -> dict:
    """Percentile bootstrap CIs for accuracy and ROC-AUC (resampling images with replacement, seeded)."""
    from sklearn.metrics import roc_auc_score
    y_true, p_pos = np.asarray(y_true).astype(int), np.asarray(p_pos)
    rng = np.random.default_rng(seed)
    accs, aucs = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y_true), len(y_true))
        yt, pp = y_true[idx], p_pos[idx]
        accs.append(np.mean((pp >= threshold) == yt))
        if len(np.unique(yt)) == 2:
            aucs.append(roc_auc_score(yt, pp))
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {"accuracy_ci95": [float(v) for v in np.percentile(accs, q)],
            "roc_auc_ci95": [float(v) for v in np.percentile(aucs, q)] if aucs else [float("nan")] * 2,
            "n_bootstrap": n_boot}


def evaluate_predictions(y_true, proba, class_names=("NORMAL", "PNEUMONIA"), threshold: float = 0.5,
                         n_boot: int = 1000, seed: int = 42) -> dict:
    """All test metrics as one JSON-ready dict (positive class = index 1)."""
    from sklearn.metrics import classification_report
    proba = np.asarray(proba)
    p_pos = proba[:, 1]
    y_pred = (p_pos >= threshold).astype(int)
    out = {"n_images": int(len(y_true)), "threshold": threshold, "positive_class": class_names[1]}
    out.update(binary_metrics(y_true, p_pos, threshold))
    out.update(bootstrap_ci(y_true, p_pos, threshold, n_boot, seed))
    out["per_class"] = classification_report(y_true, y_pred, labels=list(range(len(class_names))),
                                             target_names=list(class_names), output_dict=True, zero_division=0)
    return out


def format_metrics(m: dict) -> str:
    lo, hi = m["accuracy_ci95"]
    alo, ahi = m["roc_auc_ci95"]
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    return (f"accuracy {m['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]  ROC-AUC {m['roc_auc']:.3f} [{alo:.3f}, {ahi:.3f}]\n"
            f"precision {m['precision']:.3f}  recall/sensitivity {m['recall']:.3f}  "
            f"specificity {m['specificity']:.3f}  F1 {m['f1']:.3f}\n"
            f"confusion matrix (rows true, cols pred): TN {tn}  FP {fp} | FN {fn}  TP {tp}  (n={m['n_images']})")


def plot_confusion(m: dict, class_names=("NORMAL", "PNEUMONIA")):
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ConfusionMatrixDisplay(np.array(m["confusion_matrix"]), display_labels=list(class_names)).plot(
        ax=ax, colorbar=False, cmap="Blues")
    ax.set_title("Test confusion matrix")
    fig.tight_layout()
    return fig


def plot_roc(y_true, p_pos):
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    RocCurveDisplay.from_predictions(y_true, p_pos, ax=ax, name="model")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_title("Test ROC")
    fig.tight_layout()
    return fig
