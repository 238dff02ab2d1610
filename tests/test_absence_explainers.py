"""Maps that see absences (occlusion, RISE, Ablation-CAM, the class-contrastive Grad-CAM), each against a model
whose right map is known: a model that reads the brightness of one box, one that reads its *darkness* (a black
region that raises the score, like a planted wedge), and the tiny fixed-weight CNN whose Ablation-CAM and
contrastive weights are computable by hand."""
import numpy as np
import pytest
from conftest import build_tiny
from test_cam import numpy_conv_relu

from xai_cxr.explain.perturbation import RISE, BlurOcclusion, Occlusion
from xai_cxr.explain.registry import EXPLAINERS, make_explainer

SIZE = 32
BOX = (slice(6, 14), slice(18, 26))            # rows, cols of the region the box models read


def box_model(sign: float, centre: float):
    """p(class 1) = softmax([0, sign · 40 · (mean of the box − centre)]): sign +1 reads brightness, −1 darkness."""
    import keras
    from keras import layers, ops
    weights = np.zeros((SIZE, SIZE, 3), np.float32)
    weights[BOX] = 1.0 / (8 * 8 * 3)
    inp = keras.Input((SIZE, SIZE, 3))
    mean = layers.Lambda(lambda t: ops.sum(t * weights, axis=(1, 2, 3))[:, None])(inp)
    out = layers.Dense(2, activation="softmax")(mean)
    model = keras.Model(inp, out)
    model.layers[-1].set_weights([np.array([[0.0, 40.0 * sign]], np.float32),
                                  np.array([0.0, -40.0 * sign * centre], np.float32)])
    return model


def film(box_value: float) -> np.ndarray:
    x = np.full((1, SIZE, SIZE, 3), 0.6, np.float32)
    x[0][BOX] = box_value
    return x


def share_in_top(heat: np.ndarray, k: int = 64) -> float:
    """Share of the box's 64 pixels among the map's 64 hottest."""
    top = np.zeros(heat.size, bool)
    top[np.argsort(-heat.ravel(), kind="stable")[:k]] = True
    inside = np.zeros((SIZE, SIZE), bool)
    inside[BOX] = True
    return float((top.reshape(SIZE, SIZE) & inside).sum() / k)


@pytest.mark.parametrize("cls", [Occlusion, RISE])
def test_occlusion_and_rise_put_their_peak_on_the_box_the_model_reads(cls):
    heat = cls(box_model(+1.0, 0.8))(film(1.0), 1)[0]
    r, c = np.unravel_index(heat.argmax(), heat.shape)
    assert BOX[0].start <= r < BOX[0].stop and BOX[1].start <= c < BOX[1].stop
    assert share_in_top(heat) >= 0.7


def test_a_black_region_the_model_reads_is_found_by_the_mean_fill_and_not_by_the_blur_fill():
    """The absence case: a black box raises p(class 1). Filling a patch with the film's mean grey removes the box
    and the probability falls there; filling it with the film's own blur leaves the box's inside black."""
    from xai_cxr.explain.perturbation import fill_values
    model, x = box_model(-1.0, 0.2), film(0.0)
    assert model(x).numpy()[0, 1] > 0.99
    assert fill_values(x[0], "blur")[10, 22, 0] < 0.15 < 0.5 < fill_values(x[0], "mean")[10, 22, 0]
    mean_fall = Occlusion(model).explain_one(x[0], 1)                 # the raw fall of p(class 1), not normalised
    blur_fall = BlurOcclusion(model).explain_one(x[0], 1)
    assert mean_fall[BOX].max() > 3 * blur_fall[BOX].max()
    assert share_in_top(Occlusion(model)(x, 1)[0]) >= 0.8
    assert share_in_top(RISE(model)(x, 1)[0]) >= 0.7              # RISE removes with the mean too


def test_occlusion_windows_cover_the_whole_film_edge_to_edge():
    occ = Occlusion(None, patch=1 / 8, stride=1 / 16)
    starts = occ.windows(SIZE)
    assert starts[0] == 0 and starts[-1] == SIZE - 4 and np.all(np.diff(starts) == 2)


def test_rise_of_a_model_that_ignores_the_film_is_flat():
    """A constant model: keeping a pixel never changes p, so no pixel may stand out. (Σ p M / (n · keep) would
    draw the density pattern of the shared masks instead.)"""
    import keras
    inp = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", kernel_initializer="zeros",
                                                bias_initializer=keras.initializers.Constant([0.0, 1.0]))(
        keras.layers.GlobalAveragePooling2D()(inp)))
    heat = RISE(model, n_masks=100).explain_one(film(1.0)[0], 1)
    np.testing.assert_allclose(heat, 0.0, atol=1e-6)


def test_rise_equals_the_conditional_expectation_over_its_masks():
    """Against a direct loop: for each pixel, mean p over the masked copies weighted by the mask, minus mean p."""
    model, x = box_model(+1.0, 0.8), film(1.0)
    rise = RISE(model, n_masks=40)
    masks = rise.masks(SIZE, SIZE)
    fill = x[0].mean()
    p = np.array([model(x * m[None, ..., None] + fill * (1 - m[None, ..., None])).numpy()[0, 1] for m in masks])
    expected = np.array([[np.sum(p * masks[:, i, j]) / np.sum(masks[:, i, j]) - p.mean() for j in range(SIZE)]
                         for i in range(SIZE)])
    np.testing.assert_allclose(rise.explain_one(x[0], 1), expected, atol=1e-5)


def test_rise_masks_are_seeded_and_keep_about_half_the_film():
    a, b = RISE(None, seed=3, n_masks=50).masks(SIZE, SIZE), RISE(None, seed=3, n_masks=50).masks(SIZE, SIZE)
    np.testing.assert_array_equal(a, b)
    assert abs(float(a.mean()) - 0.5) < 0.1 and a.min() >= 0 and a.max() <= 1


def _np_maps(model, x, target, weights_of):
    kernel, bias = model.get_layer("conv").get_weights()
    dense_w = model.get_layer("predictions").get_weights()[0]
    out = []
    for xi, t in zip(x, target):
        acts = numpy_conv_relu(xi.astype(np.float64), kernel, bias)
        w = weights_of(acts, dense_w, t)
        cam = np.maximum((acts * w).sum(-1), 0)
        out.append((cam - cam.min()) / (cam.max() - cam.min() + 1e-7))
    return np.stack(out)


def test_ablation_cam_matches_numpy_on_the_tiny_model():
    """GAP → Dense head: zeroing channel k lowers the logit by W[k, t] · mean(A_k), which is the channel's weight."""
    model = build_tiny("gap", seed=4, size=10, filters=4)
    x = np.random.default_rng(0).random((3, 10, 10, 1)).astype(np.float32)
    got = make_explainer("ablationcam", model, "cxr-small", "conv")(x, [1, 0, 1], upsample=False)
    expected = _np_maps(model, x, [1, 0, 1], lambda a, w, t: w[:, t] * a.mean(axis=(0, 1)))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_contrastive_gradcam_matches_numpy_on_the_tiny_model():
    """Score z_t − z_other: its gradient w.r.t. A_k is (W[k, t] − W[k, other]) / (h·w) everywhere."""
    model = build_tiny("gap", seed=5, size=10, filters=4)
    x = np.random.default_rng(1).random((3, 10, 10, 1)).astype(np.float32)
    got = make_explainer("contrastive", model, "cxr-small", "conv")(x, [1, 0, 1], upsample=False)
    expected = _np_maps(model, x, [1, 0, 1], lambda a, w, t: (w[:, t] - w[:, 1 - t]) / (a.shape[0] * a.shape[1]))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_new_explainers_are_registry_entries_that_say_what_they_explain():
    for name in ("occlusion", "occlusion_blur", "rise", "ablationcam", "contrastive"):
        spec = EXPLAINERS[name]
        assert spec.uses_gradients == (name == "contrastive")
    assert EXPLAINERS["contrastive"].explains.startswith("class logit minus")


def test_recommended_explainers_whose_packages_are_missing_are_skipped_with_a_warning(tmp_path, monkeypatch):
    """A base install (no `app` extra) has neither LIME nor SHAP: the recommendation must not hand them to the
    notebook or the confounder audit, and must say what to install."""
    import json
    import sys

    from xai_cxr.explain import recommend
    table = {"confounders": {k: {"recommended": {"method": m}} for k, m in
                             (("tag", "shap"), ("hyperintensities", "contrastive"), ("obstruction", "lime"))}}
    (tmp_path / "rec.json").write_text(json.dumps(table))
    monkeypatch.setattr(recommend, "RECOMMENDATION", tmp_path / "rec.json")
    assert recommend.recommended_methods() == ["shap", "contrastive", "lime"]     # all installed here
    monkeypatch.setitem(sys.modules, "lime", None)                                # as if not installed
    monkeypatch.setitem(sys.modules, "shap", None)
    with pytest.warns(UserWarning, match=r"'shap' needs shap.*\.\[app\]"):
        assert recommend.recommended_methods() == ["contrastive"]


def test_audit_stops_before_any_work_when_a_requested_explainer_lacks_its_package(tmp_path, monkeypatch):
    import sys

    from xai_cxr.cli import main
    monkeypatch.setitem(sys.modules, "shap", None)
    with pytest.raises(SystemExit, match=r"--methods shap needs shap, not installed: pip install -e '\.\[app\]'"):
        main(["audit", "--methods", "gradcam", "shap", "--weights-dir", str(tmp_path / "none"),
              "--data-dir", str(tmp_path / "none")])
