"""Overlays: pure functions from (grayscale X-ray, heat map) to RGB uint8 arrays, and the sample grid.

Saving and showing are left to the caller (CLI, notebook): these functions only return arrays/figures.
"""
from __future__ import annotations

import numpy as np

RED = (255, 0, 0)


def top_fraction_mask(heat: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Boolean mask of exactly round(fraction · N) hottest pixels.

    Ties at the threshold are broken by pixel order (row-major, first wins), so the count is exact even
    on flat or quantised maps, and a zero fraction selects nothing.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    heat = np.asarray(heat)
    k = int(round(fraction * heat.size))
    order = np.argsort(-heat.ravel(), kind="stable")
    mask = np.zeros(heat.size, bool)
    mask[order[:k]] = True
    return mask.reshape(heat.shape)


def _gray_rgb(gray: np.ndarray) -> np.ndarray:
    gray = np.asarray(gray)
    if gray.dtype != np.uint8:
        raise ValueError(f"gray image must be uint8, got {gray.dtype}")
    if gray.ndim == 3 and gray.shape[-1] == 3:         # colour data sets are drawn in colour
        return gray
    if gray.ndim == 3:
        gray = gray[..., 0]
    return np.repeat(gray[..., None], 3, axis=-1)


def png_bytes(img: np.ndarray) -> bytes:
    """PNG file bytes of a (H, W) gray or (H, W, 3) RGB uint8 image."""
    import cv2
    ok, buf = cv2.imencode(".png", img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode an image of shape {img.shape} as PNG")
    return buf.tobytes()


def red_overlay(gray: np.ndarray, heat: np.ndarray, fraction: float = 0.05, alpha: float = 0.6,
                color=RED) -> np.ndarray:
    """The X-ray in grayscale with its top ``fraction`` of heat painted ``color`` (alpha-blended).

    Pixels outside the top region keep their grayscale value exactly.
    """
    if heat.shape != np.shape(gray)[:2]:
        raise ValueError(f"heat map {heat.shape} and image {np.shape(gray)[:2]} differ in size")
    return mask_overlay(gray, top_fraction_mask(heat, fraction), alpha, color)


def mask_overlay(gray: np.ndarray, mask: np.ndarray, alpha: float = 0.6, color=RED) -> np.ndarray:
    """The X-ray in grayscale with the pixels of a boolean ``mask`` painted ``color`` (alpha-blended)."""
    rgb = _gray_rgb(gray)
    mask = np.asarray(mask, bool)
    out = rgb.copy()
    blended = (1 - alpha) * rgb[mask].astype(np.float32) + alpha * np.asarray(color, np.float32)
    out[mask] = np.clip(blended.round(), 0, 255).astype(np.uint8)
    return out


def jet_overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """The classic blend: (1 - alpha) · X-ray + alpha · colormap(heat)."""
    import matplotlib
    rgb = _gray_rgb(gray).astype(np.float32)
    colored = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3] * 255
    return np.clip((1 - alpha) * rgb + alpha * colored, 0, 255).round().astype(np.uint8)


def sample_grid(grays, heats, true_labels, pred_labels, confidences, class_names, fraction: float = 0.05,
                columns: int = 4, decisions=None):
    """Matplotlib figure: per image the X-ray and its top-``fraction`` red overlay, titled with
    true label, prediction and confidence (green when right, red when wrong), and the decision ("answer" /
    "refer", ``models/referral``) when ``decisions`` is given."""
    import matplotlib.pyplot as plt
    n = len(grays)
    cols = min(columns, max(n, 1))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4.2 * cols, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        a0, a1 = axes[r, 2 * c], axes[r, 2 * c + 1]
        a0.imshow(grays[i], cmap="gray", vmin=0, vmax=255)
        a1.imshow(red_overlay(grays[i], heats[i], fraction))
        ok = true_labels[i] == pred_labels[i]
        a0.set_title(f"true {class_names[true_labels[i]]}", fontsize=8)
        said = "" if decisions is None else f" → {decisions[i]}"
        a1.set_title(f"pred {class_names[pred_labels[i]]} ({confidences[i]:.0%}){said}", fontsize=8,
                     color="green" if ok else "red")
    fig.suptitle(f"Grad-CAM: top {fraction:.0%} of heat in red", fontsize=10)
    fig.tight_layout()
    return fig


def gallery(grays, heats, titles, masks=None, fraction: float = 0.05, columns: int = 6, suptitle: str = ""):
    """Grid of top-``fraction`` red overlays with titles, lesion-mask contours (yellow) when ``masks`` is
    given, and a legend saying what the colours mean."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    n = len(grays)
    cols = max(1, min(columns, n))
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(red_overlay(grays[i], heats[i], fraction))
        if masks is not None and masks[i].any():
            ax.contour(masks[i], levels=[0.5], colors="yellow", linewidths=0.7)
        ax.set_title(titles[i], fontsize=7)
    handles = [Patch(color="red", label=f"top {fraction:.0%} of heat")]
    if masks is not None:
        handles.append(Line2D([], [], color="yellow", label="lesion mask"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def panel(gray, heat, fraction: float = 0.05, alpha: float = 0.4, mask=None, title: str = ""):
    """Side by side: the X-ray, the top-``fraction`` red overlay, the jet blend with a colour bar."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.3))
    axes[0].imshow(gray, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("X-ray", fontsize=9)
    axes[1].imshow(red_overlay(gray, heat, fraction))
    axes[1].set_title(f"top {fraction:.0%} of heat (red)", fontsize=9)
    axes[2].imshow(jet_overlay(gray, heat, alpha))
    im = axes[2].imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=0)
    fig.colorbar(im, ax=axes[2], fraction=0.046, label="heat")
    axes[2].set_title("heat map (jet blend)", fontsize=9)
    for ax in axes:
        ax.axis("off")
        if mask is not None and mask.any():
            ax.contour(mask, levels=[0.5], colors="yellow", linewidths=0.7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
