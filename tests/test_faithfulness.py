"""Deletion/insertion, ROAD, localization scores and sanity checks on hand-checkable cases."""
import numpy as np
import pytest
from conftest import build_tiny

from xai_cxr.explain.metrics.faithfulness import (
    NEIGHBOURS,
    centre_bias_maps,
    curve_auc,
    deletion_insertion,
    noisy_linear_impute,
    perturbation_stack,
    random_maps,
    road,
)
from xai_cxr.explain.metrics.localization import iou_dice, pointing_game, top_fraction_hit_rate
from xai_cxr.explain.metrics.sanity import (
    cascading_randomization,
    label_randomization,
    permuted_labels,
    randomized_copy,
    spearman_per_image,
    weighted_layers,
)


def test_perturbation_stack_deletes_hottest_pixels_first():
    gray = np.full((4, 5), 200, np.uint8)
    heat = np.arange(20, dtype=float).reshape(4, 5)
    gray[0, 0] = 0                              # make the mean baseline differ from the image
    stack = perturbation_stack(gray, heat, "deletion", steps=4, baseline="mean")
    base = int(round(gray.mean()))
    assert (stack[0] == gray).all() and (stack[-1] == base).all()
    changed = stack[1] != gray
    assert changed.sum() == 5 and changed.ravel()[-5:].all()            # the 5 hottest = the last 5 pixels
    ins = perturbation_stack(gray, heat, "insertion", steps=4, baseline="mean")
    assert (ins[0] == base).all() and (ins[-1] == gray).all()


def test_curve_auc_is_trapezoid_on_unit_interval():
    assert curve_auc(np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert curve_auc(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.25)


def square_model():
    """A 'model' whose class-1 probability is the mean brightness of a known 8 × 8 square of a 32 × 32 film: its
    predict function, the film (square bright on dark) and the perfect map (the square, a little noise)."""
    yy, xx = np.mgrid[0:32, 0:32]
    square = (yy >= 8) & (yy < 16) & (xx >= 8) & (xx < 16)

    def predict(stack):
        p = stack[:, square].mean(1) / 255.0
        return np.stack([1 - p, p], 1)

    gray = np.where(square, 255, 40).astype(np.uint8)[None]
    return predict, gray, square.astype(float)[None] + 0.01 * np.random.default_rng(0).random((1, 32, 32))


def test_deletion_of_the_evidence_beats_a_random_map():
    """A 'model' whose class-1 probability is the mean brightness of a known square: deleting that square
    first (the perfect map) must lower the deletion AUC far below a random map's."""
    predict, gray, perfect = square_model()
    d_perfect, i_perfect = deletion_insertion(predict, gray, perfect, [1], steps=16, baseline="mean")
    d_rand, i_rand = deletion_insertion(predict, gray, random_maps(1, (32, 32)), [1], steps=16, baseline="mean")
    assert d_perfect[0] < 0.5 * d_rand[0] and i_perfect[0] > i_rand[0]
    morf = road(predict, gray, perfect, [1], fractions=(0.0625,), order="morf")
    lerf = road(predict, gray, perfect, [1], fractions=(0.0625,), order="lerf")
    assert morf[0, 0] < lerf[0, 0]


def test_noisy_linear_imputation_of_one_pixel_is_the_weighted_mean_of_its_neighbours():
    gray = np.arange(9, dtype=float).reshape(3, 3) * 10
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    direct = gray[0, 1] + gray[2, 1] + gray[1, 0] + gray[1, 2]
    diagonal = gray[0, 0] + gray[0, 2] + gray[2, 0] + gray[2, 2]
    got = noisy_linear_impute(gray, removed, noise=0.0)
    assert got[1, 1] == pytest.approx(direct / 6 + diagonal / 12)        # the weights sum to 1 inside
    np.testing.assert_array_equal(got[~removed], gray[~removed])


def test_noisy_linear_imputation_of_two_neighbours_and_an_edge_pixel_by_hand():
    """Two removed neighbours a, b inside a 3 × 4 film: a = A + b/6, b = B + a/6 (A, B: their known neighbours'
    weighted sums) ⇒ a = (A + B/6) / (1 − 1/36). A corner pixel: the weighted mean of the 3 neighbours it has."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (3, 4)).astype(float)
    removed = np.zeros((3, 4), bool)
    removed[1, 1] = removed[1, 2] = True

    def known(r, c):
        return sum(wt * gray[r + dr, c + dc] for dr, dc, wt in NEIGHBOURS
                   if 0 <= r + dr < 3 and 0 <= c + dc < 4 and not removed[r + dr, c + dc])
    a_known, b_known = known(1, 1), known(1, 2)
    a = (a_known + b_known / 6) / (1 - 1 / 36)
    b = b_known + a / 6
    got = noisy_linear_impute(gray, removed, noise=0.0)
    assert got[1, 1] == pytest.approx(a) and got[1, 2] == pytest.approx(b)
    corner = np.zeros((3, 4), bool)
    corner[0, 0] = True
    expected = (gray[0, 1] / 6 + gray[1, 0] / 6 + gray[1, 1] / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    assert noisy_linear_impute(gray, corner, noise=0.0)[0, 0] == pytest.approx(expected)


def test_road_most_relevant_first_on_a_perfect_map_falls_below_a_random_map():
    predict, gray, perfect = square_model()
    fractions = (0.0625, 0.125, 0.25)
    morf_perfect = road(predict, gray, perfect, [1], fractions, order="morf")
    morf_random = road(predict, gray, random_maps(1, (32, 32), seed=3), [1], fractions, order="morf")
    assert morf_perfect.mean() < 0.5 * morf_random.mean()
    assert morf_perfect[0, 0] < 0.3                                     # the square filled from its dark border


def test_centre_bias_peaks_in_the_middle():
    m = centre_bias_maps(2, (9, 9))
    assert m.shape == (2, 9, 9) and np.unravel_index(m[0].argmax(), (9, 9)) == (4, 4)


def test_localization_scores_by_hand():
    mask = np.zeros((1, 10, 10), bool)
    mask[0, 2:4, 2:4] = True                                          # 4 pixels
    heat = np.zeros((1, 10, 10))
    heat[0, 2:4, 2:5] = 1.0                                           # 6 pixels ≥ 0.5, 4 of them in the mask
    iou, dice = iou_dice(heat, mask)
    assert iou[0] == pytest.approx(4 / 6) and dice[0] == pytest.approx(2 * 4 / 10)
    heat[0, 3, 2] = 2.0
    assert pointing_game(heat, mask, tolerance_px=0)[0]
    heat[0, 9, 9] = 3.0
    assert not pointing_game(heat, mask, tolerance_px=2)[0]
    # top 5 of 100 pixels: (9,9), (3,2), then ties in row order (2,2), (2,3), (2,4): 3 inside the mask
    assert top_fraction_hit_rate(heat, mask, 0.05)[0] == pytest.approx(3 / 5)


def test_spearman_identical_is_one_and_constant_is_zero():
    a = np.random.default_rng(0).random((2, 6, 6))
    np.testing.assert_allclose(spearman_per_image(a, a), 1.0)
    assert spearman_per_image(a, np.zeros_like(a))[0] == 0


def test_randomized_copy_leaves_original_untouched():
    model = build_tiny("flatten", seed=1)
    before = [w.copy() for w in model.get_weights()]
    copy = randomized_copy(model, ["predictions"], seed=3)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(copy.get_layer("predictions").get_weights()[0], before[-2])
    np.testing.assert_array_equal(copy.get_layer("conv").get_weights()[0], before[0])


def test_cascading_randomization_reports_every_layer_and_changes_gradcam():
    from xai_cxr.explain.cam import GradCAM
    model = build_tiny("flatten", seed=2, size=16, filters=6)
    x = np.random.default_rng(1).normal(size=(6, 16, 16, 1)).astype("float32")
    rows = cascading_randomization(model, x, 1, GradCAM, "conv", seed=5)
    assert [r["randomized_down_to"] for r in rows] == weighted_layers(model)[::-1]
    assert rows[-1]["spearman"] < 0.9


def test_ssim_of_maps_matches_scikit_image():
    """The sanity check's SSIM (TensorFlow's, 11-px Gaussian window, σ 1.5) against scikit-image's with the same
    window on map pairs that are alike, unlike and equal."""
    metrics = pytest.importorskip("skimage.metrics")
    from xai_cxr.explain.metrics.sanity import ssim_per_image
    rng = np.random.default_rng(4)
    a = rng.random((3, 24, 24)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
    b[2] = a[2]
    expected = [metrics.structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False) for x, y in zip(a, b)]
    np.testing.assert_allclose(ssim_per_image(a, b), expected, atol=2e-3)


def test_permuted_labels_keep_class_counts_and_follow_the_seed():
    y = np.array([0] * 30 + [1] * 70)
    p = permuted_labels(y, seed=3)
    assert np.bincount(p).tolist() == [30, 70]
    np.testing.assert_array_equal(p, permuted_labels(y, seed=3))
    assert (p != y).mean() > 0.2 and not np.array_equal(p, permuted_labels(y, seed=4))


def test_label_randomization_compares_maps_of_the_two_models():
    from xai_cxr.explain.cam import GradCAM
    model = build_tiny("flatten", seed=2, size=16, filters=6)
    other = build_tiny("flatten", seed=9, size=16, filters=6)
    x = np.random.default_rng(1).normal(size=(5, 16, 16, 1)).astype("float32")
    same = label_randomization(model, model, x, 1, GradCAM, "conv")
    assert same["spearman"] == pytest.approx(1.0) and same["ssim"] == pytest.approx(1.0, abs=1e-4)
    diff = label_randomization(model, other, x, 1, GradCAM, "conv")
    expected = spearman_per_image(GradCAM(model, "conv")(x, 1), GradCAM(other, "conv")(x, 1)).mean()
    assert diff["spearman"] == pytest.approx(expected) and diff["spearman"] < 0.9


def test_audit_on_all_images_with_predicted_targets_scores_localization_on_lesions_only():
    import keras
    import pandas as pd
    from keras import layers

    from xai_cxr.config import AuditConfig
    from xai_cxr.data import ImageSet
    from xai_cxr.explain.metrics.audit import audit
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (10, 16, 16), dtype=np.uint8)
    labels = np.arange(10) % 2
    masks = np.zeros((10, 16, 16), bool)
    masks[labels == 1, 4:8, 4:8] = True
    inp = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, activation="relu", name="block4_relu2")(inp)
    x = layers.GlobalAveragePooling2D(name="head_gap")(x)
    model = keras.Model(inp, layers.Dense(2, activation="softmax", name="head_predictions")(x),
                        name="cxr-small_classifier")
    test = ImageSet(images, pd.DataFrame({"label_idx": labels, "path": [f"{i}.png" for i in range(10)]}))
    cfg = AuditConfig(methods=("gradcam",), n_images=10, steps=4, sanity_images=2, images="all", target="predicted")
    res = audit(model, "cxr-small", test, masks, cfg, progress=lambda *_: None)
    assert len(res["indices"]) == 10                                    # negatives included
    assert res["localization"].n_images.tolist() == [5, 5, 5]          # gradcam, random, centre: lesions only
    positive_only = audit(model, "cxr-small", test, masks, AuditConfig(methods=("gradcam",), n_images=10, steps=4,
                                                                       sanity_images=2), progress=lambda *_: None)
    assert (labels[positive_only["indices"]] == 1).all()
