"""Which explainer to trust for which kind of shortcut: the measured answer of the planted-shortcut protocol
(``benchmarks/shortcut_protocol.py`` writes ``recommendation.json`` beside this file, with its date and model),
read by ``xai-cxr audit``, the docs and the notebook's section 6b."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

RECOMMENDATION = Path(__file__).with_name("recommendation.json")
KIND_WORDS = {"tag": "a marker or text (a tag)", "hyperintensities": "thin bright lines (hyperintensities)",
              "obstruction": "a missing or blacked-out region (an obstruction)"}


def recommendation() -> dict | None:
    """The measured table, or None when the protocol has not been run."""
    return json.loads(RECOMMENDATION.read_text()) if RECOMMENDATION.is_file() else None


def recommended_methods() -> list[str]:
    """The explainers the table recommends, one per kind of shortcut, in order, without repeats, leaving out (with
    a warning that names the extra to install) those whose optional packages are missing; Grad-CAM when there is
    no table or nothing is left."""
    from .registry import missing_packages
    rec = recommendation()
    if rec is None:
        return ["gradcam"]
    names = list(dict.fromkeys(v["recommended"]["method"] for v in rec["confounders"].values()
                               if v.get("recommended")))
    missing = {name: missing_packages(name) for name in names}
    for name, packages in missing.items():
        if packages:
            warnings.warn(f"the recommended explainer {name!r} needs {', '.join(packages)}, not installed: skipped "
                          "(pip install -e '.[app]' to run it)", stacklevel=2)
    return [name for name in names if not missing[name]] or ["gradcam"]


def to_markdown(rec: dict | None = None) -> str:
    """One row per kind of shortcut: the explainer to trust, its measured confounder sensitivity (worst–best over
    the planted degrees), its false alarm in the control, its cost — and Grad-CAM's, for comparison."""
    rec = rec or recommendation()
    if rec is None:
        return "(no measured recommendation: run benchmarks/shortcut_protocol.py)\n"
    lines = ["| shortcut | trust | sensitivity at top 10% (worst–best) | false alarm over random | s / map | "
             "Grad-CAM | target ≥ 0.80 |", "|---|---|---|---|---|---|---|"]
    for kind, v in rec["confounders"].items():
        best, grad = v.get("recommended"), v.get("gradcam")
        if best is None:
            lines.append(f"| {KIND_WORDS.get(kind, kind)} | none without a false alarm | | | | | missed |")
            continue
        alarm = "n/a: the clean model reads it" if v.get("control_model_reacts") else \
            f"{best['false_alarm_over_random']:+.2f}"
        g = f"{grad['worst']:.2f}–{grad['best']:.2f}" if grad else "—"
        lines.append(f"| {KIND_WORDS.get(kind, kind)} | `{best['method']}` | {best['worst']:.2f}–{best['best']:.2f} | "
                     f"{alarm} | {best['seconds_per_map']:.2f} | {g} | {'met' if v['target_met'] else 'missed'} |")
    return (f"Measured {rec['date']} by {rec['source']} ({rec['model']}; {rec['n_images']} flip-set films per "
            "cell). A map that does not light up a shortcut of the kinds marked *missed* does not show its "
            "absence.\n\n" + "\n".join(lines) + "\n")
