"""Top-k% mask and overlays."""
import numpy as np
import pytest

from xai_cxr.explain.overlay import jet_overlay, red_overlay, top_fraction_mask


@pytest.mark.parametrize("heat", [
    np.random.default_rng(0).random((40, 50)),
    np.zeros((40, 50)),                                          # all tied
    np.round(np.random.default_rng(1).random((40, 50)), 1),      # many ties at the threshold
])
def test_top_fraction_selects_exactly_5_percent_with_ties(heat):
    mask = top_fraction_mask(heat, 0.05)
    assert mask.sum() == 100
    assert heat[mask].min() >= heat[~mask].max()                 # nothing outside is hotter


def test_top_fraction_edges():
    h = np.random.default_rng(2).random((10, 10))
    assert top_fraction_mask(h, 0).sum() == 0 and top_fraction_mask(h, 1).all()
    with pytest.raises(ValueError):
        top_fraction_mask(h, 1.5)


def test_red_overlay_keeps_grayscale_outside_mask():
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    heat = rng.random((32, 32))
    out = red_overlay(gray, heat, 0.1, alpha=0.5)
    mask = top_fraction_mask(heat, 0.1)
    np.testing.assert_array_equal(out[~mask], np.repeat(gray[~mask][:, None], 3, 1))
    expected = np.round(0.5 * gray[mask][:, None] + 0.5 * np.array([255, 0, 0]))
    np.testing.assert_array_equal(out[mask], expected)
    assert (out[mask][:, 0] >= out[mask][:, 1]).all()


def test_red_overlay_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="differ"):
        red_overlay(np.zeros((8, 8), np.uint8), np.zeros((4, 4)))


def test_jet_overlay_blends_colormap():
    gray = np.full((4, 4), 100, np.uint8)
    out = jet_overlay(gray, np.zeros((4, 4)), alpha=0.5)
    import matplotlib
    c = np.array(matplotlib.colormaps["jet"](0.0)[:3]) * 255
    np.testing.assert_allclose(out[0, 0], np.round(0.5 * 100 + 0.5 * c), atol=1)
