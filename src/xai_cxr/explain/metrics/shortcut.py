"""Does my model cheat? The planted-shortcut audit (Sun, Koch & Baumgartner, MICCAI 2023; Adebayo et al., ICLR
2022): train on a copy of the data with a confounder drawn on a share of the positive training films, then on the
test split find the negative films that the confounder *flips* to positive and ask each explainer whether its top
pixels land on the confounder. At degree 0 (no confounder in training) the model has no reason to use it, so a
map that still lands on it raises a false alarm.

``shortcut_audit`` takes a trained model and decoded test images and returns tables; ``studies.run_shortcut_audit``
(``xai-cxr audit --confounder``) builds the contaminated copies and trains on them.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...config import write_csv_atomic, write_text_atomic
from ...data import ImageSet, to_model_input
from ...data.confounders import apply, get_confounder, negative_class
from .faithfulness import centre_bias_maps, random_maps

FALSE_ALARM_MARGIN = 0.05     # a control-run sensitivity more than this above the random map's is a false alarm …
UNMOVED_FLIPS = 0.05          # … when the confounder flips at most this share of the clean model's negative films


@dataclass
class ShortcutResult:
    summary: dict                 # accuracy clean/confounded, flips, mean p(positive) on negatives, which images
    table: pd.DataFrame           # per method: sensitivity at top 10% and 5%, NCC clean vs confounded, ms per map
    examples: dict                # for the gallery: clean, confounded, masks, {method: maps} of up to 6 images


def shortcut_audit(model, backbone: str, test: ImageSet, class_names, kind: str, degree: float, methods,
                   n_images: int = 50, seed: int = 42, target_layer: str | None = None) -> ShortcutResult:
    """Score ``methods`` (explainer registry names) on the test films that the ``kind`` confounder flips from the
    negative class (degree > 0), or on the negative films with the confounder drawn (degree 0: the control).
    Every map explains the positive class on the confounded film; NCC compares it with the map of the clean film."""
    from ...models import BACKBONES
    from ..registry import make_explainer
    from .audit import predictor
    get_confounder(kind)
    neg = negative_class(class_names)
    pos = 1 - neg if len(class_names) == 2 else None
    if pos is None:
        raise ValueError(f"the confounder audit needs a binary task; classes: {list(class_names)}")
    spec = BACKBONES[backbone]
    labels = test.labels
    confounded, masks = apply(kind, test.images, seed)
    predict = predictor(model, spec.preprocess)
    p_clean, p_conf = predict(test.images), predict(confounded)
    negatives = labels == neg
    flips = negatives & (p_clean.argmax(1) == neg) & (p_conf.argmax(1) == pos)
    if degree > 0 and flips.any():
        pool, images_are = np.flatnonzero(flips), "flip set"
    else:
        pool = np.flatnonzero(negatives)
        images_are = "negative films with the confounder (control)" if degree == 0 else \
            "negative films with the confounder: nothing flipped"
    idx = np.sort(np.random.default_rng(seed).permutation(pool)[:n_images])
    summary = {"confounder": kind, "degree": degree, "n_test": int(len(labels)),
               "accuracy_clean": float((p_clean.argmax(1) == labels).mean()),
               "accuracy_confounded": float((p_conf.argmax(1) == labels).mean()),
               "negatives": int(negatives.sum()), "flips": int(flips.sum()),
               "p_positive_negatives_clean": float(p_clean[negatives, pos].mean()),
               "p_positive_negatives_confounded": float(p_conf[negatives, pos].mean()),
               "scored_on": images_are, "n_scored": int(len(idx))}
    x_clean = to_model_input(test.images[idx], spec.preprocess).numpy()
    x_conf = to_model_input(confounded[idx], spec.preprocess).numpy()
    m = masks[idx]
    targets = np.full(len(idx), pos)
    rows, maps_by = [], {}
    for name in methods:
        explainer = make_explainer(name, model, backbone, target_layer)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            h_conf = explainer(x_conf, targets)
            h_clean = explainer(x_clean, targets)
        ms = 1000 * (time.perf_counter() - t0) / max(2 * len(idx), 1)
        maps_by[name] = h_conf
        rows.append(_row(name, h_conf, m, ncc(h_clean, h_conf).mean(), ms))
    shape = test.images.shape[1:3]
    rows.append(_row("random", random_maps(len(idx), shape, seed), m, np.nan, np.nan))
    rows.append(_row("centre", centre_bias_maps(len(idx), shape), m, np.nan, np.nan))
    table = pd.DataFrame(rows)
    if len(idx):
        base = table.loc[table.method == "random", "sensitivity_top10"].iloc[0]
        table["over_random"] = table["sensitivity_top10"] - base
    show = slice(0, 6)
    examples = {"clean": test.images[idx][show], "confounded": confounded[idx][show], "masks": m[show],
                "maps": {k: v[show] for k, v in maps_by.items()}}
    return ShortcutResult(summary, table, examples)


def _row(name, heats, masks, ncc_mean, ms):
    n = len(heats)
    return {"method": name, "n_images": n,
            "sensitivity_top10": float(confounder_sensitivity(heats, masks, 0.10).mean()) if n else np.nan,
            "sensitivity_top5": float(confounder_sensitivity(heats, masks, 0.05).mean()) if n else np.nan,
            "ncc_clean_vs_confounded": float(ncc_mean), "ms_per_map": ms}


def to_markdown(results: list[ShortcutResult]) -> str:
    """One table, methods as rows and (confounder, degree) as column groups, then one line per run."""
    lines = []
    for r in results:
        s = r.summary
        lines.append(f"- **{s['confounder']} at {s['degree']:.0%}**: accuracy clean {s['accuracy_clean']:.3f} → "
                     f"confounded {s['accuracy_confounded']:.3f}; {s['flips']} of {s['negatives']} negative films "
                     f"flip; mean p(positive) on negatives {s['p_positive_negatives_clean']:.2f} → "
                     f"{s['p_positive_negatives_confounded']:.2f}; scored on {s['n_scored']} {s['scored_on']}")
        if s["degree"] == 0 and not control_is_clean(s):
            lines.append(f"  - the clean model itself reacts to {s['confounder']} ({s['flips']} flips): maps on it "
                         "are not false alarms here, so no method is marked")
    wide = None
    for r in results:
        col = f"{r.summary['confounder']} {r.summary['degree']:.0%}"
        t = r.table.set_index("method")
        part = t["sensitivity_top10"].map("{:.2f}".format) + " / " + t["ncc_clean_vs_confounded"].map(
            lambda v: "—" if np.isnan(v) else f"{v:.2f}")
        if r.summary["degree"] == 0 and control_is_clean(r.summary):
            alarm = t["over_random"] > FALSE_ALARM_MARGIN
            part = part.where(~alarm, part + " **alarm +" + t["over_random"].map("{:.2f}".format) + "**")
        wide = part.rename(col).to_frame() if wide is None else wide.join(part.rename(col), how="outer")
    head = ("Confounder sensitivity (share of the confounder's pixels in the map's top 10%) / NCC of the maps of the "
            f"clean and the confounded film. At degree 0 (control: no confounder in training) a sensitivity more than "
            f"{FALSE_ALARM_MARGIN} above the random map's is marked **alarm** — when the confounder flips at most "
            f"{UNMOVED_FLIPS:.0%} of the negative films, i.e. the model does not use it.")
    return "\n".join([head, "", wide.reset_index().to_markdown(index=False), "", *lines]) + "\n"


USED = 0.5                    # a contaminated model "uses" its confounder when it flips at least half the negatives


def lesson(results: list[ShortcutResult]) -> str:
    """What a run of the planted-shortcut audit can teach, in words: does each contaminated model use its
    confounder (flips at least ``USED`` of the negative films), and is each control quiet (no map more than
    ``FALSE_ALARM_MARGIN`` above the random map's sensitivity)? Says plainly when the run cannot tell."""
    lines = []
    for r in results:
        s, t = r.summary, r.table.set_index("method")
        share = s["flips"] / max(s["negatives"], 1)
        where = f"{s['confounder']} at {s['degree']:.0%}"
        if s["degree"] > 0:
            if share >= USED:
                best = t.drop(index=["random", "centre"])["sensitivity_top10"]
                lines.append(f"{where}: the model uses the {s['confounder']} ({s['flips']} of {s['negatives']} "
                             f"negative films flip when it is added); the maps put "
                             f"{best.min():.2f}-{best.max():.2f} of its pixels in their top 10% (random map "
                             f"{t.loc['random', 'sensitivity_top10']:.2f}).")
            else:
                lines.append(f"{where}: THIS RUN CANNOT TELL: the model trained with the {s['confounder']} "
                             f"flipped only {s['flips']} of {s['negatives']} negative films, so it barely uses it "
                             "and the maps have nothing to find. Train longer, at a larger size, or with it on more "
                             "films.")
        elif not control_is_clean(s):
            lines.append(f"control ({s['confounder']} never in training): the clean model itself reacts to the "
                         f"{s['confounder']} ({s['flips']} flips), so it is no false-alarm control.")
        else:
            methods = [m for m in t.index if m not in ("random", "centre")]
            alarms = [m for m in methods if t.loc[m, "over_random"] > FALSE_ALARM_MARGIN]
            quiet = [m for m in methods if m not in alarms]
            text = f"control ({s['confounder']} never in training, {s['flips']} of {s['negatives']} flip): "
            if quiet:
                text += (f"quiet for {', '.join(quiet)} (at most {FALSE_ALARM_MARGIN} above a random map's "
                         f"{t.loc['random', 'sensitivity_top10']:.2f})")
            if alarms:
                text += ("; " if quiet else "") + "FALSE ALARM for " + ", ".join(
                    f"{m} (+{t.loc[m, 'over_random']:.2f})" for m in alarms) + \
                    f": {'they mark' if len(alarms) > 1 else 'it marks'} the {s['confounder']} although the model " \
                    "does not use it"
            lines.append(text + ".")
    return "\n".join(lines)


def control_is_clean(summary: dict) -> bool:
    """A degree-0 run is a false-alarm control only if the confounder barely moves the clean model."""
    return summary["flips"] <= UNMOVED_FLIPS * max(summary["negatives"], 1)


def gallery(result: ShortcutResult):
    """Flip cases: clean | confounded | each method's top-10% overlay, the confounder outlined in yellow."""
    import matplotlib.pyplot as plt

    from ..overlay import red_overlay
    ex = result.examples
    n, methods = len(ex["clean"]), list(ex["maps"])
    fig, axes = plt.subplots(max(n, 1), 2 + len(methods), figsize=(2.2 * (2 + len(methods)), 2.3 * max(n, 1)),
                             squeeze=False)
    for r in range(n):
        panels = [(ex["clean"][r], "clean"), (ex["confounded"][r], "confounded")]
        panels += [(red_overlay(ex["confounded"][r], ex["maps"][m][r], 0.10), m) for m in methods]
        for c, (img, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            if c >= 1:
                ax.contour(ex["masks"][r], levels=[0.5], colors="yellow", linewidths=0.6)
            ax.set_title(title if r == 0 else "", fontsize=8)
            ax.axis("off")
    s = result.summary
    fig.suptitle(f"{s['confounder']} at {s['degree']:.0%}: {s['scored_on']} (top 10% red)", fontsize=10)
    fig.tight_layout()
    return fig


def read_tables(folder: Path) -> list[ShortcutResult]:
    """The results ``write_tables`` wrote (without the gallery images), to merge or re-render them."""
    runs = pd.read_csv(Path(folder) / "confounder_runs.csv")
    table = pd.read_csv(Path(folder) / "confounder_audit.csv")
    out = []
    for s in runs.to_dict("records"):
        t = table[(table.confounder == s["confounder"]) & (table.degree == s["degree"])]
        out.append(ShortcutResult(s, t.drop(columns=["confounder", "degree", "flips"]).reset_index(drop=True), {}))
    return out


def write_tables(results: list[ShortcutResult], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.concat([r.table.assign(confounder=r.summary["confounder"], degree=r.summary["degree"],
                                      flips=r.summary["flips"]) for r in results], ignore_index=True)
    write_csv_atomic(table, folder / "confounder_audit.csv")
    write_csv_atomic(pd.DataFrame([r.summary for r in results]), folder / "confounder_runs.csv")
    write_text_atomic("# Planted-shortcut audit\n\n" + to_markdown(results), folder / "confounder_audit.md")


def confounder_sensitivity(heats: np.ndarray, masks: np.ndarray, fraction: float = 0.10) -> np.ndarray:
    """Per image: the share of the confounder's pixels that lie in the map's top ``fraction`` of pixels (Sun et
    al.'s confounder sensitivity at top 10%; "top" as in the overlays: exactly round(fraction · H · W) pixels)."""
    from ..overlay import top_fraction_mask
    masks = np.asarray(masks, bool)
    return np.array([(top_fraction_mask(h, fraction) & m).sum() / max(m.sum(), 1) for h, m in zip(heats, masks)])


def ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of map pairs (N, H, W): 1 = the same pattern; 0 when a map is flat."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    den = np.sqrt((a ** 2).sum(1) * (b ** 2).sum(1))
    return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1), 0.0)
