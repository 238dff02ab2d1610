""""What does my model read?": the width, border and corner probes against three hand-built models whose behaviour is
known, and the metadata-only baseline on synthetic files where the label is, or is not, carried by the aspect."""
import cv2
import numpy as np
import pytest

from xai_cxr.explain.metrics.probes import blur_region, region_masks, verdict, what_the_model_reads, width_scaled

S = 64


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _films(n=40, seed=0, marker=None):
    """Gray films filling the whole frame (70-110), a central 'lesion' square of brightness 90-200; ``marker``:
    a boolean per film, a white 5×5 marker in the bottom-left corner where True."""
    rng = np.random.default_rng(seed)
    films = rng.integers(70, 110, (n, S, S)).astype(np.uint8)
    films[:, 24:40, 24:40] = rng.integers(90, 200, n)[:, None, None]
    if marker is not None:
        films[marker, S - 10:S - 5, 6:11] = 255
    return films


def _as_proba(p):
    return np.stack([1 - p, p], 1)


def reads_width(images):
    """P(positive) rises as the film's content gets narrower: it reads only the share of non-black columns."""
    extent = (images.max(axis=1) > 0).mean(axis=1)
    return _as_proba(_sigmoid(40 * (0.95 - extent)))


def reads_corner_marker(images):
    """P(positive) is high when a white marker sits in the bottom-left corner square."""
    corner = images[:, S - 16:, :16].reshape(len(images), -1)
    return _as_proba(np.where(corner.max(1) >= 250, 0.9, 0.1))


def reads_the_lesion(images):
    """P(positive) from the brightness of the film's centre only."""
    return _as_proba(_sigmoid((images[:, 28:36, 28:36].mean((1, 2)) - 145) / 10))


def _verdicts(table):
    return dict(zip(table.probe, table.verdict.str.startswith("pass")))


def test_width_scaled_keeps_the_height_and_scales_the_width_about_the_centre():
    img = np.zeros((1, 8, 20), np.uint8)
    img[:, :, 5:15] = 200                                            # a bar 10 px wide, centred
    narrow = width_scaled(img, 0.8)[0]
    cols = np.flatnonzero(narrow[4] > 100)
    assert (narrow[:, cols] > 100).all(axis=0).all()                # full height kept
    assert len(cols) == 8 and cols[0] == 6                          # 10 → 8 px, still centred: 2 + 0.8·5 = 6


def test_the_width_reader_fails_the_width_probe_and_passes_the_corners():
    films = _films()
    labels = np.arange(len(films)) % 2
    report = what_the_model_reads(reads_width, films, labels)
    v = _verdicts(report.verdict)
    assert not v[report.verdict.probe[0]]
    assert all(v[p] for p in report.verdict.probe[1:])
    row = report.width.set_index("width_factor")
    # by hand: at ×0.8 the content spans 52 of 64 columns (51.2 px, the edge pixel blended) → P = σ(40·(0.95 − 52/64))
    assert (width_scaled(films, 0.8).max(axis=1) > 0).sum(axis=1).tolist() == [52] * len(films)
    assert row.loc[0.8, "mean_p_positive_negatives"] == pytest.approx(_sigmoid(40 * (0.95 - 52 / 64)), abs=1e-6)
    assert row.loc[1.0, "specificity"] == 1.0 and row.loc[0.8, "specificity"] == 0.0


def test_the_marker_reader_fails_the_bottom_left_corner_probe_only():
    marker = np.arange(40) % 4 == 0                                  # 10 of 40 films carry the marker
    films = _films(marker=marker)
    labels = marker.astype(int)
    report = what_the_model_reads(reads_corner_marker, films, labels)
    regions = report.regions.set_index("region")
    assert regions.loc["bottom-left corner", "flips"] == pytest.approx(10 / 40)       # exactly the marked films
    assert regions.loc["bottom-left corner", "mean_change"] == pytest.approx(-0.8 * 10 / 40)
    for other in ("top-left corner", "top-right corner", "bottom-right corner"):
        assert regions.loc[other, "flips"] == 0.0
    v = _verdicts(report.verdict)
    assert not v["bottom-left corner blurred away"]
    assert v["top-right corner blurred away"] and v[report.verdict.probe[0]]        # width: the marker survives


def test_the_lesion_reader_passes_every_probe():
    films = _films(seed=1)
    labels = (films[:, 30, 30] > 145).astype(int)
    report = what_the_model_reads(reads_the_lesion, films, labels)
    assert report.verdict.verdict.eq("pass").all(), report.verdict


def test_blur_region_wipes_a_marker_and_keeps_the_rest():
    films = _films(n=2, marker=np.array([True, False]))
    mask = region_masks(S, S)["bottom-left corner"]
    out = blur_region(films, mask)
    assert out[0][mask].max() < 250                                 # the marker is gone
    np.testing.assert_array_equal(out[:, ~mask], films[:, ~mask])   # nothing else changed
    assert abs(float(out[1][mask].mean()) - float(films[1][mask].mean())) < 10      # brightness kept


def test_verdict_reads_the_thresholds():
    import pandas as pd
    width = pd.DataFrame({"width_factor": [0.8, 1.0, 1.25], "mean_p_positive_negatives": [0.30, 0.25, 0.20],
                          "mean_p_positive_all": [0.5] * 3, "specificity": [0.8] * 3, "sensitivity": [0.9] * 3})
    regions = pd.DataFrame({"region": ["border", "top-left corner", "bottom-left corner"], "flips": [0.08, 0.06, 0.0],
                            "mean_change": [0.1, 0.01, -0.02], "mean_abs_change": [0.12, 0.01, 0.06]})
    table = verdict(width, regions, {"auc": 0.87, "ci95": [0.79, 0.94], "feature_auc": {"aspect": 0.87}})
    v = table.verdict.tolist()
    assert v[0] == "pass"                                            # 0.05 ≤ 0.10
    assert v[1] == "pass"                                            # the border: 8% ≤ 10%, 0.12 ≤ 0.15
    assert v[2].startswith("FAIL") and v[3].startswith("FAIL")       # corners: 6% > 5% flips; |Δ| 0.06 > 0.05
    assert v[4].startswith("WARNING")                                # AUC 0.87 > 0.70


# --- the metadata-only baseline ---

def _write_films(folder, labels, sizes, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i, (y, (w, h)) in enumerate(zip(labels, sizes)):
        img = rng.integers(0, 255, (h, w), np.uint8)
        p = folder / f"film{i:03d}_{y}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def test_metadata_baseline_finds_a_label_carried_by_the_aspect(tmp_path):
    from xai_cxr.data.metadata import film_metadata, metadata_baseline
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 2
    heights = rng.integers(40, 60, 60)
    aspect = np.where(labels == 1, rng.uniform(1.45, 1.7, 60), rng.uniform(1.1, 1.3, 60))
    paths = _write_films(tmp_path, labels, list(zip((heights * aspect).astype(int), heights)))
    meta = film_metadata(paths)
    assert meta.loc[0, "width"] == int(heights[0] * aspect[0]) and meta.loc[0, "bit_depth"] == 8
    out = metadata_baseline(meta, labels, n_boot=200)
    assert out["auc"] > 0.95 and out["feature_auc"]["aspect"] > 0.95


def test_metadata_baseline_is_at_chance_when_nothing_carries_the_label(tmp_path):
    from xai_cxr.data.metadata import film_metadata, metadata_baseline
    rng = np.random.default_rng(1)
    labels = np.arange(60) % 2
    sizes = list(zip(rng.integers(40, 90, 60), rng.integers(40, 90, 60)))
    out = metadata_baseline(film_metadata(_write_films(tmp_path, labels, sizes)), labels, n_boot=500)
    assert out["ci95"][0] < 0.5 < out["ci95"][1]


def test_metadata_baseline_keeps_a_patients_films_on_one_side(tmp_path):
    """Two films per patient with identical metadata and the label: grouped folds cannot memorise a patient, so
    the AUC stays at chance; ungrouped folds would see the twin and score far higher."""
    import pandas as pd

    from xai_cxr.data.metadata import metadata_baseline
    rng = np.random.default_rng(2)
    n = 40
    base = pd.DataFrame({"width": rng.integers(100, 200, n), "height": rng.integers(100, 200, n),
                         "bit_depth": 8, "channels": 1, "file_kb": rng.uniform(10, 20, n),
                         "border_mean": rng.uniform(0, 1, n)})
    base["aspect"] = base.width / base.height
    meta = pd.concat([base, base], ignore_index=True)
    labels = np.tile(rng.integers(0, 2, n), 2)
    groups = np.tile(np.arange(n), 2)
    grouped = metadata_baseline(meta, labels, groups, n_boot=200)
    assert grouped["ci95"][0] < 0.5 < grouped["ci95"][1]


def test_data_baseline_samples_at_most_max_films_stratified_and_groups_by_patient(tmp_path):
    import pandas as pd

    from xai_cxr.explain.metrics.probes import data_baseline
    labels = np.r_[np.zeros(30, int), np.ones(10, int)]
    rng = np.random.default_rng(0)
    paths = _write_films(tmp_path, labels, list(zip(rng.integers(40, 60, 40), rng.integers(40, 60, 40))))
    manifest = pd.DataFrame({"path": [str(p) for p in paths], "label_idx": labels,
                             "patient_id": [f"p{i // 2}" for i in range(40)]})
    out = data_baseline(manifest, max_films=20, seed=1)
    assert out["n"] == 20 and out["unreadable"] == 0                 # 15 + 5: the 3 : 1 ratio kept
