"""Every CAM method against its formula computed independently in numpy on a tiny fixed-weight model."""
import numpy as np
import pytest
from conftest import build_tiny
from test_cam import numpy_conv_relu

from xai_cxr.explain.cam import EigenCAM, FusedCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, choose_target_layer
from xai_cxr.explain.registry import cam_classes


def np_forward(model, x, head):
    """Activations (h, w, K) and logits (2,) of the tiny model, by hand."""
    kernel, bias = model.get_layer("conv").get_weights()
    dense_w, dense_b = model.get_layer("predictions").get_weights()
    acts = numpy_conv_relu(x.astype(np.float64), kernel, bias)
    feats = acts.mean(axis=(0, 1)) if head == "gap" else acts.reshape(-1)
    return acts, feats @ dense_w + dense_b


def np_grad(model, acts, target, head):
    dense_w = model.get_layer("predictions").get_weights()[0]
    h, w, k = acts.shape
    if head == "gap":
        return np.broadcast_to(dense_w[:, target] / (h * w), acts.shape)
    return dense_w[:, target].reshape(h, w, k)


def norm(cam):
    return (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_gradcam_pp(a, g):
    g2, g3 = g ** 2, g ** 3
    alpha = np.zeros_like(g)
    for idx in np.ndindex(g.shape):
        k = idx[-1]
        d = 2 * g2[idx] + a[..., k].sum() * g3[idx]
        alpha[idx] = g2[idx] / d if g[idx] != 0 and d != 0 else 0.0
    w = (alpha * np.maximum(g, 0)).sum(axis=(0, 1))
    return np.maximum((w * a).sum(-1), 0)


def np_hirescam(a, g):
    return np.maximum((g * a).sum(-1), 0)


def np_layercam(a, g):
    return np.maximum((np.maximum(g, 0) * a).sum(-1), 0)


def np_eigencam(a, g):
    h, w, c = a.shape
    m = a.reshape(-1, c)
    centred = m - m.mean(0)
    cov = centred.T @ centred                                     # first PC via the covariance eigenvector
    vals, vecs = np.linalg.eigh(cov)
    proj = centred @ vecs[:, -1]
    if np.corrcoef(proj, m.sum(1))[0, 1] < 0:
        proj = -proj
    return np.maximum(proj.reshape(h, w), 0)


@pytest.mark.parametrize("head", ["gap", "flatten"])
@pytest.mark.parametrize("cls, formula", [(GradCAMPlusPlus, np_gradcam_pp), (HiResCAM, np_hirescam),
                                          (LayerCAM, np_layercam), (EigenCAM, np_eigencam)])
def test_gradient_methods_match_numpy(cls, formula, head):
    model = build_tiny(head, seed=3, filters=4)
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 1)).astype("float32")
    maps = cls(model, "conv")(x, targets=1, upsample=False)
    expected = []
    for xi in x:
        acts, _ = np_forward(model, xi, head)
        expected.append(norm(formula(acts, np_grad(model, acts, 1, head))))
    np.testing.assert_allclose(maps, np.stack(expected), atol=1e-5)


def test_scorecam_matches_numpy():
    model = build_tiny("flatten", seed=4, filters=3)
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 1)).astype("float32")
    maps = ScoreCAM(model, "conv")(x, targets=0, upsample=False)
    import tensorflow as tf
    for xi, got in zip(x, maps):
        acts, _ = np_forward(model, xi, "flatten")
        up = tf.image.resize(acts[None].astype("float32"), (8, 8), "bilinear")[0].numpy()   # (8, 8, K)
        lo, hi = up.min(axis=(0, 1)), up.max(axis=(0, 1))
        masks = (up - lo) / np.where(hi > lo, hi - lo, 1)
        probs = np.array([softmax(np_forward(model, xi * masks[..., k:k + 1], "flatten")[1])[0]
                          for k in range(acts.shape[-1])])
        w = softmax(probs)
        np.testing.assert_allclose(got, norm(np.maximum((w * acts).sum(-1), 0)), atol=1e-4)


def test_hirescam_equals_gradcam_when_gradients_are_spatially_constant():
    model = build_tiny("gap", seed=6)
    x = np.random.default_rng(3).normal(size=(3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(HiResCAM(model, "conv")(x, targets=1), cam_classes()["gradcam"](model,
                                                                                               "conv")(x, targets=1),
                               atol=1e-5)


@pytest.mark.parametrize("name", sorted(cam_classes()))
def test_every_method_gives_finite_unit_maps_without_touching_inputs(name):
    model = build_tiny("flatten", seed=7)
    x = np.random.default_rng(4).normal(size=(3, 8, 8, 1)).astype("float32")
    x0 = x.copy()
    maps = cam_classes()[name](model, "conv")(x)
    assert maps.shape == (3, 8, 8) and np.isfinite(maps).all() and 0 <= maps.min() and maps.max() <= 1
    np.testing.assert_array_equal(x, x0)


def _two_conv_model():
    import keras
    from keras import layers
    inp = keras.Input((16, 16, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = layers.MaxPooling2D(4)(x)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(x)       # 4×4: too coarse
    out = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def test_fused_cam_is_mean_of_layer_maps():
    model = _two_conv_model()
    x = np.random.default_rng(5).normal(size=(2, 16, 16, 1)).astype("float32")
    fused = FusedCAM(model, ["c1", "c2"])(x, targets=1)
    g = cam_classes()["gradcam"]
    mean = (g(model, "c1")(x, targets=1) + g(model, "c2")(x, targets=1)) / 2
    np.testing.assert_allclose(fused, mean / mean.max(axis=(1, 2), keepdims=True), atol=1e-5)


def test_robust_layer_choice_steps_back_from_a_coarse_layer():
    model = _two_conv_model()
    x = np.random.default_rng(6).normal(size=(4, 16, 16, 1)).astype("float32")
    layer, reasons = choose_target_layer(model, x, min_size=7)
    assert layer == "c1" and "c2" in reasons[0] and "coarser" in reasons[0]
