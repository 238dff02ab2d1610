"""Where a trained model looks on average: the share of each map's top heat in named regions of a frontal chest
film (border, corners, heart and mediastinum, diaphragm, lung fields), next to what a random map gets, and the mean
map per predicted class. A pattern becomes a number: heat on the border or the corners is a shortcut's signature."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ...data import ImageSet, to_model_input

# Named regions of a frontal chest film, as (rows, cols) in fractions of the image: where markers, the heart and the
# diaphragm usually sit on a PA/AP film squashed to a square. Approximate by design: they make a pattern a number.
REGIONS = {
    "border band (outer 8%)": lambda y, x: (y < 0.08) | (y > 0.92) | (x < 0.08) | (x > 0.92),
    "corners (15% squares)": lambda y, x: ((y < 0.15) | (y > 0.85)) & ((x < 0.15) | (x > 0.85)),
    "central column (heart, mediastinum)": lambda y, x: (x >= 0.35) & (x <= 0.65) & (y >= 0.15) & (y <= 0.85),
    "lower band (diaphragm)": lambda y, x: (y >= 0.72) & (y <= 0.92) & (x >= 0.08) & (x <= 0.92),
    "lung fields (approx.)": lambda y,
    x: (y >= 0.12) & (y < 0.72) & (((x >= 0.12) & (x < 0.35)) | ((x > 0.65) & (x <= 0.88))),
}


def region_masks(size: int) -> dict[str, np.ndarray]:
    """Boolean (size, size) masks of ``REGIONS`` (pixel centres)."""
    c = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(c, c, indexing="ij")
    return {name: rule(y, x) for name, rule in REGIONS.items()}


def heat_in_regions(heats: np.ndarray, fraction: float = 0.05) -> pd.DataFrame:
    """Share of the maps' top-``fraction`` pixels that fall in each region, next to the region's share of the image
    (what a random map gets): one row per region."""
    from ..overlay import top_fraction_mask
    top = np.stack([top_fraction_mask(h, fraction) for h in heats])
    rows = []
    for name, m in region_masks(heats.shape[1]).items():
        share = float((top & m).sum() / max(top.sum(), 1))
        rows.append({"region": name, "share_of_top_heat": share, "share_of_image": float(m.mean()),
                     "ratio_to_random": share / float(m.mean())})
    return pd.DataFrame(rows)


def where_it_looks(model, backbone: str, test: ImageSet, class_names, method: str = "gradcam",
                   fraction: float = 0.05, target_layer: str | None = None, batch_size: int = 64):
    """Where a trained model looks on average: each test film's map for its predicted class; per predicted class,
    the share of top-``fraction`` heat in the named regions (a table) and the mean map (a figure)."""
    import matplotlib.pyplot as plt

    from ...models import BACKBONES
    from ..registry import make_explainer
    spec = BACKBONES[backbone]
    explainer = make_explainer(method, model, backbone, target_layer)
    pred, heats = [], []
    for start in range(0, len(test.images), batch_size):
        x = to_model_input(test.images[start:start + batch_size], spec.preprocess).numpy()
        p = np.asarray(model.predict(x, batch_size=batch_size, verbose=0)).argmax(1)   # maps need ``x`` anyway
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            heats.append(explainer(x, p))
        pred.append(p)
    pred, heats = np.concatenate(pred), np.concatenate(heats)
    tables, present = [], [c for c in range(len(class_names)) if (pred == c).any()]
    fig, axes = plt.subplots(1, max(len(present), 1), figsize=(3.4 * max(len(present), 1), 3.6), squeeze=False)
    for ax, c in zip(axes[0], present):
        tables.append(heat_in_regions(heats[pred == c], fraction).assign(predicted=class_names[c],
                                                                          n_images=int((pred == c).sum())))
        ax.imshow(test.images[pred == c].mean(0), cmap="gray")
        ax.imshow(heats[pred == c].mean(0), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"predicted {class_names[c]} (n={int((pred == c).sum())})\nmean {method} map", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    table = pd.concat(tables, ignore_index=True)[["predicted", "n_images", "region", "share_of_top_heat",
                                                  "share_of_image", "ratio_to_random"]]
    return table, fig
