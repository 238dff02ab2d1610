"""A one-page report a reader can file: the image, its overlays, prediction, calibrated confidence,
uncertainty, the model's identity and date, and a research-use-only line. HTML (self-contained, images
inlined) or PDF (matplotlib, no extra dependency). Only pixels and the model's output go in: no DICOM tag."""
from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path

import numpy as np

DISCLAIMER = "Research use only. Not a diagnosis: a clinician must read the image."

_STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:.6rem 1rem;font-weight:600}
figure{display:inline-block;margin:.4rem;text-align:center}figure img{width:14rem;image-rendering:pixelated}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
.refer{background:#fdecea;border:2px solid #c0392b;padding:.6rem 1rem}
.gauge{position:relative;width:24rem;height:.8rem;background:#eee;border:1px solid #999}
.gauge div{height:100%}.gauge span{position:absolute;left:50%;top:-.2rem;height:1.2rem;border-left:2px solid #000}
.cap{font-size:.85rem;color:#555}"""


def _png_b64(rgb_or_gray: np.ndarray) -> str:
    from ..explain.overlay import png_bytes
    return base64.b64encode(png_bytes(rgb_or_gray)).decode()


def report_fields(prediction, predictor, image_name: str) -> dict:
    """The facts the report states, in order (also what the tests and the PDF read). A referred film leads with
    the referral and its reasons; the model's output is kept, marked as not an answer."""
    card = predictor.card
    referred = prediction.decision == "refer"
    output = f"{prediction.label} {prediction.confidence:.1%}"
    return {
        "image": Path(image_name).name,
        "decision": ("REFER to a reader: " + "; ".join(prediction.reason_text)) if referred else
                    "answered by the model",
        "prediction": f"none given (referred) — the model's output, not an answer: {output}" if referred else
                      prediction.label,
        "confidence (calibrated)": f"{prediction.confidence:.1%}",
        "uncertainty (MC-dropout sd)": f"{prediction.uncertainty:.3f}",
        "error level": predictor.confidence_rule(),
        "probabilities": ", ".join(f"{k} {v:.1%}" for k, v in prediction.probabilities.items()),
        "out of distribution": _ood_text(prediction, predictor),
        "model": f"{card.backbone}, {card.image_size}px ({card.geometry}), classes {', '.join(card.class_names)}",
        "training population": (f"ages {card.population_age[0]:g}–{card.population_age[1]:g} years"
                                if card.population_age else "not recorded"),
        "weights sha256": predictor.weights_id,
        "weights source": predictor.source,
        "temperature": f"{predictor.temperature:.3f}" if predictor.calibrated else
                       "1 (no calibration.json beside the weights: confidence not calibrated)",
        "generated (UTC)": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
    }


def headline(fields: dict) -> str:
    """The report's title line: the referral when referred, else the answer and its confidence."""
    if fields["decision"].startswith("REFER"):
        return fields["decision"]
    return f"{fields['prediction']} — {fields['confidence (calibrated)']}"


def ood_gauge(prediction, predictor) -> tuple[float, str] | None:
    """(fill in [0, 1], caption) of a bar on which the detector's threshold sits at the middle; None without a
    detector. The caption names the depth that saw the film as strangest."""
    if prediction.ood_score is None:
        return None
    thr = prediction.ood_threshold
    fill = float(np.clip(prediction.ood_score / (2 * thr), 0, 1)) if thr > 0 else float(prediction.out_of_distribution)
    side = "above" if prediction.out_of_distribution else "below"
    where = ""
    if prediction.ood_z:
        from ..models.referral import BRANCH_WORDS
        loud = max(prediction.ood_z, key=prediction.ood_z.get)
        where = f"; most unusual at {BRANCH_WORDS.get(loud, loud)} (z = {prediction.ood_z[loud]:.1f})"
    return fill, (f"unlike-the-training-films score {prediction.ood_score:.1f}, {side} the threshold {thr:.1f} "
                  f"(the middle of the bar){where}")


def _ood_text(prediction, predictor) -> str:
    if prediction.ood_score is None:
        return "not checked (no ood.npz beside the weights: retrain to fit the detector)"
    verdict = prediction.warning.upper() if prediction.out_of_distribution else "no: like the training films"
    return f"{verdict} ({ood_gauge(prediction, predictor)[1]})"


def _gauge_html(gauge) -> str:
    if gauge is None:
        return ""
    fill, caption = gauge
    colour = "#c0392b" if fill > 0.5 else "#2e7d32"
    return (f"<div class='gauge' title='{html.escape(caption)}'><div style='width:{fill * 100:.0f}%;"
            f"background:{colour}'></div><span></span></div><p class='cap'>{html.escape(caption)}</p>")


def render_html(gray: np.ndarray, overlays: dict[str, np.ndarray], fields: dict, gauge=None) -> str:
    """Self-contained HTML: the decision (a referral first, with its reasons), the image, each method's overlay
    (RGB arrays), the out-of-distribution gauge (``ood_gauge``) and the facts table."""
    figs = [f'<figure><img alt="input" src="data:image/png;base64,{_png_b64(gray)}"><figcaption>input'
            "</figcaption></figure>"]
    figs += [f'<figure><img alt="{html.escape(m)}" src="data:image/png;base64,{_png_b64(o)}"><figcaption>'
             f"{html.escape(m)} (top 5% red)</figcaption></figure>" for m, o in overlays.items()]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in fields.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>xai-cxr report</title><style>{_STYLE}"
            f"</style></head><body><h1>Chest X-ray model report</h1><p class='warn'>{DISCLAIMER}</p>"
            f"<h2 class='{'refer' if fields['decision'].startswith('REFER') else 'answer'}'>"
            f"{html.escape(headline(fields))}</h2>{''.join(figs)}{_gauge_html(gauge)}<table>{rows}</table>"
            f"<p class='warn'>{DISCLAIMER}</p></body></html>")


def render_pdf(path: str | Path, gray: np.ndarray, overlays: dict[str, np.ndarray], fields: dict) -> Path:
    """One A4 page: images on top, the facts below, the disclaimer in bold."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages
    panels = [("input", gray)] + list(overlays.items())
    fig = plt.figure(figsize=(8.27, 11.69))
    fig.suptitle("Chest X-ray model report", fontsize=16, y=0.97)
    fig.text(0.5, 0.93, DISCLAIMER, ha="center", fontsize=10, weight="bold", color="#8a6d00")
    referred = fields["decision"].startswith("REFER")
    fig.text(0.5, 0.905, headline(fields)[:110], ha="center", fontsize=11, weight="bold",
             color="#c0392b" if referred else "#222")
    for i, (name, img) in enumerate(panels):
        ax = fig.add_axes([0.05 + (i % 3) * 0.31, 0.62 - (i // 3) * 0.27, 0.28, 0.28])
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    y = 0.62 - ((len(panels) - 1) // 3) * 0.27 - 0.05
    for k, v in fields.items():
        fig.text(0.07, y, f"{k}:", fontsize=9, weight="bold")
        fig.text(0.35, y, str(v)[:90], fontsize=9)
        y -= 0.025
    path = Path(path)
    with PdfPages(path, metadata={"Title": "xai-cxr report", "Subject": headline(fields)}) as pdf:
        pdf.savefig(fig)
    plt.close(fig)
    return path


def write_report(path: str | Path, gray: np.ndarray, heats: dict[str, np.ndarray], prediction, predictor,
                 image_name: str, fraction: float = 0.05) -> Path:
    """Write the report as HTML or PDF by ``path``'s suffix; atomically, so a crash leaves no half file."""
    from ..config import atomic_path
    from ..explain.overlay import red_overlay
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm", ".pdf"):
        raise ValueError(f"{path}: the report is written as .html or .pdf")
    overlays = {m: red_overlay(gray, h, fraction) for m, h in heats.items()}
    fields = report_fields(prediction, predictor, image_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".pdf":
            render_pdf(tmp, gray, overlays, fields)
        else:
            tmp.write_text(render_html(gray, overlays, fields, ood_gauge(prediction, predictor)), encoding="utf-8")
    return path
