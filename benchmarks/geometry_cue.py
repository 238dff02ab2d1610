"""Input geometry: what each way of making a film square leaves for a model to read, on the 100 original-aspect
Kermany films (../shared/data/kermany-original-sample).

For every geometry (squash, crop, pad), with and without the training's width jitter (a random ±30% zoom of the
width, as `--augment aspect` draws it), the films are brought to the recipe's 160 px and described by what the
frame itself shows — the share of black rows and columns (letterbox bars), the aspect of the non-black content and
the brightness of the outer ring — and a logistic regression on those features alone is cross-validated (grouped
by patient) for the label. Also: the metadata-only baseline on the files (`xai_cxr.data.metadata`), and how much of
each film's width a centre crop throws away, by class. The anatomy's own deformation under a squash is not a frame
feature: the width probe on trained models measures it (benchmarks/aspect_shortcut.py, `xai-cxr audit`).

    python benchmarks/geometry_cue.py          # → benchmarks/results/geometry_cue.json
"""
from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "kermany-original-sample" / "chest_xray"
RESULTS = ROOT / "benchmarks" / "results" / "geometry_cue.json"
SIZE = 160
FRAME_FEATURES = ("black_rows", "black_cols", "content_aspect", "border_mean")


def frame_features(img: np.ndarray) -> dict:
    """What the square input's frame shows: black (≤ 2) rows and columns, the non-black content's aspect, the outer
    ring's brightness."""
    from xai_cxr.data.metadata import border_mean
    rows, cols = img.max(1) > 2, img.max(0) > 2
    h = max(int(rows.sum()), 1)
    return {"black_rows": 1 - rows.mean(), "black_cols": 1 - cols.mean(), "content_aspect": cols.sum() / h,
            "border_mean": border_mean(img)}


def jitter(img: np.ndarray, rng: np.random.Generator, amount: float = 0.3) -> np.ndarray:
    """The width jitter of `--augment aspect`: Keras RandomZoom with width factor u ~ U(−0.3, 0.3) scales the width
    by 1/(1 + u) about the centre, black fill."""
    from xai_cxr.explain.metrics.probes import width_scaled
    return width_scaled(img[None], 1 / (1 + rng.uniform(-amount, amount)))[0]


def cv_auc(x: pd.DataFrame, y: np.ndarray, groups: np.ndarray, seed: int = 42) -> dict:
    from xai_cxr.data.metadata import metadata_baseline
    return metadata_baseline(x, y, groups, seed=seed, features=FRAME_FEATURES)


def main() -> int:
    from xai_cxr.data import fit_size, read_gray
    from xai_cxr.data.metadata import film_metadata, metadata_baseline
    from xai_cxr.data.scan import parse_kermany_name
    if not DATA.is_dir():
        sys.exit(f"no original-aspect films at {DATA} (see ../shared/data/README.md)")
    paths = sorted((DATA / "train" / "NORMAL").glob("*.jp*g")) + sorted((DATA / "train" / "PNEUMONIA").glob("*.jp*g"))
    labels = np.array([p.parent.name == "PNEUMONIA" for p in paths], int)
    groups = np.array([parse_kermany_name(p.name)[1] for p in paths])
    grays = [read_gray(p) for p in paths]
    aspect = np.array([g.shape[1] / g.shape[0] for g in grays])
    out = {"date": dt.date.today().isoformat(), "command": "python benchmarks/geometry_cue.py", "n": len(paths),
           "size": SIZE, "metadata_baseline": metadata_baseline(film_metadata(paths), labels, groups),
           "crop_discards_width_share": {name: float((1 - 1 / np.maximum(aspect[labels == k], 1)).mean())
                                         for k, name in enumerate(("NORMAL", "PNEUMONIA"))},
           "frame_cue": {}}
    for geometry in ("squash", "crop", "pad"):
        for jittered in (False, True):
            rng = np.random.default_rng(42)
            imgs = [fit_size(g, SIZE, geometry=geometry) for g in grays]
            if jittered:
                imgs = [jitter(i, rng) for i in imgs]
            x = pd.DataFrame([frame_features(i) for i in imgs])
            key = geometry + (" + width jitter" if jittered else "")
            out["frame_cue"][key] = cv_auc(x, labels, groups)
            print(f"{key:>24}: frame-only ROC-AUC {out['frame_cue'][key]['auc']:.3f} "
                  f"[{out['frame_cue'][key]['ci95'][0]:.3f}, {out['frame_cue'][key]['ci95'][1]:.3f}]")
    mb = out["metadata_baseline"]
    print(f"metadata baseline: ROC-AUC {mb['auc']:.3f} [{mb['ci95'][0]:.3f}, {mb['ci95'][1]:.3f}], per feature "
          + ", ".join(f"{k} {v:.2f}" for k, v in mb["feature_auc"].items()))
    print("centre crop discards, of the width:", {k: round(v, 3) for k, v in out["crop_discards_width_share"].items()})
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"→ {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
