"""The out-of-distribution score: Mahalanobis arithmetic against numpy/scipy, its threshold's meaning, and where
the truth is known — a phantom model shown real films, and its own phantoms."""
import numpy as np
import pytest

from xai_cxr.models.ood import OODDetector, fit_ood


def _gaussians(rng, n, shift=0.0, d=8):
    labels = np.arange(n) % 2
    means = np.stack([np.zeros(d), np.full(d, 3.0)])
    return rng.normal(0, 1, (n, d)) + means[labels] + shift, labels


def test_score_is_squared_mahalanobis_to_the_nearest_class_mean_with_ledoit_wolf_covariance():
    from scipy.spatial.distance import mahalanobis
    from sklearn.covariance import LedoitWolf
    rng = np.random.default_rng(0)
    x, y = _gaussians(rng, 400)
    det = fit_ood(x, y, x)
    means = np.stack([x[y == 0].mean(0), x[y == 1].mean(0)])
    np.testing.assert_allclose(det.means, means)
    precision = LedoitWolf(assume_centered=True).fit(x - means[y]).precision_
    np.testing.assert_allclose(det.precision, precision, rtol=1e-10)
    q = rng.normal(1.5, 2, (5, 8))
    by_hand = [min(mahalanobis(v, m, precision) ** 2 for m in means) for v in q]
    np.testing.assert_allclose(det.score(q), by_hand, rtol=1e-9)


def test_threshold_flags_about_one_percent_of_new_in_distribution_features_and_all_far_ones():
    rng = np.random.default_rng(1)
    train, y = _gaussians(rng, 2000)
    calib, _ = _gaussians(rng, 2000)
    det = fit_ood(train, y, calib, quantile=0.99)
    same, _ = _gaussians(rng, 4000)
    far, _ = _gaussians(rng, 500, shift=-6.0)        # ≥ 3 σ from both class means in every feature
    assert 0.004 <= det.flag(same).mean() <= 0.02          # the 99th percentile: ~1% of new in-distribution rows
    assert det.flag(far).mean() == 1.0


def test_detector_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(2)
    x, y = _gaussians(rng, 200)
    det = fit_ood(x, y, x, layer="head_gap", calibrated_on="train")
    det.save(tmp_path)
    back = OODDetector.load(tmp_path)
    np.testing.assert_array_equal(back.score(x), det.score(x))
    assert (back.threshold, back.layer, back.calibrated_on) == (det.threshold, "head_gap", "train")
    assert OODDetector.load(tmp_path / "none") is None


@pytest.mark.slow
def test_phantom_model_flags_real_films_but_not_its_own_phantoms(kermany224, tmp_path):
    """Truth known both ways: real Kermany films are far from anything a phantom model trained on (≥ 95%
    flagged), new phantoms are not (≤ 10%)."""
    from xai_cxr.data import load_images, scan_dataset
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    from xai_cxr.serve.inference import Predictor, phantom_predictor
    pred = phantom_predictor(tmp_path / "cache")
    assert isinstance(pred, Predictor) and pred.ood is not None
    size = pred.card.image_size
    fresh = write_phantom_dataset(tmp_path / "fresh", PhantomConfig(image_size=size, n_train=0, n_test=50, seed=99))
    phantoms = load_images(scan_dataset(fresh), size, progress=False).images
    real = scan_dataset(kermany224)
    real = real[real.split == "test"].groupby("label").head(50)
    films = load_images(real, size, progress=False).images
    on_phantoms = np.mean([p.out_of_distribution for p in pred.predict(phantoms, mc=False)])
    on_films = [p for p in pred.predict(films, mc=False)]
    assert on_phantoms <= 0.10
    assert np.mean([p.out_of_distribution for p in on_films]) >= 0.95
    assert on_films[0].warning.startswith("outside what this model has seen")
