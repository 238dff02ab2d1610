"""Temperature scaling, ECE, accuracy at coverage and MC-dropout uncertainty, against hand computations."""
import numpy as np
import pytest

from xai_cxr.models.calibration import (
    accuracy_at_coverage,
    apply_temperature,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    load_temperature,
    save_temperature,
)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_temperature_scaling_recovers_a_known_overconfidence():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (20000, 3))
    y = np.array([rng.choice(3, p=p) for p in _softmax(z)])        # labels drawn from the true probabilities
    overconfident = _softmax(2.5 * z)                              # a model whose logits are 2.5× too large
    assert fit_temperature(overconfident, y) == pytest.approx(2.5, rel=0.05)
    assert fit_temperature(_softmax(z), y) == pytest.approx(1.0, rel=0.05)


def test_temperature_keeps_the_predicted_class_and_one_is_the_identity():
    p = _softmax(np.random.default_rng(1).normal(0, 3, (50, 2)))
    assert np.allclose(apply_temperature(p, 1.0), p, atol=1e-6)
    hot = apply_temperature(p, 4.0)
    assert (hot.argmax(1) == p.argmax(1)).all() and (hot.max(1) <= p.max(1) + 1e-6).all()


def test_multilabel_temperature_scales_each_sigmoid_logit():
    z = np.array([[2.0, -1.0]])
    p = 1 / (1 + np.exp(-z))
    assert np.allclose(apply_temperature(p, 2.0, "sigmoid"), 1 / (1 + np.exp(-z / 2)), atol=1e-6)


def test_ece_matches_a_hand_computation():
    # bin (0.5,0.6]: 2 cases at conf 0.55, one right → gap |0.5 − 0.55| = 0.05
    # bin (0.9,1.0]: 3 cases at conf 0.95, two right → gap |2/3 − 0.95| ≈ 0.283; bins weighted by their counts
    proba = np.array([[0.55, 0.45], [0.45, 0.55], [0.95, 0.05], [0.05, 0.95], [0.95, 0.05]])
    y = np.array([0, 0, 0, 0, 0])
    expected = 2 / 5 * 0.05 + 3 / 5 * abs(2 / 3 - 0.95)
    assert expected_calibration_error(y, proba) == pytest.approx(expected)
    assert expected != pytest.approx((0.05 + abs(2 / 3 - 0.95)) / 2)      # an unweighted mean would differ


def test_accuracy_at_coverage_refers_the_least_certain_cases():
    y = np.array([0, 1, 0, 1, 0])
    pred = np.array([0, 1, 1, 0, 0])                 # wrong on cases 2 and 3
    unc = np.array([0.1, 0.2, 0.9, 0.8, 0.3])        # … which are the least certain
    acc = accuracy_at_coverage(y, pred, unc, coverages=(1.0, 0.6, 0.4))
    assert acc == {"100%": 0.6, "60%": 1.0, "40%": 1.0}


def test_calibration_report_fits_on_validation_only(tmp_path):
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, (4000, 2))
    y = np.array([rng.choice(2, p=p) for p in _softmax(z)])
    over = _softmax(3 * z)
    rep = calibration_report(y[:2000], over[:2000], y[2000:], over[2000:])
    assert rep["test_ece_after"] < rep["test_ece_before"] and rep["test_nll_after"] < rep["test_nll_before"]
    save_temperature(tmp_path, rep["temperature"])
    assert load_temperature(tmp_path) == rep["temperature"] and load_temperature(tmp_path / "none") == 1.0


def test_mc_dropout_samples_dropout_but_keeps_batchnorm_in_inference_mode():
    import keras
    from keras import layers

    from xai_cxr.models.uncertainty import mc_dropout_model, mc_predict
    x = np.random.default_rng(3).normal(size=(6, 5)).astype("float32")

    def net(rate):
        inp = keras.Input((5,))
        h = layers.BatchNormalization()(layers.Dense(8, activation="relu")(inp))
        out = layers.Dense(2, activation="softmax")(layers.Dropout(rate)(h))
        m = keras.Model(inp, out)
        bn = m.layers[2]
        bn.set_weights([w + i + 1 for i, w in enumerate(bn.get_weights())])   # moving stats ≠ batch stats
        return m

    still = net(0.0)
    r = mc_predict(mc_dropout_model(still), x, passes=3)
    assert np.allclose(r["mean"], still.predict(x, verbose=0), atol=1e-6) and r["std"].max() < 1e-6
    noisy = net(0.5)
    r = mc_predict(mc_dropout_model(noisy), x, passes=20)
    assert r["std"].max() > 0.01 and (r["entropy"] >= 0).all()
    plain = keras.Sequential([keras.Input((5,)), layers.Dense(2, activation="softmax")])
    assert mc_dropout_model(plain) is None
