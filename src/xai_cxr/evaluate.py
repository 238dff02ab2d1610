"""Evaluation on the test split: accuracy, precision, recall (sensitivity), specificity, F1, ROC-AUC,
confusion matrix, per-class report and bootstrap 95% CIs (scikit-learn does the arithmetic)."""
from __future__ import annotations

import numpy as np


def operating_threshold(y_true, p_pos, rule: str) -> float:
    """The decision threshold on the positive-class probability that ``rule`` picks on validation data:
    "sensitivity:0.95" = the highest threshold whose sensitivity is at least 0.95 (a screening tool fixes the
    share of disease it may miss), "specificity:0.9" = the lowest whose specificity is at least 0.9, "youden" =
    the one maximising sensitivity + specificity - 1. Thresholds are taken from scikit-learn's ``roc_curve``."""
    from sklearn.metrics import roc_curve
    fpr, tpr, thr = roc_curve(np.asarray(y_true), np.asarray(p_pos), drop_intermediate=False)   # every score
    thr = np.minimum(thr, 1.0)                            # roc_curve's first threshold is +inf
    name, _, value = rule.partition(":")
    if name == "youden" and not value:
        return float(thr[np.argmax(tpr - fpr)])
    try:
        target = float(value)
    except ValueError:
        target = float("nan")
    if name not in ("sensitivity", "specificity") or not 0 < target <= 1:
        raise ValueError(f"operating point {rule!r}: use sensitivity:<0-1>, specificity:<0-1> or youden")
    if name == "sensitivity":
        return float(thr[np.argmax(tpr >= target)])       # tpr rises as the threshold falls: the first is highest
    return float(thr[np.nonzero(1 - fpr >= target)[0][-1]])


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


def multiclass_metrics(y_true, proba, class_names, n_boot: int = 1000, seed: int = 42) -> dict:
    """K > 2 classes: accuracy, macro precision/recall/F1, one-vs-rest macro ROC-AUC, K×K confusion matrix,
    a bootstrap CI for accuracy, and the collapsed "any pneumonia vs normal" binary metrics (class 0 = normal)."""
    from sklearn import metrics as skm
    y_true, proba = np.asarray(y_true).astype(int), np.asarray(proba)
    k = len(class_names)
    y_pred = proba.argmax(1)
    present = np.unique(y_true)
    auc = (float(skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=list(range(k))))
           if len(present) == k else float("nan"))
    rng = np.random.default_rng(seed)
    correct = (y_pred == y_true).astype(float)
    accs = [correct[rng.integers(0, len(correct), len(correct))].mean() for _ in range(n_boot)]
    out = {"accuracy": float(skm.accuracy_score(y_true, y_pred)),
           "precision": float(skm.precision_score(y_true, y_pred, average="macro", labels=list(range(k)),
                                                  zero_division=0)),
           "recall": float(skm.recall_score(y_true, y_pred, average="macro", labels=list(range(k)), zero_division=0)),
           "f1": float(skm.f1_score(y_true, y_pred, average="macro", labels=list(range(k)), zero_division=0)),
           "roc_auc": auc, "averaging": "macro over classes (one-vs-rest for ROC-AUC)",
           "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=list(range(k))).tolist(),
           "accuracy_ci95": [float(v) for v in np.percentile(accs, [2.5, 97.5])], "n_bootstrap": n_boot,
           "per_class": skm.classification_report(y_true, y_pred, labels=list(range(k)), target_names=list(class_names),
                                                  output_dict=True, zero_division=0)}
    out["pneumonia_vs_normal"] = binary_metrics(y_true > 0, 1.0 - proba[:, 0], 0.5)
    return out


def multilabel_metrics(y_true, proba, label_names, threshold: float = 0.5) -> dict:
    """Per label: prevalence, AUROC (NaN when the test split has one class only), precision, recall, F1 at
    ``threshold``; macro means over labels with a defined value."""
    from sklearn import metrics as skm
    y_true, proba = np.asarray(y_true).astype(int), np.asarray(proba)
    per = {}
    for k, name in enumerate(label_names):
        y, p = y_true[:, k], proba[:, k]
        pred = (p >= threshold).astype(int)
        per[name] = {"positives": int(y.sum()),
                     "auroc": float(skm.roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
                     "precision": float(skm.precision_score(y, pred, zero_division=0)),
                     "recall": float(skm.recall_score(y, pred, zero_division=0)),
                     "f1": float(skm.f1_score(y, pred, zero_division=0))}
    macro = {key: float(np.nanmean([v[key] for v in per.values()])) if any(np.isfinite(v[key]) for v in per.values())
             else float("nan") for key in ("auroc", "precision", "recall", "f1")}
    return {"n_images": int(len(y_true)), "task": "multilabel", "threshold": threshold, "labels": list(label_names),
            "per_label": per, "macro": macro, "roc_auc": macro["auroc"], "f1": macro["f1"],
            "precision": macro["precision"], "recall": macro["recall"],
            "exact_match": float(((proba >= threshold) == y_true.astype(bool)).all(1).mean())}


def binary_report(y_true, proba, class_names=("NORMAL", "PNEUMONIA"), threshold: float = 0.5,
                  n_boot: int = 1000, seed: int = 42) -> dict:
    """Two classes: point metrics of the positive class (index 1) at ``threshold``, bootstrap CIs and the
    per-class report."""
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
    text = _format_core(m)
    cal = m.get("calibration")
    if cal and "test_ece_before" in cal:
        cov = "  ".join(f"{k} {v:.3f}" for k, v in cal["accuracy_at_coverage"].items())
        text += (f"\ncalibration: temperature {cal['temperature']:.2f} (fitted on {cal['fitted_on']}), "
                 f"test ECE {cal['test_ece_before']:.3f} → {cal['test_ece_after']:.3f}"
                 f"\naccuracy at coverage (least confident referred): {cov}")
    return text


def _format_core(m: dict) -> str:
    if m.get("task") == "multilabel":
        import pandas as pd
        table = pd.DataFrame(m["per_label"]).T
        return (f"{table.round(3).to_string()}\nmacro AUROC {m['macro']['auroc']:.3f}  macro F1 {m['macro']['f1']:.3f}"
                f"  exact match {m['exact_match']:.3f}  (n={m['n_images']}, threshold {m['threshold']})")
    if "classes" in m:
        return _format_multiclass(m)
    lo, hi = m["accuracy_ci95"]
    alo, ahi = m["roc_auc_ci95"]
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    return (f"accuracy {m['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]  ROC-AUC {m['roc_auc']:.3f} [{alo:.3f}, {ahi:.3f}]\n"
            f"precision {m['precision']:.3f}  recall/sensitivity {m['recall']:.3f}  "
            f"specificity {m['specificity']:.3f}  F1 {m['f1']:.3f}\n"
            f"confusion matrix (rows true, cols pred): TN {tn}  FP {fp} | FN {fn}  TP {tp}  (n={m['n_images']})"
            + (f"\nat the decision threshold {m['threshold']:.3f} (not 0.5)" if m.get("threshold", 0.5) != 0.5 else ""))


def _format_multiclass(m: dict) -> str:
    import pandas as pd
    lo, hi = m["accuracy_ci95"]
    table = pd.DataFrame({c: m["per_class"][c] for c in m["classes"]}).T[["precision", "recall", "f1-score", "support"]]
    cm = pd.DataFrame(m["confusion_matrix"], index=[f"true {c}" for c in m["classes"]], columns=m["classes"])
    b = m["pneumonia_vs_normal"]
    return (f"accuracy {m['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]  macro F1 {m['f1']:.3f}  "
            f"macro ROC-AUC (one-vs-rest) {m['roc_auc']:.3f}  (n={m['n_images']})\n"
            f"{table.round(3).to_string()}\nconfusion matrix:\n{cm.to_string()}\n"
            f"any pneumonia vs normal: accuracy {b['accuracy']:.3f}  sensitivity {b['recall']:.3f}  "
            f"specificity {b['specificity']:.3f}  ROC-AUC {b['roc_auc']:.3f}")


def plot_confusion(m: dict, class_names=("NORMAL", "PNEUMONIA")):
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ConfusionMatrixDisplay(np.array(m["confusion_matrix"]), display_labels=list(class_names)).plot(
        ax=ax, colorbar=False, cmap="Blues")
    ax.set_title("Test confusion matrix")
    fig.tight_layout()
    return fig


def plot_roc(y_true, proba, class_names=("NORMAL", "PNEUMONIA")):
    """ROC of the positive class (binary, ``proba`` (N, 2) or (N,)) or one-vs-rest per class (K > 2)."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay
    proba, y_true = np.asarray(proba), np.asarray(y_true)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    if y_true.ndim == 2:                                   # multi-label: one curve per label present
        for k, name in enumerate(class_names):
            if len(np.unique(y_true[:, k])) == 2:
                RocCurveDisplay.from_predictions(y_true[:, k], proba[:, k], ax=ax, name=name)
    elif proba.ndim == 1 or proba.shape[1] == 2:
        RocCurveDisplay.from_predictions(y_true, proba if proba.ndim == 1 else proba[:, 1], ax=ax, name="model")
    else:
        for k, name in enumerate(class_names):
            if len(np.unique(y_true == k)) == 2:
                RocCurveDisplay.from_predictions(y_true == k, proba[:, k], ax=ax, name=f"{name} vs rest")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_title("Test ROC")
    fig.tight_layout()
    return fig


def plot_error_level(sets: dict[str, tuple[np.ndarray, np.ndarray]], level: float, min_confidence: float):
    """Error of the answered films against the share answered when films are answered from the most confident down
    (name → (confidence (N,), correct (N,) bool)), the error level drawn and each set's point at the rule's
    ``min_confidence`` marked: where the stated level holds and where, off the training distribution, it does not."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for name, (conf, correct) in sets.items():
        conf, correct = np.asarray(conf, float), np.asarray(correct, bool)
        order = np.argsort(-conf, kind="stable")
        n = np.arange(1, len(conf) + 1)
        line, = ax.plot(n / len(conf), np.cumsum(~correct[order]) / n, lw=1.5, label=name)
        answered = conf >= min_confidence
        if answered.any():
            ax.plot(answered.mean(), 1 - correct[answered].mean(), "o", color=line.get_color())
    ax.axhline(level, color="k", ls="--", lw=1.2, label=f"error level {level:.0%}")
    ax.set_xlabel("share of films answered (most confident first; dot: the rule's threshold)")
    ax.set_ylabel("error of the answered films")
    ax.set_ylim(0, None)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_ood_scores(scores: dict[str, np.ndarray], threshold: float, bins: int = 40):
    """Histograms of the out-of-distribution score of each film set (name → (N,)) with the detector's threshold
    drawn; the legend gives each set's flagged share."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    finite = np.concatenate([np.asarray(s, float) for s in scores.values() if len(s)])
    hi = float(np.quantile(finite, 0.99)) if len(finite) else threshold * 2
    edges = np.linspace(min(finite.min(initial=0.0), 0.0), max(hi, threshold * 1.5), bins + 1)
    for name, s in scores.items():
        s = np.asarray(s, float)
        ax.hist(np.clip(s, edges[0], edges[-1]), edges, alpha=0.5, density=True,
                label=f"{name}: {np.mean(s > threshold):.0%} of {len(s)} flagged")
    ax.axvline(threshold, color="k", ls="--", lw=1.2, label=f"threshold {threshold:.1f}")
    ax.set_xlabel("combined score (sum of z-scores; larger = less like the training films; clipped)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
