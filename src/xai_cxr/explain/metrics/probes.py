"""What does my model read? Probes for the shortcuts a heat map cannot show, run on the user's own model.

A Grad-CAM map shows where evidence *is*; it cannot show a cue made of the film's whole geometry (how wide the
chest looks after a squash) or of what a region *lacks*. These probes change the input and watch the output:

- **width**: every test film made narrower or wider about its centre (``WIDTH_FACTORS``, height unchanged, black
  fill); a model free of the squash shortcut keeps its predictions (docs/results.md, "The squash shortcut");
- **border / corners**: the outer ring (``BORDER_FRACTION`` of the side) or one corner square
  (``CORNER_FRACTION``) replaced by a heavy blur of the film, which wipes markers and text and keeps the
  brightness; a model that reads a marker there changes its mind.

``verdict`` turns the measurements (and the data-only baseline of ``data/metadata.py``) into one table, "what
this model reads", with the thresholds below; ``xai-cxr audit`` and the notebook's section 6b print it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

WIDTH_FACTORS = (0.8, 0.9, 1.0, 1.1, 1.25)
BORDER_FRACTION = 0.08          # the outer ring where rulers, markers and collimation edges sit
CORNER_FRACTION = 0.25          # side of each corner square, as a share of the film's side (text, "L"/"R" markers)

# Pass/fail thresholds (docs/results.md, "What does my model read?"). Width: the largest change of the mean
# P(positive) of the negative films between ×1.0 and any other factor. Measured on the Kermany 224-px copy:
# 0.34-0.36 for the three models trained without the width jitter, 0.014-0.024 for the four trained with it.
# Regions: the share of films whose decision flips when the region is blurred away, and the mean |ΔP(positive)|.
# Corners: models that read a planted tag in the bottom-left corner moved by 0.13-0.14 there, models without such a
# cue by at most 0.03 in any corner (a weak 240-film control on real films: 0.051, a narrow FAIL). The border
# ring covers 29% of the film and blurs the chest's edges with any marker:
# models without a border cue moved by 0.09-0.10 with 7-7.5% flips, so its limits sit above that floor.
THRESHOLDS = {"width": 0.10, "region_flips": 0.05, "region_mean_change": 0.05,
              "border_flips": 0.10, "border_mean_change": 0.15, "metadata_auc": 0.70}


def width_scaled(images: np.ndarray, factor: float) -> np.ndarray:
    """(N, H, W[, 3]) uint8 → the same films with the width scaled by ``factor`` about the centre, the height
    unchanged, black where the film no longer reaches."""
    h, w = images.shape[1:3]
    m = np.float32([[factor, 0, (1 - factor) * w / 2], [0, 1, 0]])
    return np.stack([cv2.warpAffine(im, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                    borderValue=0) for im in images])


def region_masks(height: int, width: int, border: float = BORDER_FRACTION,
                 corner: float = CORNER_FRACTION) -> dict[str, np.ndarray]:
    """Boolean (H, W) masks: the outer ``border`` ring and the four corner squares of side ``corner``."""
    out = {}
    b = max(1, round(border * min(height, width)))
    ring = np.ones((height, width), bool)
    ring[b:height - b, b:width - b] = False
    out["border"] = ring
    ch, cw = max(1, round(corner * height)), max(1, round(corner * width))
    for name, (rows, cols) in {"top-left corner": (slice(0, ch), slice(0, cw)),
                               "top-right corner": (slice(0, ch), slice(width - cw, width)),
                               "bottom-left corner": (slice(height - ch, height), slice(0, cw)),
                               "bottom-right corner": (slice(height - ch, height), slice(width - cw, width))}.items():
        m = np.zeros((height, width), bool)
        m[rows, cols] = True
        out[name] = m
    return out


def blur_region(images: np.ndarray, mask: np.ndarray, sigma_fraction: float = 0.1) -> np.ndarray:
    """``images`` with the pixels under ``mask`` replaced by a Gaussian blur of the film (sigma = 10% of its
    side): markers and text vanish, the local brightness stays (a black patch would itself be a cue)."""
    sigma = sigma_fraction * min(images.shape[1:3])
    out = images.copy()
    for i, im in enumerate(images):
        out[i][mask] = cv2.GaussianBlur(im, (0, 0), sigma)[mask]
    return out


def _decisions(p_pos: np.ndarray, threshold: float) -> np.ndarray:
    return p_pos >= threshold


def width_probe(predict, images: np.ndarray, labels: np.ndarray, positive: int = 1, threshold: float = 0.5,
                factors=WIDTH_FACTORS) -> pd.DataFrame:
    """Per width factor: mean P(positive) of the negative films and of all films, specificity and sensitivity at
    ``threshold``. ``predict``: uint8 images → class probabilities (N, K)."""
    neg, pos = labels != positive, labels == positive
    rows = []
    for f in factors:
        p = np.asarray(predict(images if f == 1.0 else width_scaled(images, f)))[:, positive]
        d = _decisions(p, threshold)
        rows.append({"width_factor": f, "mean_p_positive_negatives": float(p[neg].mean()) if neg.any() else np.nan,
                     "mean_p_positive_all": float(p.mean()),
                     "specificity": float((~d[neg]).mean()) if neg.any() else np.nan,
                     "sensitivity": float(d[pos].mean()) if pos.any() else np.nan})
    return pd.DataFrame(rows)


def region_probe(predict, images: np.ndarray, positive: int = 1, threshold: float = 0.5,
                 masks: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Per region (``region_masks``): the share of films whose decision flips when the region is blurred away,
    the mean change of P(positive) and the mean |change|."""
    masks = masks or region_masks(*images.shape[1:3])
    p0 = np.asarray(predict(images))[:, positive]
    rows = []
    for name, m in masks.items():
        p = np.asarray(predict(blur_region(images, m)))[:, positive]
        rows.append({"region": name, "flips": float((_decisions(p, threshold) != _decisions(p0, threshold)).mean()),
                     "mean_change": float((p - p0).mean()), "mean_abs_change": float(np.abs(p - p0).mean())})
    return pd.DataFrame(rows)


def width_effect(table: pd.DataFrame) -> float:
    """The width probe's effect: the largest |mean P(positive) of the negatives at factor f − at ×1.0|."""
    col = "mean_p_positive_negatives" if table["mean_p_positive_negatives"].notna().all() else "mean_p_positive_all"
    ref = table.loc[table.width_factor == 1.0, col].iloc[0]
    return float((table[col] - ref).abs().max())


@dataclass
class ProbeReport:
    width: pd.DataFrame
    regions: pd.DataFrame
    verdict: pd.DataFrame
    metadata: dict | None = None


def verdict(width: pd.DataFrame, regions: pd.DataFrame, metadata: dict | None = None,
            thresholds: dict = THRESHOLDS) -> pd.DataFrame:
    """One row per probe: what was measured, the threshold, and "pass" / "FAIL" (for the data-only baseline:
    "no cue" / "WARNING: the data carry a cue", whether or not this model uses it)."""
    rows = []
    w = width_effect(width)
    rows.append({"probe": f"width × {min(width.width_factor):g}…{max(width.width_factor):g} (height kept)",
                 "measured": f"max |ΔP(positive)| of negatives {w:.3f}",
                 "threshold": f"≤ {thresholds['width']:.2f}",
                 "verdict": "pass" if w <= thresholds["width"] else "FAIL: reads how wide the chest looks"})
    for r in regions.itertuples():
        kind = "border" if r.region == "border" else "region"
        max_flips, max_change = thresholds[f"{kind}_flips"], thresholds[f"{kind}_mean_change"]
        ok = r.flips <= max_flips and r.mean_abs_change <= max_change
        rows.append({"probe": f"{r.region} blurred away",
                     "measured": f"{r.flips:.1%} flip, mean ΔP(positive) {r.mean_change:+.3f} "
                                 f"(|Δ| {r.mean_abs_change:.3f})",
                     "threshold": f"flips ≤ {max_flips:.0%}, |Δ| ≤ {max_change:.2f}",
                     "verdict": "pass" if ok else f"FAIL: reads something in the {r.region}"})
    if metadata is not None:
        auc, lo, hi = metadata["auc"], metadata["ci95"][0], metadata["ci95"][1]
        cue = auc > thresholds["metadata_auc"]
        top = max(metadata["feature_auc"].items(), key=lambda kv: abs(kv[1] - 0.5))
        rows.append({"probe": "label from file metadata alone (size, aspect, bit depth, file size, border)",
                     "measured": f"ROC-AUC {auc:.2f} [{lo:.2f}, {hi:.2f}] (strongest: {top[0]} {top[1]:.2f})",
                     "threshold": f"≤ {thresholds['metadata_auc']:.2f}",
                     "verdict": "WARNING: the data carry a shortcut a model could learn" if cue else "no cue"})
    return pd.DataFrame(rows)


def model_predictor(model, backbone: str, temperature: float = 1.0, batch_size: int = 64):
    """uint8 films (N, H, W) → the calibrated class probabilities the app and API show (the card's threshold
    applies to these)."""
    from ...models import BACKBONES
    from ...models.calibration import apply_temperature
    from .audit import predictor
    raw = predictor(model, BACKBONES[backbone].preprocess, batch_size)
    return lambda images: apply_temperature(raw(images), temperature)


def data_baseline(manifest: pd.DataFrame, positive: int = 1, max_films: int = 2000, seed: int = 42) -> dict:
    """``data.metadata.metadata_baseline`` on up to ``max_films`` films of a manifest (stratified sample, seeded),
    grouped by patient where the manifest knows them."""
    from ...data.metadata import film_metadata, metadata_baseline
    df = manifest.reset_index(drop=True)
    if len(df) > max_films:
        y, rng = df["label_idx"].to_numpy(), np.random.default_rng(seed)
        keep = [rng.permutation(np.flatnonzero(y == c))[:max(1, round(max_films * (y == c).mean()))]
                for c in np.unique(y)]
        df = df.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)
    meta = film_metadata(df["path"])
    groups = df["patient_id"].to_numpy() if "patient_id" in df else None
    out = metadata_baseline(meta, (df["label_idx"].to_numpy() == positive).astype(int), groups, seed=seed)
    out["unreadable"] = int(meta["error"].notna().sum())
    return out


def what_the_model_reads(predict, images: np.ndarray, labels: np.ndarray, positive: int = 1,
                         threshold: float = 0.5, metadata: dict | None = None) -> ProbeReport:
    """Run the width and region probes on decoded test films and return them with the verdict table."""
    width = width_probe(predict, images, labels, positive, threshold)
    regions = region_probe(predict, images, positive, threshold)
    return ProbeReport(width, regions, verdict(width, regions, metadata), metadata)


def to_markdown(report: ProbeReport) -> str:
    parts = ["**What this model reads**\n\n" + report.verdict.to_markdown(index=False),
             "**Width probe**\n\n" + report.width.to_markdown(index=False, floatfmt=".3f"),
             "**Regions blurred away**\n\n" + report.regions.to_markdown(index=False, floatfmt=".3f")]
    return "\n\n".join(parts) + "\n"
