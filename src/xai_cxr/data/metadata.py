"""Can the label be read off the file without looking at the chest? A data-only shortcut check.

Kermany's original films differ in shape by class (width/height 1.21 NORMAL vs 1.57 PNEUMONIA on the 100
original-aspect films; the aspect alone separates the classes with ROC-AUC 0.87). Any such difference is a cue a
model can learn instead of the disease, so before trusting a model a user should know how well the file's
metadata alone predict the label: image size, aspect ratio, bit depth, channels, file size and the brightness of
the film's outer ring (collimation, borders). ``film_metadata`` reads them (headers only, plus one decode for the
border); ``metadata_baseline`` cross-validates a logistic regression on them, grouped by patient, and gives its
ROC-AUC with a bootstrap interval. A high AUC is a warning about the *data*, whether or not a model used the cue.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = ("width", "height", "aspect", "bit_depth", "channels", "file_kb", "border_mean")


def _header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, channels) from the file's header (DICOM tags or PIL), no pixel decode."""
    with open(path, "rb") as f:
        head = f.read(132)
    if path.suffix.lower() == ".dcm" or head[128:132] == b"DICM":
        import pydicom
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows), int(ds.get("BitsStored", 8)), int(ds.get("SamplesPerPixel", 1))
    from PIL import Image
    with Image.open(path) as im:
        bits = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "LA": 8, "I;16": 16, "I;16B": 16, "I": 32, "F": 32}
        return im.width, im.height, bits.get(im.mode, 8), len(im.getbands())


def border_mean(gray: np.ndarray, fraction: float = 0.08) -> float:
    """Mean brightness (0-1) of the outer ring of ``fraction`` of the side of a decoded uint8 image."""
    b = max(1, round(fraction * min(gray.shape[:2])))
    ring = np.ones(gray.shape[:2], bool)
    ring[b:-b, b:-b] = False
    return float(gray[ring].mean() / 255.0)


def film_metadata(paths) -> pd.DataFrame:
    """One row of ``FEATURES`` per file (NaN where a file cannot be read; the reason in column ``error``)."""
    from .decode import ImageReadError, read_gray
    rows = []
    for p in map(Path, paths):
        try:
            w, h, bits, ch = _header(p)
            rows.append({"width": w, "height": h, "aspect": w / h, "bit_depth": bits, "channels": ch,
                         "file_kb": os.path.getsize(p) / 1024, "border_mean": border_mean(read_gray(p)),
                         "error": None})
        except (ImageReadError, OSError, ValueError, AttributeError) as exc:
            rows.append({**{k: np.nan for k in FEATURES}, "error": f"{type(exc).__name__}: {exc}"})
    return pd.DataFrame(rows)


def metadata_baseline(meta: pd.DataFrame, labels, groups=None, folds: int = 5, seed: int = 42,
                      n_boot: int = 1000, features=FEATURES) -> dict:
    """ROC-AUC of a logistic regression on the metadata alone, out of fold (``folds`` stratified folds, grouped by
    ``groups`` — patient ids — so one patient's films never sit on both sides), with a 95% bootstrap interval over
    films, and each feature's own AUC. Features that do not vary are left out. Binary labels (1 = positive).
    ``features``: the columns of ``meta`` to use (default: ``FEATURES``, what ``film_metadata`` reads)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    y = np.asarray(labels).astype(int)
    features = list(features)
    ok = meta[features].notna().all(1).to_numpy()
    x = meta.loc[ok, features].astype(float)
    y = y[ok]
    groups = np.arange(len(ok)) if groups is None else np.asarray(groups)
    groups = groups[ok]
    varying = [c for c in features if x[c].nunique() > 1]
    feature_auc = {c: float(roc_auc_score(y, x[c])) if c in varying else 0.5 for c in features}
    if not varying:
        return {"auc": 0.5, "ci95": [0.5, 0.5], "feature_auc": feature_auc, "n": int(len(y)), "features": []}
    k = min(folds, int(np.bincount(y).min()), len(np.unique(groups)))
    if k < 2:
        raise ValueError(f"the metadata baseline needs at least 2 films of each class in 2 patients; have "
                         f"{np.bincount(y, minlength=2).tolist()}")
    oof = np.zeros(len(y))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    for tr, te in StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(x, y, groups):
        clf.fit(x.iloc[tr][varying], y[tr])
        oof[te] = clf.predict_proba(x.iloc[te][varying])[:, 1]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(y[i])) == 2:
            boots.append(roc_auc_score(y[i], oof[i]))
    return {"auc": float(roc_auc_score(y, oof)), "ci95": [float(np.percentile(boots, 2.5)),
                                                          float(np.percentile(boots, 97.5))],
            "feature_auc": feature_auc, "n": int(len(y)), "features": varying, "folds": k}
