"""Is a whole folder of films like the training films? A classifier two-sample test (C2ST; Lopez-Paz & Oquab, ICLR
2017; Koch et al. 2024 for chest films): a linear classifier tries to tell the folder's films from the model's
holdout films by their out-of-distribution detector's z-scores at every depth (``models/ood.py``). If the two
samples come from one distribution, its cross-validated ROC-AUC is 0.5 up to chance; the permutation p-value is the
share of label-shuffled runs that do as well (scikit-learn's ``permutation_test_score``), the CI a bootstrap of the
films. With tens of films a folder-level test has far more evidence than any single film's flag.

The rule (``FOREIGN_P``, ``PERMUTATIONS``): a folder is called foreign when p < 0.001 over 1,000 permutations (the
smallest p that many permutations can give is 1/1,001)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FOREIGN_P = 0.001
PERMUTATIONS = 1000
MIN_FILMS = 5               # each sample needs this many films: fewer leave a cross-validation fold with one sample


@dataclass(frozen=True)
class ShiftTest:
    auc: float                          # cross-validated ROC-AUC of telling the folder from the reference (0.5 = alike)
    auc_ci95: tuple[float, float]       # bootstrap of the films' out-of-fold scores
    p_value: float                      # permutation p-value of the AUC
    n_reference: int
    n_folder: int
    permutations: int                   # label shuffles run (fewer than asked once the folder cannot be foreign)

    @property
    def foreign(self) -> bool:
        return self.p_value < FOREIGN_P

    def in_words(self, what: str = "these films") -> str:
        if self.foreign:
            p = (f"p < {FOREIGN_P:g}: none of {self.permutations} label shuffles did as well"
                 if self.p_value * (self.permutations + 1) <= 1 + 1e-9 else f"p = {self.p_value:.4f}")
            return (f"{what} are not like the training films: a classifier tells them from the model's holdout films "
                    f"with ROC-AUC {self.auc:.2f} [{self.auc_ci95[0]:.2f}, {self.auc_ci95[1]:.2f}] ({p}, n = "
                    f"{self.n_folder}); the metrics below do not describe the model on Kermany-like films")
        return (f"{what}: no shift found against the model's holdout films (ROC-AUC {self.auc:.2f} "
                f"[{self.auc_ci95[0]:.2f}, {self.auc_ci95[1]:.2f}], p = {self.p_value:.3f}, n = {self.n_folder})")


def _classifier():
    """Fisher's linear discriminant: a linear classifier fitted in closed form, 4× faster than a logistic
    regression through a thousand permutation refits."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    return LinearDiscriminantAnalysis()


def _folds(y: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import StratifiedKFold
    return StratifiedKFold(n_splits=max(2, min(folds, int(np.bincount(y).min()))), shuffle=True, random_state=seed)


def c2st(reference: np.ndarray, folder: np.ndarray, permutations: int = PERMUTATIONS, folds: int = 5,
         seed: int = 0, n_boot: int = 1000) -> ShiftTest:
    """The classifier two-sample test of ``folder`` (N, D) against ``reference`` (M, D) features; ValueError when
    either has fewer than ``MIN_FILMS`` films."""
    if min(len(reference), len(folder)) < MIN_FILMS:
        raise ValueError(f"the shift test needs {MIN_FILMS} films on each side, got {len(folder)} against "
                         f"{len(reference)}")
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict, permutation_test_score
    x = np.vstack([np.asarray(reference, np.float64), np.asarray(folder, np.float64)])
    y = np.r_[np.zeros(len(reference), int), np.ones(len(folder), int)]
    cv = _folds(y, folds, seed)
    # in batches of 100 label shuffles, stopping once the folder can no longer be called foreign: a folder like the
    # reference costs a hundred refits, a foreign one the full ``permutations``
    auc, above, done = None, 0, 0
    while done < permutations:
        batch = min(100, permutations - done)
        score, perm_scores, _ = permutation_test_score(_classifier(), x, y, cv=cv, n_permutations=batch,
                                                       scoring="roc_auc", random_state=seed + done)
        auc = score if auc is None else auc
        above, done = above + int((perm_scores >= auc).sum()), done + batch
        if (above + 1) / (permutations + 1) >= FOREIGN_P:
            break
    p = (above + 1) / (done + 1)
    scores = cross_val_predict(_classifier(), x, y, cv=cv, method="predict_proba")[:, 1]
    rng = np.random.default_rng(seed)
    ref, own = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    boot = []
    for _ in range(n_boot):                     # films resampled within each sample: both stay represented
        idx = np.r_[rng.choice(ref, len(ref)), rng.choice(own, len(own))]
        boot.append(roc_auc_score(y[idx], scores[idx]))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return ShiftTest(float(auc), (float(lo), float(hi)), float(p), len(reference), len(folder), done)
