"""The run's figures: the sample_results.png grid (balanced test films with their heat maps) and the Grad-CAM
pointing game on phantom lesions."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import CamConfig, DataConfig, atomic_path
from ..data import ImageSet, to_model_input
from ..models import BACKBONES, backbone_of
from ..models.predict import predict_images
from ..tasks import get_task
from .prepare import lesion_masks, pick_samples


def explain_images(model, grays: np.ndarray, preprocess, cam_cfg: CamConfig, target_layer: str, task: str = "binary"):
    """CAM maps (B, H, W) in [0, 1] of the class the task explains (the decided class; a multi-label task's
    most probable finding), that class and its probability, for uint8 gray images."""
    from ..explain.registry import make_explainer
    proba = predict_images(model, grays, preprocess, cam_cfg.batch_size)
    t = get_task(task)
    target = t.explained(proba, t.decide(proba))
    cam = make_explainer(cam_cfg.method, model, backbone_of(model), cam_cfg.target_layer or target_layer,
                         cam_cfg.batch_size)
    return cam(to_model_input(grays, preprocess).numpy(), targets=target), target, proba[np.arange(len(proba)), target]


def sample_figure(model, test: ImageSet, data_cfg: DataConfig, cam_cfg: CamConfig, target_layer: str):
    """The sample_results.png grid: balanced test images with true/predicted label, confidence, overlay (for a
    multi-label task, each film's most probable finding and its true findings)."""
    from ..explain.overlay import gallery, sample_grid
    spec = BACKBONES[backbone_of(model)]
    labels, task = test.labels, get_task(data_cfg.task)
    idx = pick_samples(task.stratify(labels), cam_cfg.n_samples, data_cfg.seed)
    heats, pred, conf = explain_images(model, test.images[idx], spec.preprocess, cam_cfg, target_layer, task.name)
    if not task.per_image_figures:
        names = data_cfg.class_names
        titles = [f"true {'|'.join(n for n, v in zip(names, labels[i]) if v) or 'No Finding'}\n"
                  f"map: {names[p]} {c:.0%}" for i, p, c in zip(idx, pred, conf)]
        return gallery(test.images[idx], heats, titles, fraction=cam_cfg.top_fraction, columns=4,
                       suptitle="Grad-CAM of the most probable finding")
    return sample_grid(test.images[idx], heats, test.labels[idx], pred, conf, data_cfg.class_names,
                       cam_cfg.top_fraction)


def lesion_pointing_game(model, test: ImageSet, data_cfg: DataConfig, cam_cfg: CamConfig, target_layer: str):
    """Grad-CAM pointing game (15 px tolerance at 224 px, scaled) on positive test images that have lesion
    masks (phantoms); None if none do, or when the task has no single answer per film."""
    from ..explain.metrics.localization import pointing_game
    masks = lesion_masks(test, data_cfg.image_size)
    if masks is None or not get_task(data_cfg.task).per_image_figures:
        return None
    pos = np.flatnonzero((test.labels > 0) & masks.reshape(len(masks), -1).any(1))
    if not len(pos):
        return None
    spec = BACKBONES[backbone_of(model)]
    heats, _, _ = explain_images(model, test.images[pos], spec.preprocess, cam_cfg, target_layer, data_cfg.task)
    return {"hit_rate": float(pointing_game(heats, masks[pos]).mean()), "n_images": int(len(pos))}


def save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
