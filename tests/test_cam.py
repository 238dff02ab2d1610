"""Grad-CAM against an independent numpy computation, and the Keras 3 layer-lookup traps."""
import numpy as np
import pytest
from conftest import build_tiny

from xai_cxr.explain.cam import GradCAM, normalize_maps
from xai_cxr.explain.registry import cam_classes


def numpy_conv_relu(x, kernel, bias):
    """Valid 3×3 cross-correlation + ReLU, by hand: x (H, W, C), kernel (3, 3, C, K) → (H-2, W-2, K)."""
    h, w, _ = x.shape
    out = np.zeros((h - 2, w - 2, kernel.shape[-1]))
    for i in range(h - 2):
        for j in range(w - 2):
            out[i, j] = np.tensordot(x[i:i + 3, j:j + 3, :], kernel, axes=([0, 1, 2], [0, 1, 2])) + bias
    return np.maximum(out, 0)


def numpy_gradcam(model, x, target, head):
    """Grad-CAM of the class logit by hand: weights = mean over H×W of d(logit)/dA, ReLU(Σ w_k A_k)."""
    kernel, bias = model.get_layer("conv").get_weights()
    dense_w, _ = model.get_layer("predictions").get_weights()
    acts = numpy_conv_relu(x.astype(np.float64), kernel, bias)          # (h, w, K)
    h, w, k = acts.shape
    if head == "gap":                      # logit = Σ_k W[k,c] · mean_ij A_ijk + b_c
        grad = np.broadcast_to(dense_w[:, target] / (h * w), acts.shape)
    else:                                  # logit = Σ_ijk W[(i,j,k),c] · A_ijk + b_c
        grad = dense_w[:, target].reshape(h, w, k)
    alpha = grad.mean(axis=(0, 1))
    cam = np.maximum((alpha * acts).sum(-1), 0)
    return (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)


@pytest.mark.parametrize("head", ["gap", "flatten"])
@pytest.mark.parametrize("target", [0, 1])
def test_gradcam_matches_numpy_on_tiny_model(head, target):
    model = build_tiny(head, seed=3)
    x = np.random.default_rng(1).normal(size=(5, 8, 8, 1)).astype("float32")
    maps = GradCAM(model, "conv")(x, targets=target, upsample=False)
    expected = np.stack([numpy_gradcam(model, xi, target, head) for xi in x])
    assert maps.shape == (5, 6, 6)
    assert (expected.max(axis=(1, 2)) > 0.99).sum() >= 3          # mostly non-trivial maps
    np.testing.assert_allclose(maps, expected, atol=1e-5)


def test_gradcam_explains_logit_not_softmax():
    """With a GAP head the logit gradient is W[:, c]/hw; a softmax-probability gradient would differ."""
    model = build_tiny("gap", seed=5)
    x = np.random.default_rng(2).normal(size=(4, 8, 8, 1)).astype("float32")
    cam = GradCAM(model, "conv")
    acts, grads, scores = (t.numpy() for t in cam._step(x, np.ones(4, np.int32)))
    w = model.get_layer("predictions").get_weights()[0][:, 1]
    np.testing.assert_allclose(grads, np.broadcast_to(w / 36, grads.shape), rtol=1e-5)
    log_p = np.log(model.predict(x, verbose=0))
    np.testing.assert_allclose(scores - scores[:, :1], log_p - log_p[:, :1], atol=1e-4)   # scores are logits


def test_gradcam_default_target_is_predicted_class():
    model = build_tiny("flatten", seed=7)
    x = np.random.default_rng(3).normal(size=(6, 8, 8, 1)).astype("float32")
    pred = model.predict(x, verbose=0).argmax(1)
    assert 0 < pred.sum() < len(pred)                               # both classes predicted
    cam = GradCAM(model, "conv")
    default, chosen = cam(x, upsample=False), cam(x, targets=pred, upsample=False)
    other = cam(x, targets=1 - pred, upsample=False)
    np.testing.assert_allclose(default, chosen, atol=1e-6)
    assert np.abs(default - other).max() > 0.1


def test_gradcam_batches_give_same_maps_as_one_batch():
    model = build_tiny("flatten", seed=8)
    x = np.random.default_rng(4).normal(size=(7, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(GradCAM(model, "conv", batch_size=3)(x, targets=1),
                               GradCAM(model, "conv", batch_size=16)(x, targets=1), atol=1e-6)


def test_upsampled_maps_have_image_size_and_unit_range():
    model = build_tiny("flatten", seed=9)
    x = np.random.default_rng(5).normal(size=(3, 8, 8, 1)).astype("float32")
    maps = GradCAM(model)(x, targets=0)              # default layer: the last Conv2D
    assert maps.shape == (3, 8, 8)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


def test_cam_leaves_inputs_and_model_untouched():
    model = build_tiny("gap", seed=10)
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(6).normal(size=(2, 8, 8, 1)).astype("float32")
    x0 = x.copy()
    GradCAM(model, "conv")(x)
    np.testing.assert_array_equal(x, x0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.layers[-1].activation.__name__ == "softmax"


def _nested_copies(flat):
    """The same network with the conv inside a nested functional sub-model, as Functional and Sequential."""
    import keras
    from keras import layers
    inp = keras.Input((8, 8, 1))
    inner = keras.Model(inp, layers.Conv2D(3, 3, activation="relu", name="conv")(inp), name="backbone")
    head = [layers.Flatten(), layers.Dense(2, activation="softmax", name="predictions")]
    seq = keras.Sequential([keras.Input((8, 8, 1)), inner, *head])
    outer_in = keras.Input((8, 8, 1))
    y = inner(outer_in)
    for layer in head:
        y = layer(y)
    func = keras.Model(outer_in, y)
    for m in (seq, func):
        m.set_weights(flat.get_weights())
    return seq, func


def test_gradcam_reaches_layer_inside_nested_model():
    flat = build_tiny("flatten", seed=11)
    x = np.random.default_rng(7).normal(size=(3, 8, 8, 1)).astype("float32")
    expected = GradCAM(flat, "conv")(x, targets=1)
    for nested in _nested_copies(flat):
        np.testing.assert_allclose(GradCAM(nested, "conv")(x, targets=1), expected, atol=1e-5)


def test_gradcam_works_on_model_loaded_from_disk(tmp_path):
    import keras
    model = build_tiny("flatten", seed=12)
    x = np.random.default_rng(8).normal(size=(3, 8, 8, 1)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(GradCAM(loaded, "conv")(x, targets=0), GradCAM(model, "conv")(x, targets=0), atol=1e-6)


def test_unknown_layer_error_lists_conv_layers():
    with pytest.raises(ValueError, match=r"no layer named 'block5_conv3'.*\['conv'\]"):
        GradCAM(build_tiny(), "block5_conv3")


def test_layer_without_spatial_dimensions_is_a_clear_error():
    model = build_tiny("gap")
    gap = [l.name for l in model.layers if "pooling" in l.name][0]
    with pytest.raises(ValueError, match="spatial"):
        GradCAM(model, gap)(np.zeros((1, 8, 8, 1), "float32"))


def test_flat_map_is_zeros_not_nan():
    with pytest.warns(RuntimeWarning, match="constant"):
        out = normalize_maps(np.stack([np.full((4, 4), 3.0), np.arange(16.0).reshape(4, 4)]))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], 0)
    assert out[1].max() == pytest.approx(1, abs=1e-6) and out[1].min() == 0


def test_registry_methods_are_cam_subclasses():
    from xai_cxr.explain.cam import BaseCAM
    assert cam_classes() and all(issubclass(c, BaseCAM) for c in cam_classes().values())




@pytest.mark.parametrize("name", ["gradcam", "gradcam++", "layercam"])
def test_xla_compiled_step_gives_the_same_maps(name):
    model = build_tiny("flatten", seed=4, size=12, filters=5)
    x = np.random.default_rng(2).normal(size=(6, 12, 12, 1)).astype("float32")
    plain = cam_classes()[name](model, "conv")(x, 1)
    xla = cam_classes()[name](model, "conv", jit_compile=True)(x, 1)
    np.testing.assert_allclose(xla, plain, atol=1e-4)
