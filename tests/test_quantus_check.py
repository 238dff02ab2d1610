"""The project's explanation metrics against Quantus (Hedström et al., JMLR 2023), the field's library, on the same
maps and masks: the pointing game (tolerance 0: Quantus has none), relevance mass and rank accuracy, and ROAD's
noisy linear imputation (Quantus's own function, noise 0). Quantus's ROAD metric itself wants a model it can
wrap; the check here is on the imputation, where the two could differ (tolerance 1e-9 on the imputed values,
exact equality on the pointing game, 1e-6 on mass and rank)."""
import numpy as np
import pytest

from xai_cxr.explain.metrics.faithfulness import noisy_linear_impute
from xai_cxr.explain.metrics.localization import pointing_game, relevance_mass, relevance_rank

quantus = pytest.importorskip("quantus", reason="Quantus is not installed (it is in the `test` extra)")


@pytest.fixture
def maps_and_masks():
    """12 smooth random maps on 24 × 24, masks of different sizes; half the maps peak inside their mask."""
    import cv2
    rng = np.random.default_rng(7)
    heats, masks = [], []
    for i in range(12):
        h = cv2.GaussianBlur(rng.random((24, 24)), (0, 0), 2.0)
        m = np.zeros((24, 24), bool)
        r, c, s = rng.integers(2, 14), rng.integers(2, 14), rng.integers(3, 9)
        m[r:r + s, c:c + s] = True
        if i % 2 == 0:                                  # move the peak inside the mask
            h[r + s // 2, c + s // 2] = h.max() + 1.0
        heats.append(h)
        masks.append(m)
    return np.stack(heats).astype(np.float32), np.stack(masks)


def _quantus(metric, heats, masks):
    x = np.zeros((len(heats), 1, 24, 24), np.float32)
    return np.asarray(metric(disable_warnings=True)(model=None, x_batch=x, y_batch=np.ones(len(heats), int),
                                                    a_batch=heats[:, None], s_batch=masks[:, None].astype(float),
                                                    channel_first=True), np.float64)


def test_pointing_game_equals_quantus(maps_and_masks):
    heats, masks = maps_and_masks
    ours = pointing_game(heats, masks, tolerance_px=0)
    theirs = _quantus(quantus.PointingGame, heats, masks).astype(bool)
    assert ours.tolist() == theirs.tolist() and 0 < ours.sum() < len(ours)     # both hits and misses compared


def test_relevance_mass_and_rank_equal_quantus(maps_and_masks):
    heats, masks = maps_and_masks
    np.testing.assert_allclose(relevance_mass(heats, masks), _quantus(quantus.RelevanceMassAccuracy, heats, masks),
                               atol=1e-6)
    np.testing.assert_allclose(relevance_rank(heats, masks), _quantus(quantus.RelevanceRankAccuracy, heats, masks),
                               atol=1e-6)


def test_road_imputation_equals_quantus_noisy_linear_imputation():
    from quantus.functions.perturb_func import noisy_linear_imputation
    rng = np.random.default_rng(3)
    gray = rng.random((20, 20)) * 255
    removed = rng.random((20, 20)) < 0.4
    removed[0, :] = True                               # edges and a full row, where neighbours are missing
    ours = noisy_linear_impute(gray, removed, noise=0.0)
    theirs = noisy_linear_imputation(gray[None].copy(), np.flatnonzero(removed), noise=0.0)[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
