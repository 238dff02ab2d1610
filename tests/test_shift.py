"""The folder shift test (models/shift.py): calibrated under no shift, powerful under a mean shift, its AUC the
cross-validated one scikit-learn computes on the same folds."""
import numpy as np
import pytest

from xai_cxr.models.shift import c2st


def test_two_samples_of_one_distribution_are_rarely_called_shifted():
    """Over 20 seeded repeats the p-values of same-distribution samples stay roughly uniform: at 0.1, about 2 of
    20 fall below by chance; 6 or more would happen with probability < 1.2% if the test were calibrated."""
    ps = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        ps.append(c2st(rng.normal(size=(60, 4)), rng.normal(size=(30, 4)), permutations=49, folds=3, seed=seed,
                       n_boot=20).p_value)
    ps = np.array(ps)
    assert (ps < 0.1).sum() <= 5 and 0.2 < np.median(ps) < 0.8


def test_a_mean_shift_is_found_and_only_p_below_one_in_a_thousand_is_called_foreign():
    from dataclasses import replace
    rng = np.random.default_rng(1)
    t = c2st(rng.normal(size=(200, 4)), rng.normal(size=(44, 4)) + [1.0, 0, 0, 0], permutations=199, seed=1,
             n_boot=200)
    # no shuffle did as well in the first 100; with 199 asked p can never fall below 0.001, so it stops there
    assert t.p_value == 1 / 101 and t.permutations == 100 and t.auc > 0.75 and t.auc_ci95[0] > 0.6
    assert not t.foreign and "no shift found" in t.in_words()
    floor = replace(t, p_value=1 / 1001, permutations=1000)
    assert floor.foreign and "are not like the training films" in floor.in_words()
    assert "p < 0.001: none of 1000 label shuffles did as well" in floor.in_words()


def test_the_auc_is_the_mean_out_of_fold_auc_on_the_same_folds():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(60, 3)), rng.normal(size=(25, 3)) + 0.4
    x, y = np.vstack([a, b]), np.r_[np.zeros(60, int), np.ones(25, int)]
    aucs = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=3).split(x, y):
        clf = LinearDiscriminantAnalysis().fit(x[train], y[train])
        aucs.append(roc_auc_score(y[test], clf.decision_function(x[test])))
    assert abs(c2st(a, b, permutations=9, seed=3, n_boot=20).auc - np.mean(aucs)) < 1e-12


def test_fewer_than_five_films_on_a_side_is_refused_with_the_counts():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="5 films on each side, got 4 against 30"):
        c2st(rng.normal(size=(30, 3)), rng.normal(size=(4, 3)))
