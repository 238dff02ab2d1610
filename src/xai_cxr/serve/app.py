"""Streamlit app: upload chest X-rays (PNG, JPEG, DICOM) or pick a sample → prediction, calibrated confidence,
MC-dropout uncertainty, Grad-CAM top-5% red overlay next to other explainers, downloads of overlay and report.

Run with ``xai-cxr app`` (or ``streamlit run src/xai_cxr/serve/app.py``). The weights folder comes from
``XAI_CXR_WEIGHTS_DIR`` (default ``saved_weights``); without trained weights the phantom model is served and
the page says so. Research use only."""
import hashlib
import os

import numpy as np
import streamlit as st

from xai_cxr.data import ImageReadError
from xai_cxr.explain.overlay import png_bytes, red_overlay
from xai_cxr.explain.registry import EXPLAINERS, explainer_names
from xai_cxr.serve.inference import load_predictor, phantom_predictor
from xai_cxr.serve.report import DISCLAIMER, ood_gauge, render_html, report_fields

FAST = explainer_names(fast_only=True)              # tens of ms per map on a CPU; the rest take seconds


@st.cache_resource(show_spinner="Loading the model…")
def get_predictor(weights_dir: str):
    """(predictor, problem): the trained model once per process; the phantom model, and why, otherwise."""
    try:
        return load_predictor(weights_dir, allow_phantom=False), None
    except FileNotFoundError:
        return phantom_predictor(), (f"No trained weights in `{weights_dir}/`: this page runs the **phantom model**, "
                                     "trained on synthetic images. Its outputs on real X-rays mean nothing. "
                                     "Train with `xai-cxr demo` or `xai-cxr train`.")
    except ValueError as exc:                    # weights of another architecture, a corrupt config…
        return phantom_predictor(), f"Could not load `{weights_dir}/`: {exc}. Serving the phantom model instead."


@st.cache_data(show_spinner=False, max_entries=64)
def explain_cached(_predictor, key: str, gray: np.ndarray, method: str, target: int) -> np.ndarray:
    return _predictor.explain(gray[None], method, targets=[target])[0]


def samples(size: int) -> dict[str, bytes]:
    """Synthetic phantom X-rays (with and without a lesion) as PNG bytes, so the app works with no data."""
    import cv2

    from xai_cxr.data.phantom import make_phantom
    out = {}
    for seed, lesions in ((1, 0), (2, 1), (3, 2)):
        img = make_phantom(np.random.default_rng(seed), size, n_lesions=lesions)[0]
        out[f"phantom_{'normal' if not lesions else f'{lesions}_lesion'}_{seed}.png"] = \
            cv2.imencode(".png", img)[1].tobytes()
    return out


def show(predictor, name: str, data: bytes, methods, fraction: float, threshold: float, folder_foreign: bool = False):
    try:
        gray = predictor.load(data, name)
    except ImageReadError as exc:
        st.error(f"**{name}** could not be read: {exc.reason}. Upload a PNG, JPEG or DICOM chest X-ray.")
        return
    pred = predictor.predict(gray[None], threshold=threshold,            # the task's rule at the slider's threshold
                             age_outside=[predictor.age_outside(data)])[0]
    if folder_foreign:                           # the films uploaded with it are, as a group, unlike the training films
        pred.refer_for("foreign_folder")
    target = predictor.class_names.index(pred.label)

    key = hashlib.sha256(data).hexdigest()
    heats = {m: explain_cached(predictor, key, gray, m, target) for m in methods}

    st.subheader(name)
    if pred.decision == "refer":                 # the referral leads; the model's output follows, marked as such
        st.error("**Referred to a reader — the model gives no answer for this film.** "
                 + " · ".join(r[0].upper() + r[1:] for r in pred.reason_text) + ".")
        st.caption(f"The model's output, not an answer: {pred.label} {pred.confidence:.1%} · uncertainty (MC-dropout "
                   f"sd) {pred.uncertainty:.3f} · {predictor.confidence_rule()}")
    else:
        c1, c2, c3 = st.columns(3)
        c1.metric("Prediction", pred.label)
        c2.metric("Calibrated confidence", f"{pred.confidence:.1%}")
        c3.metric("Uncertainty (MC-dropout sd)", f"{pred.uncertainty:.3f}")
    gauge = ood_gauge(pred, predictor)
    if gauge is not None:
        st.progress(gauge[0], text=gauge[1])
    st.caption(f"Probabilities: {', '.join(f'{k} {v:.1%}' for k, v in pred.probabilities.items())} · "
               f"decision threshold {threshold:.2f} · red = top {fraction:.0%} of each map")
    overlays = {m: red_overlay(gray, h, fraction) for m, h in heats.items()}
    cols = st.columns(len(overlays) + 1)
    cols[0].image(gray, caption="input", clamp=True, width=280)
    for col, (m, rgb) in zip(cols[1:], overlays.items()):
        col.image(rgb, caption=m, width=280)
    first = next(iter(overlays))
    html = render_html(gray, overlays, report_fields(pred, predictor, name), gauge)
    d1, d2 = st.columns(2)
    stem = os.path.splitext(os.path.basename(name))[0]
    d1.download_button("Download overlay PNG", png_bytes(overlays[first]),
                       file_name=f"{stem}_{first}.png", mime="image/png", key=f"png-{key}")
    d2.download_button("Download report (HTML)", html, file_name=f"{stem}_report.html", mime="text/html",
                       key=f"html-{key}")


FOLDER_MIN = 10        # films uploaded together before the folder shift test runs (its power: docs/results.md)


def show_folder(predictor, files) -> bool:
    """Are the uploaded films, as a group, like the training films? The folder shift test in words and the
    histogram of their out-of-distribution scores beside the holdout's; True when they are foreign (every film is
    then referred)."""
    from xai_cxr.evaluate import plot_ood_scores
    grays = []
    for name, data in files:
        try:
            grays.append(predictor.load(data, name))
        except ImageReadError:
            continue                                   # said where the film itself is shown
    found = predictor.folder_test(np.stack(grays)) if len(grays) >= FOLDER_MIN else None
    if found is None:
        return False
    test, scores = found
    text = test.in_words(f"these {len(grays)} films").replace("the metrics below", "the model's measured accuracy")
    (st.error if test.foreign else st.success)("**Folder check:** " + text + ".")
    reference = predictor.ood.combined(predictor.ood.reference_z)
    st.pyplot(plot_ood_scores({"the model's holdout films": reference, f"these {len(grays)} films": scores},
                              predictor.ood.threshold))
    return test.foreign


def main():
    st.set_page_config(page_title="xai-cxr", layout="wide")
    st.title("Explainable pneumonia detection on chest X-rays")
    st.warning(DISCLAIMER)
    predictor, problem = get_predictor(os.environ.get("XAI_CXR_WEIGHTS_DIR", "saved_weights"))
    if problem:
        st.info(problem)
    card = predictor.card
    st.caption(f"Model: {card.backbone} at {card.image_size}px ({card.geometry}) · "
               f"classes {', '.join(card.class_names)} · "
               f"weights sha256 {predictor.weights_id[:16]}… · temperature {predictor.temperature:.2f}")

    with st.sidebar:
        methods = st.multiselect("Explanations", list(EXPLAINERS), default=["gradcam"],
                                 help=f"fast: {', '.join(FAST)}; Score-CAM, LIME and SHAP take longer")
        fraction = st.slider("Share of heat painted red", 0.01, 0.30, 0.05, 0.01, key="fraction")
        # the card's threshold may be an operating point chosen on validation (e.g. 0.95): the range must hold it
        threshold = st.slider("Decision threshold (positive class)", 0.01, 0.99,
                              min(max(float(card.threshold), 0.01), 0.99), 0.01, key="threshold",
                              help="default: the model card's (0.5, or the operating point chosen on validation)")
    uploads = st.file_uploader("Chest X-rays (PNG, JPEG or DICOM)", type=["png", "jpg", "jpeg", "dcm"],
                               accept_multiple_files=True, key="uploads")
    sample_set = samples(card.image_size)
    sample = st.selectbox("…or pick a synthetic sample", ["(none)", *sample_set], key="sample")
    files = [(u.name, u.getvalue()) for u in uploads or []]
    if sample != "(none)":
        files.append((sample, sample_set[sample]))
    if not files:
        st.write("Upload one or more images, or pick a sample, to see the prediction and its explanation.")
    st.caption(f"When it answers: {predictor.confidence_rule()}.")
    foreign = show_folder(predictor, files) if len(files) >= FOLDER_MIN else False
    for name, data in files:
        show(predictor, name, data, methods or ["gradcam"], fraction, threshold, foreign)


# `streamlit run` and AppTest execute the file as __main__; importing it renders nothing
if __name__ == "__main__":
    main()
