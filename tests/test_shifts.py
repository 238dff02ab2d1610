"""Synthetic film shifts: each against its definition by hand, seeded, shape and type kept."""
import numpy as np
import pytest

from xai_cxr.data.shifts import SHIFTS, shift_films


def _films(n=3, size=40):
    rng = np.random.default_rng(0)
    return rng.integers(30, 220, (n, size, size)).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_every_shift_keeps_shape_and_type_changes_the_films_and_is_seeded(name):
    films = _films()
    out = shift_films(films, name, seed=5)
    assert out.shape == films.shape and out.dtype == np.uint8 and not np.array_equal(out, films)
    assert np.array_equal(out, shift_films(films, name, seed=5))


def test_gamma_is_the_power_law_and_contrast_squeezes_around_each_films_mean():
    films = _films()
    np.testing.assert_array_equal(shift_films(films, "gamma"), np.floor(255 * (films / 255) ** 1.6).astype(np.uint8))
    mean = films.astype(float).mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(shift_films(films, "contrast"), mean + 0.6 * (films - mean), atol=1.0)


def test_zoom_out_puts_the_film_at_80_percent_inside_a_black_border():
    films = np.full((1, 40, 40), 200, np.uint8)
    out = shift_films(films, "zoom_out")[0]
    assert (out[:4] == 0).all() and (out[:, :4] == 0).all() and (out[4:36, 4:36] == 200).all()


def test_an_unknown_shift_names_the_known_ones():
    with pytest.raises(ValueError, match="zoom_out"):
        shift_films(_films(), "fisheye")
