"""Integrated Gradients and SmoothGrad against hand computations on tiny models."""
import numpy as np
import pytest
from conftest import build_tiny

from xai_cxr.explain.attribution import BlurIntegratedGradients, IntegratedGradients, SmoothGrad


def _linear_model(seed=0, size=4):
    """Flatten → Dense(2, softmax): the logit is linear in the input, so IG = (x − b) · w exactly."""
    import keras
    from keras import layers
    inp = keras.Input((size, size, 1))
    out = layers.Dense(2, activation="softmax", name="predictions")(layers.Flatten()(inp))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 1, w.shape).astype("float32") for w in model.get_weights()])
    return model


def test_integrated_gradients_equal_input_times_weight_on_a_linear_logit():
    model = _linear_model()
    x = np.random.default_rng(1).normal(size=(3, 4, 4, 1)).astype("float32")
    attr = IntegratedGradients(model, steps=8).attribute(x, np.array([1, 1, 1]))
    w = model.get_layer("predictions").kernel.numpy()[:, 1].reshape(4, 4, 1)
    np.testing.assert_allclose(attr, x * w[None], rtol=1e-5, atol=1e-6)


def test_integrated_gradients_are_complete_on_a_nonlinear_model():
    """Σ attributions = logit(x) − logit(baseline), up to the quadrature error."""
    model = build_tiny("flatten", seed=3, size=10, filters=4)
    x = np.random.default_rng(2).normal(size=(2, 10, 10, 1)).astype("float32")
    ig = IntegratedGradients(model, steps=128)
    attr = ig.attribute(x, np.array([0, 1]))
    _, at_x = ig.gradients(x, np.array([0, 1], np.int32))
    _, at_0 = ig.gradients(np.zeros_like(x), np.array([0, 1], np.int32))
    np.testing.assert_allclose(attr.reshape(2, -1).sum(1), at_x - at_0, rtol=0.02, atol=1e-3)


def test_blur_baseline_attributes_black_pixels_that_the_black_baseline_cannot():
    """On a linear logit IG = (x − b) · w: with b = 0 a black pixel gets exactly 0; with the blurred baseline it
    gets (0 − blur(x)) · w, computed here with OpenCV by hand."""
    import cv2
    model = _linear_model(size=16)
    x = np.full((1, 16, 16, 1), 0.8, np.float32)
    x[0, 12:14, 2:8] = 0.0                                             # a black "tag"
    w = model.get_layer("predictions").kernel.numpy()[:, 1].reshape(16, 16, 1)
    black = IntegratedGradients(model, steps=4).attribute(x, np.array([1]))
    assert np.all(black[0, 12:14, 2:8] == 0)
    blur = BlurIntegratedGradients(model, steps=4).attribute(x, np.array([1]))
    b = cv2.GaussianBlur(x[0], (0, 0), 1.0).reshape(16, 16, 1)
    np.testing.assert_allclose(blur[0], (x[0] - b) * w, rtol=1e-4, atol=1e-5)
    assert np.abs(blur[0, 12:14, 2:8]).min() > 0


def test_smoothgrad_without_noise_is_the_plain_gradient_and_is_seeded():
    model = build_tiny("flatten", seed=4, size=8)
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 1)).astype("float32")
    plain, _ = SmoothGrad(model).gradients(x, np.array([1, 1], np.int32))
    np.testing.assert_allclose(SmoothGrad(model, n=4, noise=0.0).attribute(x, np.array([1, 1])), plain, atol=1e-6)
    a = SmoothGrad(model, n=4, seed=7)(x, 1)
    np.testing.assert_array_equal(a, SmoothGrad(model, n=4, seed=7)(x, 1))
    assert a.shape == (2, 8, 8) and a.min() >= 0 and a.max() == pytest.approx(1.0)


def _left_square_model(size=32):
    """P(class 1) grows with the bright pixels of the image's left half only: Cropping2D keeps columns
    < size/2, then ReLU(x − 0.6) → GAP → Dense. The right half cannot change the output."""
    import keras
    from keras import layers
    inp = keras.Input((size, size, 3))
    x = layers.Cropping2D(((0, 0), (0, size // 2)))(inp)
    x = layers.GlobalAveragePooling2D()(layers.ReLU(threshold=0.0)(x - 0.6))
    out = layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inp, out)
    model.layers[-1].set_weights([np.array([[-40.0, 40.0]] * 3, "float32"), np.array([2.0, -2.0], "float32")])
    return model


def _two_squares(size=32):
    img = np.zeros((size, size, 3), np.float32)
    img[8:18, 3:13] = 1.0                   # seen by the model
    img[8:18, 19:29] = 1.0                  # invisible to it
    return img


@pytest.mark.parametrize("method", ["lime", "shap"])
def test_superpixel_explainers_find_the_square_the_model_sees_and_ignore_the_other(method):
    pytest.importorskip(method)
    from xai_cxr.explain.registry import EXPLAINERS
    model, img = _left_square_model(), _two_squares()
    assert model.predict(img[None], verbose=0)[0, 1] > 0.9
    heat = EXPLAINERS[method].cls(model, n_samples=200, n_segments=12)(img[None], targets=1)[0]
    seen, unseen = heat[8:18, 3:13], heat[8:18, 19:29]
    assert heat.max() == pytest.approx(1.0, abs=1e-3) and seen.mean() > 0.3
    assert unseen.max() < 0.05 * seen.max()
