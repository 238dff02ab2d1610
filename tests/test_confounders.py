"""Planted shortcuts: exact masks, deterministic geometry at any size, a contaminated copy that changes only what
it should, the scores against numpy by hand, bad input, and an end-to-end run on phantoms."""
import hashlib

import cv2
import numpy as np
import pandas as pd
import pytest

from xai_cxr.data.confounders import CONFOUNDERS, apply, check_degree, contaminate, get_confounder, negative_class
from xai_cxr.explain.metrics.shortcut import confounder_sensitivity, ncc


def _film(h, w, seed=0):
    """Mid-gray noise in [1, 254]: no pixel already has a confounder's value (0 or 255)."""
    return np.random.default_rng(seed).integers(1, 255, (h, w)).astype(np.uint8)


@pytest.mark.parametrize("kind", list(CONFOUNDERS))
@pytest.mark.parametrize("shape", [(64, 64), (224, 224), (320, 320), (400, 512)])
def test_mask_is_exactly_the_changed_pixels_and_deterministic(kind, shape):
    img = _film(*shape)
    out, mask = get_confounder(kind)(img, np.random.default_rng(3))
    assert np.array_equal(out != img, mask) and mask.any()
    assert np.array_equal(img, _film(*shape)), "the input image must not be modified"
    again, mask2 = get_confounder(kind)(img, np.random.default_rng(3))
    assert np.array_equal(out, again) and np.array_equal(mask, mask2)


@pytest.mark.parametrize("size", [96, 320, 640])
def test_geometry_is_defined_on_a_320_frame_and_scales(size):
    img = _film(size, size)
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    ys, xs = np.nonzero(CONFOUNDERS["tag"](img, rng())[1])
    assert xs.max() < 0.6 * size and ys.min() > 0.8 * size              # bottom-left corner
    ys, xs = np.nonzero(CONFOUNDERS["hyperintensities"](img, rng())[1])
    assert set(np.unique(xs < size / 2)) == {True, False}               # one stripe each side
    assert xs.min() < 0.1 * size and xs.max() > 0.9 * size
    ys, xs = np.nonzero(CONFOUNDERS["obstruction"](img, rng())[1])
    assert ys.min() > 0.8 * size and ys.max() == size - 1 and xs.min() == 0
    # the same share of the image at every size (within rasterisation error)
    shares = [CONFOUNDERS["hyperintensities"](_film(s, s), rng())[1].mean() for s in (160, 320, 640)]
    assert max(shares) - min(shares) < 0.002


def test_apply_seeds_each_image_and_keeps_shapes():
    imgs = np.stack([_film(64, 64, s) for s in range(3)])
    a, ma = apply("tag", imgs, seed=1)
    b, mb = apply("tag", imgs, seed=1)
    assert a.shape == imgs.shape and np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(apply("tag", imgs, seed=2)[1], ma)


def test_sensitivity_and_ncc_match_numpy_by_hand():
    rng = np.random.default_rng(0)
    heats = rng.random((3, 20, 20))                                      # no ties
    masks = np.zeros((3, 20, 20), bool)
    masks[:, 15:, :6] = True
    got = confounder_sensitivity(heats, masks, 0.10)
    for i in range(3):
        threshold = np.sort(heats[i].ravel())[::-1][39]                 # the 40th highest of 400 = top 10%
        top = heats[i] >= threshold
        assert got[i] == pytest.approx((top & masks[i]).sum() / masks[i].sum())
    perfect = np.where(masks, 1.0, 0.0) + 1e-3 * heats                  # the map is the mask: all 30 pixels in top 40
    assert confounder_sensitivity(perfect, masks, 0.10) == pytest.approx(np.ones(3))
    other = rng.random((3, 20, 20))
    expected = [np.corrcoef(heats[i].ravel(), other[i].ravel())[0, 1] for i in range(3)]
    assert ncc(heats, other) == pytest.approx(expected)
    assert ncc(heats, 2 * heats + 1) == pytest.approx(np.ones(3))
    assert ncc(heats, np.zeros_like(heats)) == pytest.approx(np.zeros(3))   # a flat map: 0, not NaN


def test_bad_input_names_the_choices():
    with pytest.raises(ValueError, match="tag, hyperintensities, obstruction"):
        get_confounder("sticker")
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            check_degree(bad)
    with pytest.raises(ValueError, match=r"\['CAT', 'DOG'\]"):
        negative_class(("CAT", "DOG"))
    assert negative_class(("PNEUMONIA", "normal")) == 1


def test_contaminated_copy_changes_only_the_chosen_share_of_one_class_and_split(tmp_path):
    from xai_cxr.data import read_gray, scan_dataset
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    src = write_phantom_dataset(tmp_path / "src", PhantomConfig(image_size=48, n_train=10, n_test=4))
    manifest = scan_dataset(src)
    out = contaminate(manifest, src, tmp_path / "dst", "obstruction", 0.4, seed=5)
    assert list(out.columns) == ["path", "split", "label", "confounded"]
    assert pd.read_csv(tmp_path / "dst" / "confounders.csv")["confounded"].sum() == 4
    chosen = out[out.confounded]
    assert len(chosen) == 4 and set(chosen.label) == {"PNEUMONIA"} and set(chosen.split) == {"train"}
    digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()  # noqa: E731
    for (src_path, row) in zip(manifest.path, out.itertuples()):
        if row.confounded:
            changed = read_gray(row.path) != read_gray(src_path)
            assert changed.any() and row.path.endswith(".png")
        else:
            assert digest(row.path) == digest(src_path)
    assert len(scan_dataset(tmp_path / "dst")) == len(manifest)     # masks copied, still a valid data set
    again = contaminate(manifest, src, tmp_path / "dst2", "obstruction", 0.4, seed=5)
    assert list(again.confounded) == list(out.confounded)


@pytest.mark.slow
def test_tag_on_every_pneumonia_film_is_found_and_the_control_is_not_flipped(tmp_path, capsys):
    """Tiny phantoms: a model trained with the tag on all PNEUMONIA training films flips NORMAL test films when
    the tag is added, and Grad-CAM's top 10% covers far more of the tag than a random map; the degree-0 model is
    barely moved by the tag."""
    from xai_cxr.cli import main
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    root = write_phantom_dataset(tmp_path / "ph", PhantomConfig(image_size=64, n_train=100, n_test=30))
    assert main(["audit", "--confounder", "tag", "--degree", "0", "1", "--data-dir", str(root),
                 "--backbone", "cxr-small", "--weights", "none", "--image-size", "64", "--epochs1", "10",
                 "--batch-size", "16", "--methods", "gradcam", "--n-images", "30",
                 "--weights-dir", str(tmp_path / "w"), "--results-dir", str(tmp_path / "r"),
                 "--copy-dir", str(tmp_path / "copies")]) == 0
    runs = pd.read_csv(tmp_path / "r" / "confounder_tag" / "confounder_runs.csv").set_index("degree")
    table = pd.read_csv(tmp_path / "r" / "confounder_tag" / "confounder_audit.csv")
    at = lambda d, m: table[(table.degree == d) & (table.method == m)].iloc[0]  # noqa: E731
    assert runs.loc[1.0, "flips"] >= 5
    assert at(1.0, "gradcam").sensitivity_top10 > at(1.0, "random").sensitivity_top10 + 0.3
    assert runs.loc[0.0, "flips"] < runs.loc[1.0, "flips"] / 2
    shift = runs.p_positive_negatives_confounded - runs.p_positive_negatives_clean
    assert shift.loc[0.0] < shift.loc[1.0]
    assert (tmp_path / "r" / "confounder_tag" / "gallery_100.png").is_file()


def test_heat_in_regions_counts_the_top_pixels_by_hand():
    from xai_cxr.explain.metrics.regions import heat_in_regions, region_masks
    heat = np.zeros((100, 100))
    heat[:5, :] = 1 + np.arange(500).reshape(5, 100) / 1000        # exactly the top 500 pixels = top 5%
    table = heat_in_regions(heat[None], 0.05).set_index("region")
    assert table.loc["border band (outer 8%)", "share_of_top_heat"] == pytest.approx(1.0)
    assert table.loc["corners (15% squares)", "share_of_top_heat"] == pytest.approx(30 / 100)   # cols 0-14, 85-99
    assert table.loc["central column (heart, mediastinum)", "share_of_top_heat"] == 0
    assert table.loc["border band (outer 8%)", "share_of_image"] == pytest.approx(1 - 0.84 ** 2)
    assert table.loc["corners (15% squares)", "ratio_to_random"] == pytest.approx(0.30 / (4 * 0.15 ** 2))
    masks = region_masks(200)
    assert masks["corners (15% squares)"].mean() == pytest.approx(4 * 0.15 ** 2)
    assert not (masks["lung fields (approx.)"] & masks["central column (heart, mediastinum)"]).any()


def test_cli_bad_confounder_input_is_a_clear_error(tmp_path, capsys):
    from xai_cxr.cli import main
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    root = write_phantom_dataset(tmp_path / "ph", PhantomConfig(image_size=32, n_train=2, n_test=2))
    with pytest.raises(SystemExit):
        main(["audit", "--confounder", "sticker", "--data-dir", str(root)])
    assert "tag" in capsys.readouterr().err                                  # argparse lists the three
    assert main(["audit", "--confounder", "tag", "--degree", "1.5", "--data-dir", str(root)]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    pets = tmp_path / "pets"
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (pets / split / cls).mkdir(parents=True)
            for i in range(2):
                cv2.imwrite(str(pets / split / cls / f"{cls}{i}.png"), np.full((16, 16), 100 + i, np.uint8))
    assert main(["audit", "--confounder", "tag", "--data-dir", str(pets), "--classes", "auto"]) == 2
    assert "['cat', 'dog']" in capsys.readouterr().err
    for flag in (["--epochs1", "3"], ["--mlflow-store", "elsewhere"], ["--population-age", "18-90"]):
        with pytest.raises(SystemExit, match="only apply with --confounder"):   # training flags need --confounder
            main(["audit", *flag, "--data-dir", str(root)])


def _result(degree, flips, over_random):
    import pandas as pd

    from xai_cxr.explain.metrics.shortcut import ShortcutResult
    methods = list(over_random) + ["random", "centre"]
    sens = [0.10 + over_random.get(m, 0.0) for m in methods[:-2]] + [0.10, 0.0]
    table = pd.DataFrame({"method": methods, "sensitivity_top10": sens,
                          "over_random": [v - 0.10 for v in sens]})
    return ShortcutResult({"confounder": "tag", "degree": degree, "flips": flips, "negatives": 100}, table, {})


def test_lesson_says_when_the_run_cannot_tell_and_names_false_alarms():
    from xai_cxr.explain.metrics.shortcut import lesson
    text = lesson([_result(0.0, 2, {"gradcam": 0.01, "smoothgrad": 0.13}), _result(1.0, 3, {"gradcam": 0.2})])
    control, tagged = text.splitlines()
    assert "quiet for gradcam" in control and "FALSE ALARM for smoothgrad (+0.13)" in control
    assert "CANNOT TELL" in tagged and "only 3 of 100" in tagged
    used = lesson([_result(1.0, 97, {"gradcam": 0.76})])
    assert "uses the tag (97 of 100" in used and "0.86-0.86" in used and "CANNOT" not in used
    reacting = lesson([_result(0.0, 30, {"gradcam": 0.5})])          # the clean model reacts: no control
    assert "no false-alarm control" in reacting and "ALARM" not in reacting


@pytest.mark.slow
def test_a_wedge_on_every_pneumonia_film_is_found_by_occlusion_where_gradcam_misses_it(tmp_path):
    """The absence case on phantoms: a black wedge on every PNEUMONIA training film; on the flip set the
    occlusion map (patches filled with the film's mean) puts most of the wedge in its top 10%, Grad-CAM no more
    than a random map. (Measured 2026-11-30: occlusion 0.67, Grad-CAM 0.12, random 0.13; the protocol's 0.8 is not
    reached, see docs/results.md.)"""
    from xai_cxr.cli import main
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    root = write_phantom_dataset(tmp_path / "ph", PhantomConfig(image_size=64, n_train=100, n_test=30))
    assert main(["audit", "--confounder", "obstruction", "--degree", "1", "--data-dir", str(root),
                 "--backbone", "cxr-small", "--weights", "none", "--image-size", "64", "--epochs1", "10",
                 "--batch-size", "16", "--methods", "gradcam", "occlusion", "--n-images", "20",
                 "--weights-dir", str(tmp_path / "w"), "--results-dir", str(tmp_path / "r"),
                 "--copy-dir", str(tmp_path / "copies")]) == 0
    runs = pd.read_csv(tmp_path / "r" / "confounder_obstruction" / "confounder_runs.csv").set_index("degree")
    table = pd.read_csv(tmp_path / "r" / "confounder_obstruction" / "confounder_audit.csv").set_index("method")
    assert runs.loc[1.0, "flips"] >= 5
    occlusion, gradcam = table.loc["occlusion", "sensitivity_top10"], table.loc["gradcam", "sensitivity_top10"]
    assert occlusion >= 0.5 and occlusion > table.loc["random", "sensitivity_top10"] + 0.3
    assert gradcam < occlusion - 0.3
