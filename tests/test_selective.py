"""The error-level rule (selective classification with guaranteed risk): its bound against a synthetic classifier
whose error at every confidence is known, the exact binomial limit by hand, the films the detector refers left out
of the fit, an impossible level, saving, the rule as the predictor applies it, and MAPIE's Learn-then-Test on the
same holdouts."""
import math

import numpy as np
import pytest
from scipy.stats import binom

from xai_cxr.models.selective import SelectiveRule, error_upper_bound, fit_selective


def _calibrated_classifier(rng, n):
    """Confidence uniform on [0.5, 1], wrong with probability 0.4 (1 − confidence): the error of the films answered
    at confidence ≥ θ is exactly 0.2 (1 − θ), so level 0.05 is met from θ = 0.75 up (half the films answered)."""
    conf = rng.uniform(0.5, 1.0, n)
    return conf, rng.random(n) >= 0.4 * (1 - conf)


def test_answered_error_stays_under_the_level_in_all_but_delta_of_seeded_holdouts():
    level, delta, repeats = 0.05, 0.05, 200
    rng = np.random.default_rng(0)
    true_risk, thetas = [], []
    for _ in range(repeats):
        rule = fit_selective(*_calibrated_classifier(rng, 3000), error_level=level, delta=delta)
        thetas.append(rule.min_confidence)
        true_risk.append(0.2 * (1 - rule.min_confidence) if math.isfinite(rule.min_confidence) else 0.0)
    violations = np.mean(np.array(true_risk) > level)
    assert violations <= delta + 2 * math.sqrt(delta * (1 - delta) / repeats)
    # and it answers: the threshold sits above the oracle 0.75 (the price of the bound), rarely at "answer nothing"
    # (the binary search's path can end with every tested threshold over the bound)
    assert np.mean(np.isinf(thetas)) <= 0.1 and 0.75 < np.median(thetas) < 0.9


def test_a_looser_level_answers_more_films():
    conf, ok = _calibrated_classifier(np.random.default_rng(1), 3000)
    strict, loose = fit_selective(conf, ok, 0.05), fit_selective(conf, ok, 0.15)
    assert loose.holdout_coverage > strict.holdout_coverage and loose.min_confidence < strict.min_confidence
    assert strict.error_bound <= 0.05 and loose.error_bound <= 0.15


@pytest.mark.parametrize("errors, n, delta", [(0, 20, 0.05), (3, 100, 0.01), (17, 40, 0.1)])
def test_error_bound_is_the_rate_under_which_so_few_errors_have_probability_delta(errors, n, delta):
    """The one-sided Clopper-Pearson limit u solves P(Binomial(n, u) ≤ errors) = delta."""
    assert binom.cdf(errors, n, error_upper_bound(errors, n, delta)) == pytest.approx(delta, rel=1e-6)


def test_the_bound_at_the_chosen_threshold_is_recomputed_from_the_answered_films():
    conf, ok = _calibrated_classifier(np.random.default_rng(2), 3000)
    rule = fit_selective(conf, ok, 0.05)
    answered = conf >= rule.min_confidence
    k = math.ceil(math.log2(len(conf))) + 1
    assert rule.holdout_coverage == pytest.approx(answered.mean())
    assert rule.holdout_error == pytest.approx(1 - ok[answered].mean())
    assert rule.error_bound == pytest.approx(error_upper_bound(int((~ok[answered]).sum()), int(answered.sum()),
                                                               0.05 / k))


def test_films_the_detector_refers_are_left_out_of_the_fit():
    conf, ok = _calibrated_classifier(np.random.default_rng(3), 3000)
    confident_but_wrong = (conf > 0.9) & ~ok
    with_them = fit_selective(conf, ok, 0.05)
    without = fit_selective(conf, ok, 0.05, eligible=~confident_but_wrong)
    assert without.n_holdout == 3000 - confident_but_wrong.sum()
    assert without.min_confidence < with_them.min_confidence


def test_an_impossible_level_refers_every_film_and_survives_saving(tmp_path):
    conf = np.random.default_rng(4).uniform(0.5, 1, 200)
    rule = fit_selective(conf, np.arange(200) % 2 == 0, 0.05)       # right half the time at every confidence
    assert rule.min_confidence == math.inf and not rule.answers(conf).any()
    rule.save(tmp_path)
    back = SelectiveRule.load(tmp_path)
    assert back.min_confidence == math.inf and back.in_words() == rule.in_words()
    assert "every film is referred" in rule.in_words()
    assert SelectiveRule.load(tmp_path / "nowhere") is None
    with pytest.raises(ValueError, match="error_level"):
        fit_selective(conf, conf > 0.6, 0.0)


def test_a_small_holdout_with_few_errors_answers_every_film():
    """194 films, 2 wrong: the bound of answering all (4.6% at δ/9) meets 5%, while answering the most confident
    half (0 of 97 wrong: 5.1%) does not — the half-way test alone would refer every film."""
    conf = np.linspace(0.99, 0.6, 194)
    ok = np.ones(194, bool)
    ok[[150, 190]] = False
    rule = fit_selective(conf, ok, 0.05)
    assert rule.holdout_coverage == 1.0 and rule.error_bound <= 0.05
    assert error_upper_bound(0, 97, 0.05 / 9) > 0.05


def test_every_threshold_mapie_certifies_our_bound_certifies_and_ours_answers_at_least_as_many():
    """MAPIE's risk control (Learn-then-Test, Hoeffding-Bentkus p-values, Bonferroni over its 100 thresholds) on the
    same question — "answered" is MAPIE's positive prediction, "right" its positive label, so its precision is the
    accuracy of the answered films. Its p-values are never below the exact binomial tail and its correction is
    stricter than ours, so every threshold it certifies must pass our Clopper-Pearson bound; our search, tighter,
    must answer from no higher a threshold than MAPIE's lowest."""
    risk_control = pytest.importorskip("mapie.risk_control")
    level, delta = 0.05, 0.05
    for seed in range(5):
        rng = np.random.default_rng(seed)
        conf = 0.5 + 0.5 * rng.beta(4, 1, 2000)              # calibrated: right with probability = confidence
        right = rng.random(len(conf)) < conf
        mapie = risk_control.BinaryClassificationController(
            lambda c: np.column_stack([1 - c, c]), "precision", target_level=1 - level, confidence_level=1 - delta,
            fwer_method="bonferroni")
        mapie.calibrate(conf, right.astype(int))
        certified = np.atleast_1d(mapie.valid_predict_params).ravel()
        assert len(certified), "the synthetic holdout is large enough for MAPIE to certify a threshold"
        k = math.ceil(math.log2(len(conf))) + 1                 # our union bound's number of tests
        for theta in certified:
            answered = conf >= theta
            assert error_upper_bound(int((~right[answered]).sum()), int(answered.sum()), delta / k) <= level
        assert fit_selective(conf, right, level, delta).min_confidence <= certified.min()
