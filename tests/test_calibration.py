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
    assert r["std"].max() > 0.01
    np.testing.assert_allclose(r["entropy"], -(r["mean"] * np.log(r["mean"])).sum(1), rtol=1e-5)   # of the mean
    plain = keras.Sequential([keras.Input((5,)), layers.Dense(2, activation="softmax")])
    assert mc_dropout_model(plain) is None


def test_mc_dropout_runs_the_trunk_once_and_samples_only_the_head_with_unbiased_dropout():
    import keras
    from keras import layers

    from xai_cxr.models.uncertainty import mc_dropout_model, mc_predict
    rng = np.random.default_rng(0)
    inp = keras.Input((5,))
    h = layers.Dense(6, activation="relu", name="trunk_dense")(inp)
    out = layers.Dense(2, name="linear_head")(layers.Dropout(0.5)(h))      # linear: E[output] = the plain output
    model = keras.Model(inp, out)
    model.set_weights([rng.normal(0, 1, w.shape).astype("float32") for w in model.get_weights()])
    x = rng.normal(size=(3, 5)).astype("float32")
    mc = mc_dropout_model(model)
    w1, b1 = model.get_weights()[:2]
    np.testing.assert_allclose(np.asarray(mc.trunk(x)), np.maximum(x @ w1 + b1, 0), rtol=1e-5, atol=1e-6)   # ends
    # where dropout begins
    passes = 4000
    r = mc_predict(mc, x, passes=passes, activation="sigmoid")
    plain = model.predict(x, verbose=0)
    # inverted dropout at rate 0.5 keeps each unit with p = 0.5 and doubles it: the mean over passes is unbiased
    w2 = model.get_weights()[2]
    hidden = np.asarray(mc.trunk(x))
    se = np.sqrt(((hidden[:, :, None] * w2[None]) ** 2).sum(1) / passes)  # sd of one pass = sqrt(Σ (h w)²)
    assert (np.abs(r["mean"] - plain) < 4 * se + 1e-4).all()
    assert (r["std"] > 0.1 * np.sqrt(passes) * se).all()                  # and the passes really differ


def test_mc_dropout_samples_the_whole_network_when_the_graph_branches_after_a_dropout():
    import keras
    from keras import layers

    from xai_cxr.models.uncertainty import mc_dropout_model, mc_predict
    inp = keras.Input((4,))
    d = layers.Dropout(0.0)(layers.Dense(4)(inp))
    out = layers.Dense(2, activation="softmax")(layers.Add()([d, layers.Dense(4)(inp)]))
    model = keras.Model(inp, out)
    mc = mc_dropout_model(model)
    assert mc.trunk is None
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(mc_predict(mc, x, passes=3)["mean"], model.predict(x, verbose=0), atol=1e-6)


def test_the_classifier_is_split_at_its_head_so_a_film_costs_one_backbone_pass():
    from xai_cxr.config import ModelConfig
    from xai_cxr.models import build_model
    from xai_cxr.models.uncertainty import mc_dropout_model
    model = build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)
    mc = mc_dropout_model(model)
    assert mc.trunk.output.shape[-1] == model.get_layer("head_gap").output.shape[-1]
    assert [l.name for l in mc.head.layers[1:]] == [l.name for l in model.layers if l.name.startswith("head_")][1:]
