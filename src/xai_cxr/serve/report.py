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
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}"""


def _png_b64(rgb_or_gray: np.ndarray) -> str:
    from ..explain.overlay import png_bytes
    return base64.b64encode(png_bytes(rgb_or_gray)).decode()


def report_fields(prediction, predictor, image_name: str) -> dict:
    """The facts the report states, in order (also what the tests and the PDF read)."""
    card = predictor.card
    return {
        "image": Path(image_name).name,
        "prediction": prediction.label,
        "confidence (calibrated)": f"{prediction.confidence:.1%}",
        "uncertainty (MC-dropout sd)": f"{prediction.uncertainty:.3f}" + ("  → refer to a reader" if prediction.referred else ""),
        "probabilities": ", ".join(f"{k} {v:.1%}" for k, v in prediction.probabilities.items()),
        "out of distribution": _ood_text(prediction, predictor),
        "model": f"{card.backbone}, {card.image_size}px ({card.geometry}), classes {', '.join(card.class_names)}",
        "weights sha256": predictor.weights_id,
        "weights source": predictor.source,
        "temperature": f"{predictor.temperature:.3f}" if predictor.calibrated else
                       "1 (no calibration.json beside the weights: confidence not calibrated)",
        "generated (UTC)": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
    }


def _ood_text(prediction, predictor) -> str:
    if prediction.ood_score is None:
        return "not checked (no ood.npz beside the weights: retrain to fit the detector)"
    verdict = prediction.warning.upper() if prediction.out_of_distribution else "no: like the training films"
    return f"{verdict} (score {prediction.ood_score:.1f}, threshold {predictor.ood.threshold:.1f})"


def render_html(gray: np.ndarray, overlays: dict[str, np.ndarray], fields: dict) -> str:
    """Self-contained HTML: the image, each method's overlay (RGB arrays) and the facts table."""
    figs = [f'<figure><img alt="input" src="data:image/png;base64,{_png_b64(gray)}"><figcaption>input'
            "</figcaption></figure>"]
    figs += [f'<figure><img alt="{html.escape(m)}" src="data:image/png;base64,{_png_b64(o)}"><figcaption>'
             f"{html.escape(m)} (top 5% red)</figcaption></figure>" for m, o in overlays.items()]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in fields.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>xai-cxr report</title><style>{_STYLE}"
            f"</style></head><body><h1>Chest X-ray model report</h1><p class='warn'>{DISCLAIMER}</p>"
            f"<h2>{html.escape(fields['prediction'])} — {html.escape(fields['confidence (calibrated)'])}</h2>"
            f"{''.join(figs)}<table>{rows}</table><p class='warn'>{DISCLAIMER}</p></body></html>")


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
    with PdfPages(path, metadata={"Title": "xai-cxr report", "Subject": fields["prediction"]}) as pdf:
        pdf.savefig(fig)
    plt.close(fig)
    return path


def write_report(path: str | Path, gray: np.ndarray, heats: dict[str, np.ndarray], prediction, predictor,
                 image_name: str, fraction: float = 0.05) -> Path:
    """Write the report as HTML or PDF by ``path``'s suffix; atomically, so a crash leaves no half file."""
    import os
    from ..explain.overlay import red_overlay
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm", ".pdf"):
        raise ValueError(f"{path}: the report is written as .html or .pdf")
    overlays = {m: red_overlay(gray, h, fraction) for m, h in heats.items()}
    fields = report_fields(prediction, predictor, image_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix.lower() == ".pdf":
        render_pdf(tmp, gray, overlays, fields)
    else:
        tmp.write_text(render_html(gray, overlays, fields), encoding="utf-8")
    os.replace(tmp, path)
    return path
