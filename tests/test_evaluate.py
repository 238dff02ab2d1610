"""Metrics against hand counts; bootstrap CIs."""
import numpy as np
import pytest

from xai_cxr.evaluate import binary_metrics, bootstrap_ci
from xai_cxr.tasks import get_task


def test_binary_metrics_match_hand_counts():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    p = np.array([.1, .6, .2, .3, .9, .8, .4, .7, .95, .55])
    m = binary_metrics(y, p)
    tp, fp, tn, fn = 5, 1, 3, 1                       # counted by hand at threshold 0.5
    assert m["confusion_matrix"] == [[tn, fp], [fn, tp]]
    assert m["accuracy"] == pytest.approx((tp + tn) / 10)
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # AUC = share of (pos, neg) pairs ranked correctly
    pairs = [(a > b) + 0.5 * (a == b) for a in p[y == 1] for b in p[y == 0]]
    assert m["roc_auc"] == pytest.approx(np.mean(pairs))


def test_bootstrap_ci_brackets_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.6 + rng.normal(0.2, 0.25, 200), 0, 1)
    ci = bootstrap_ci(y, p, n_boot=300, seed=1)
    acc = np.mean((p >= 0.5) == y)
    assert ci["accuracy_ci95"][0] < acc < ci["accuracy_ci95"][1]
    assert ci == bootstrap_ci(y, p, n_boot=300, seed=1)


def test_binary_task_metrics_report_per_class():
    y = np.array([0, 1, 1, 0])
    proba = np.array([[.9, .1], [.2, .8], [.6, .4], [.3, .7]])
    m = get_task("binary").metrics(y, proba, ("NORMAL", "PNEUMONIA"), n_boot=50)
    assert m["per_class"]["NORMAL"]["support"] == 2 and m["accuracy"] == 0.5


def test_multiclass_metrics_match_numpy_by_hand():
    from xai_cxr.evaluate import format_metrics
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    proba = rng.dirichlet([1, 1, 1], 60)
    proba[np.arange(60), y] += rng.random(60)                 # better than chance, not perfect
    proba /= proba.sum(1, keepdims=True)
    m = get_task("subtype").metrics(y, proba, ("NORMAL", "BACTERIA", "VIRUS"), n_boot=50)
    pred = proba.argmax(1)
    cm = np.zeros((3, 3), int)
    np.add.at(cm, (y, pred), 1)
    assert m["confusion_matrix"] == cm.tolist()
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    recalls = cm.diagonal() / cm.sum(1)
    precisions = cm.diagonal() / cm.sum(0)
    assert m["recall"] == pytest.approx(recalls.mean())
    assert m["precision"] == pytest.approx(precisions.mean())
    assert m["per_class"]["VIRUS"]["recall"] == pytest.approx(recalls[2])
    b = m["pneumonia_vs_normal"]
    assert b["confusion_matrix"][1][1] == int(((y > 0) & (proba[:, 0] <= 0.5)).sum())
    assert m["accuracy_ci95"][0] <= m["accuracy"] <= m["accuracy_ci95"][1]
    assert "VIRUS" in format_metrics(m) and "any pneumonia vs normal" in format_metrics(m)


def test_operating_threshold_rules_match_hand_counts():
    """Six positives and four negatives: keeping 5/6 positives (sensitivity ≥ 0.8) allows a threshold up to the
    5th-highest positive score; specificity ≥ 0.75 needs 3 of 4 negatives below it; Youden's J peaks where
    sensitivity + specificity is largest (counted by hand below). Sensitivity 0.5 falls inside a run of positives
    with no negative between them (a collinear stretch of the ROC that roc_curve drops by default)."""
    from xai_cxr.evaluate import operating_threshold
    y = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.2, 0.65, 0.3, 0.1, 0.05])
    assert operating_threshold(y, p, "sensitivity:0.8") == pytest.approx(0.6)       # 5 of 6 at ≥ 0.6
    assert operating_threshold(y, p, "sensitivity:1.0") == pytest.approx(0.2)
    assert operating_threshold(y, p, "sensitivity:0.5") == pytest.approx(0.8)       # 3 of 6 at ≥ 0.8
    assert operating_threshold(y, p, "specificity:0.75") == pytest.approx(0.6)      # 0.3, 0.1, 0.05 below it
    # J at 0.7: 4/6 + 4/4 - 1 = 0.667; at 0.6: 5/6 + 3/4 - 1 = 0.583; at 0.2: 1 + 2/4 - 1 = 0.5
    assert operating_threshold(y, p, "youden") == pytest.approx(0.7)
    with pytest.raises(ValueError, match="sensitivity:<0-1>"):
        operating_threshold(y, p, "sensitivity:high")


def test_error_level_figure_draws_the_answered_error_by_coverage_and_the_rules_point_by_hand():
    import matplotlib
    matplotlib.use("Agg")
    from xai_cxr.evaluate import plot_error_level
    conf, correct = [0.6, 0.9, 0.7, 0.8], [True, True, True, False]      # most confident first: 0.9 0.8 0.7 0.6
    fig = plot_error_level({"films": (conf, correct)}, 0.05, min_confidence=0.75)
    curve, dot, level = fig.axes[0].lines
    np.testing.assert_allclose(curve.get_xdata(), [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.get_ydata(), [0, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_allclose([dot.get_xdata()[0], dot.get_ydata()[0]], [0.5, 0.5])   # 0.9 and 0.8 answered
    assert level.get_ydata()[0] == 0.05
