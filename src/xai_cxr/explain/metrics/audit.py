"""The explanation audit: how well each CAM method localizes known lesions, how faithful it is to the
model (deletion/insertion against random and centre-bias maps), whether it passes the randomization
sanity check, and galleries of the model's mistakes. Functions return tables and figures; ``xai-cxr audit``
writes them."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from ...config import AuditConfig
from ...data import ImageSet, to_model_input
from ...models import BACKBONES
from ..overlay import gallery
from ..registry import explainer_names, get_spec, layers_for, make_explainer
from .faithfulness import centre_bias_maps, deletion_insertion, random_maps, road
from .localization import iou_dice, pointing_game, relevance_mass, relevance_rank, top_fraction_hit_rate
from .sanity import cascading_randomization, label_randomization, verdict


def method_names(cfg: AuditConfig) -> list[str]:
    """The methods to audit: ``cfg.methods``, or the registry's default set (every CAM method plus "fused";
    input attributions only when asked for: they cost tens of passes per image)."""
    names = list(cfg.methods) or explainer_names(audited_by_default=True)
    for name in names:
        get_spec(name)                       # an unknown name is an error listing the registry
    return names


def predictor(model, preprocess, batch_size: int = 64):
    """uint8 gray images (B, H, W) → class probabilities (B, K): ``models.predict.predict_images`` bound to
    ``model``."""
    from ...models.predict import predict_images
    return lambda grays: predict_images(model, grays, preprocess, batch_size)


def _maps(explainer, x, targets):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return explainer(x, targets)


def audit(model, backbone: str, test: ImageSet, masks: np.ndarray | None, cfg: AuditConfig = AuditConfig(),
          target_layer: str | None = None, progress=print, label_model=None):
    """Returns {"localization": DataFrame | None, "faithfulness": DataFrame, "sanity": DataFrame,
    "maps": {method: (indices, maps)}} for up to ``cfg.n_images`` test images: positive ones with
    ``cfg.images`` = "positive" (localization needs lesions), any with "all"; the class explained is the true
    one (``cfg.target`` = "true") or the predicted one ("predicted", as RISE does). Localization is scored on
    the images that have a lesion mask.
    ``label_model``: the same architecture trained on permuted labels, for the label-randomization check."""
    spec = BACKBONES[backbone]
    predict = predictor(model, spec.preprocess)
    rng = np.random.default_rng(cfg.seed)
    pool = np.flatnonzero(test.labels > 0) if cfg.images == "positive" else np.arange(len(test.labels))
    if masks is not None and cfg.images == "positive":
        pool = pool[masks[pool].reshape(len(pool), -1).any(1)]
    idx = np.sort(rng.permutation(pool)[:cfg.n_images])
    grays = test.images[idx]
    x = to_model_input(grays, spec.preprocess).numpy()
    targets = (predict(grays).argmax(1) if cfg.target == "predicted" else test.labels[idx]).astype(int)
    with_mask = None if masks is None else masks[idx].reshape(len(idx), -1).any(1)
    loc_rows, faith_rows, sanity_rows, all_maps = [], [], [], {}
    shape = grays.shape[1:3]
    baselines = {"random": random_maps(len(idx), shape, cfg.seed), "centre": centre_bias_maps(len(idx), shape)}
    names, started = list(method_names(cfg)), time.perf_counter()
    for k, name in enumerate(names, start=1):
        explainer = make_explainer(name, model, backbone, target_layer)
        t0 = time.perf_counter()
        maps = _maps(explainer, x, targets)
        secs = (time.perf_counter() - t0) / max(1, len(idx))
        all_maps[name] = (idx, maps)
        if with_mask is not None and with_mask.any():
            loc_rows.append(_localization_row(name, maps[with_mask], masks[idx][with_mask], cfg)
                            | {"ms_per_map": 1000 * secs})
        faith_rows.append(_faithfulness_row(name, predict, grays, maps, targets, cfg))
        sanity_rows.append(_sanity_row(name, model, x[:cfg.sanity_images], targets[:cfg.sanity_images],
                                       backbone, target_layer, cfg, label_model))
        spent = time.perf_counter() - started
        progress(f"audit: {name} done ({k}/{len(names)}, {1000 * secs:.0f} ms/map; {spent:.0f} s so far, "
                 f"~{spent / k * (len(names) - k):.0f} s left at this pace)")
    for name, maps in baselines.items():
        if with_mask is not None and with_mask.any():
            loc_rows.append(_localization_row(name, maps[with_mask], masks[idx][with_mask], cfg))
        faith_rows.append(_faithfulness_row(name, predict, grays, maps, targets, cfg))
    faith = pd.DataFrame(faith_rows)
    base = faith.set_index("method").loc["random"]
    faith["road_gap_vs_random"] = faith["road_gap"] - base["road_gap"]
    faith["deletion_vs_random"] = faith["deletion_auc"] / base["deletion_auc"]
    return {"localization": pd.DataFrame(loc_rows) if loc_rows else None, "faithfulness": faith,
            "sanity": pd.DataFrame(sanity_rows), "maps": all_maps, "indices": idx}


def _localization_row(name, maps, masks, cfg):
    iou, dice = iou_dice(maps, masks)
    return {"method": name, "n_images": len(maps),
            "pointing_game": float(pointing_game(maps, masks, cfg.tolerance_px).mean()),
            "top5_hit_rate": float(top_fraction_hit_rate(maps, masks, cfg.top_fraction).mean()),
            "relevance_mass": float(relevance_mass(maps, masks).mean()),
            "relevance_rank": float(relevance_rank(maps, masks).mean()),
            "iou": float(iou.mean()), "dice": float(dice.mean())}


def _faithfulness_row(name, predict, grays, maps, targets, cfg):
    dele, ins = deletion_insertion(predict, grays, maps, targets, cfg.steps, cfg.baseline)
    morf = road(predict, grays, maps, targets, order="morf", seed=cfg.seed)
    lerf = road(predict, grays, maps, targets, order="lerf", seed=cfg.seed)
    return {"method": name, "road_morf": float(morf.mean()), "road_lerf": float(lerf.mean()),
            "road_gap": float((lerf - morf).mean()), "deletion_auc": float(dele.mean()),
            "insertion_auc": float(ins.mean())}


def _sanity_row(name, model, x, targets, backbone, target_layer, cfg, label_model=None):
    layers = layers_for(name, backbone, target_layer)
    spec = get_spec(name)

    def method(m, _layer):                 # the same explainer, on a randomized copy of the model
        return spec.build(m, layers)
    shown = "+".join(layers) or "input"
    rows = cascading_randomization(model, x, targets, method, shown, cfg.seed, stop_at=(1, -1))
    top, full = rows[0], rows[-1]
    row = {"method": name, "rho_head_randomized": top["spearman"], "rho_all_randomized": full["spearman"],
           "ssim_all_randomized": full["ssim"]}
    worst = full["spearman"]
    if label_model is not None:
        lab = label_randomization(model, label_model, x, targets, method, shown)
        row |= {"rho_label_randomized": lab["spearman"], "ssim_label_randomized": lab["ssim"]}
        worst = max(worst, lab["spearman"])
    return row | {"verdict": verdict(worst)}


def error_galleries(model, backbone: str, test: ImageSet, masks=None, fraction: float = 0.05, n: int = 12,
                    target_layer: str | None = None, class_names=("NORMAL", "PNEUMONIA")):
    """Figures: false negatives, false positives, most confident mistakes, and a per-class gallery, each
    with Grad-CAM of the predicted class. Returns {name: figure}."""
    spec = BACKBONES[backbone]
    proba = predictor(model, spec.preprocess)(test.images)
    pred, conf, y = proba.argmax(1), proba.max(1), test.labels
    cam = make_explainer("gradcam", model, backbone, target_layer)
    groups = {
        "false_negatives": np.flatnonzero((y > 0) & (pred == 0)),
        "false_positives": np.flatnonzero((y == 0) & (pred > 0)),
        "confident_mistakes": np.flatnonzero(pred != y)[np.argsort(-conf[pred != y], kind="stable")],
    }
    for c, cname in enumerate(class_names):
        groups[f"class_{cname.lower()}"] = np.flatnonzero(y == c)
    figs = {}
    for name, ids in groups.items():
        ids = ids[:n] if name == "confident_mistakes" else np.sort(ids[np.argsort(-conf[ids], kind="stable")][:n])
        if not len(ids):
            continue
        heats = _maps(cam, to_model_input(test.images[ids], spec.preprocess).numpy(), pred[ids])
        titles = [f"true {class_names[y[i]][:4]} · pred {class_names[pred[i]][:4]} {conf[i]:.0%}" for i in ids]
        figs[name] = gallery(test.images[ids], heats, titles, None if masks is None else masks[ids], fraction,
                             suptitle=f"{name.replace('_', ' ')} ({len(ids)} shown)")
    return figs


def to_markdown(result: dict) -> str:
    parts = []
    if result["localization"] is not None:
        parts += ["### Localization against lesion masks", result["localization"].to_markdown(index=False,
                                                                                              floatfmt=".3f")]
    parts += ["### Faithfulness. ROAD (Rong et al. 2022; the headline): mean target probability after removing the "
              "most (MoRF, lower is better) or least (LeRF, higher is better) relevant 10-90% of pixels, filled by "
              "noisy linear imputation from their neighbours; road_gap = LeRF − MoRF (higher = more faithful), "
              "also against a random map. Plain deletion/insertion AUC (removed pixels blurred) after it",
              result["faithfulness"].to_markdown(index=False, floatfmt=".3f"),
              "### Sanity checks: cascading model-parameter randomization and, when run, label randomization "
              "(Spearman ρ of original vs randomized maps; pass if every ρ < 0.3)",
              result["sanity"].to_markdown(index=False, floatfmt=".3f")]
    return "\n\n".join(parts) + "\n"
