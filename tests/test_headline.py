"""The headline claims, as regression tests: on phantoms with known lesions a small trained model's Grad-CAM beats a
random and a centre-bias map on the pointing game and on deletion by stated margins; the sanity check fails a map
that ignores the model; Grad-CAM on real heads (cxr-small, VGG19 with fixed random weights) equals an independent
GradientTape computation."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def phantom_model(tmp_path_factory):
    """cxr-small trained 8 epochs on 240 phantoms at 64 px (seconds), and its decoded test split with masks."""
    from xai_cxr.data import load_images, scan_dataset
    from xai_cxr.models import load_trained_model
    from xai_cxr.models.phantom_model import train_phantom_model
    from xai_cxr.pipeline import lesion_masks
    folder = tmp_path_factory.mktemp("headline")
    weights = train_phantom_model(folder, seed=3, n_train=120, epochs=(8, 0))
    model, card = load_trained_model(weights)
    df = scan_dataset(folder / "data" / "chest_xray")
    test = load_images(df[df.split == "test"], 64, progress=False)
    return model, card, test, lesion_masks(test, 64)


@pytest.mark.slow
def test_gradcam_beats_random_and_centre_maps_on_phantom_lesions(phantom_model):
    from xai_cxr.config import AuditConfig
    from xai_cxr.explain.metrics.audit import audit
    model, card, test, masks = phantom_model
    result = audit(model, card.backbone, test, masks, AuditConfig(methods=("gradcam",), n_images=30, steps=10,
                                                                   sanity_images=4), progress=lambda *a: None)
    loc = result["localization"].set_index("method").pointing_game
    faith = result["faithfulness"].set_index("method").deletion_auc
    assert loc["gradcam"] >= loc["random"] + 0.4 and loc["gradcam"] >= loc["centre"] + 0.2, loc.to_dict()
    assert faith["gradcam"] <= 0.6 * faith["random"] and faith["gradcam"] < faith["centre"], faith.to_dict()


def test_sanity_check_fails_a_map_that_ignores_the_model():
    from conftest import build_tiny

    from xai_cxr.explain.cam import GradCAM
    from xai_cxr.explain.metrics.sanity import cascading_randomization, verdict
    model = build_tiny(size=12, channels=1, filters=4)
    x = np.random.default_rng(0).random((4, 12, 12, 1)).astype(np.float32)

    def edge_detector(m, layer):                  # a "map" made from the image alone: blind to the model
        return lambda images, targets=None: np.abs(np.gradient(np.asarray(images)[..., 0], axis=2))
    blind = cascading_randomization(model, x, np.ones(4, int), edge_detector, "conv", seed=0, stop_at=(-1,))
    assert blind[-1]["spearman"] > 0.99 and verdict(blind[-1]["spearman"]).startswith("FAIL")
    real = cascading_randomization(model, x, np.ones(4, int), GradCAM, "conv", seed=0, stop_at=(-1,))
    assert real[-1]["spearman"] < blind[-1]["spearman"]


def _independent_gradcam(model, x, layer_name, targets):
    """Grad-CAM from scratch: a tape over the layer's activations and the last Dense layer's logit, numpy after."""
    import keras
    import tensorflow as tf
    head = model.layers[-1]
    feats = keras.Model(model.inputs, [model.get_layer(layer_name).output, head.input])
    with tf.GradientTape() as tape:
        acts, pen = feats(tf.constant(x), training=False)
        logit = tf.reduce_sum((pen @ head.kernel + head.bias) * tf.one_hot(targets, head.units), axis=1)
    grads = tape.gradient(logit, acts).numpy().astype(np.float64)
    acts = acts.numpy().astype(np.float64)
    cam = np.maximum(np.einsum("bhwc,bc->bhw", acts, grads.mean(axis=(1, 2))), 0)
    lo, hi = cam.min(axis=(1, 2), keepdims=True), cam.max(axis=(1, 2), keepdims=True)
    return (cam - lo) / (hi - lo + 1e-7)


@pytest.mark.parametrize("backbone, layer, size", [("cxr-small", "block4_relu2", 64), ("vgg19", "block5_conv3", 64)])
def test_gradcam_matches_an_independent_tape_on_real_heads(backbone, layer, size):
    import keras

    from xai_cxr.config import ModelConfig
    from xai_cxr.explain.cam import GradCAM
    from xai_cxr.models import build_model
    keras.utils.set_random_seed(11)                # fixed random weights, BatchNorm statistics included
    model = build_model(ModelConfig(backbone=backbone, weights="none"), size)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (3, size, size, 3)).astype(np.float32)
    if backbone == "vgg19":
        x = x - 120.0                                # roughly vgg19.preprocess_input's range
    targets = np.array([0, 1, 1])
    expected = _independent_gradcam(model, x, layer, targets)
    got = GradCAM(model, layer)(x, targets, upsample=False)
    assert got.shape == expected.shape and expected.max() > 0
    np.testing.assert_allclose(got, expected, atol=1e-4)
