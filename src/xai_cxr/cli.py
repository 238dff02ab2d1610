"""Command line: ``xai-cxr demo | train | compare | evaluate | explain | audit | segment | report | serve | app |
phantoms``.

The CLI builds the config dataclasses from flags and calls the package; choices come from the registries.
"""
from __future__ import annotations

import argparse
import os
import sys

from .data.images import TTA_TRANSFORMS
from .flags import add_common, training_defaults


def _setup_device(device: str, verbose: bool = False) -> None:
    """Import TensorFlow quietly (its C++ log only with --verbose or a TF_CPP_MIN_LOG_LEVEL of the user's);
    --device cpu hides every GPU (CUDA and Apple Metal) before TensorFlow touches them."""
    from .runtime import quiet_tensorflow
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    tf = quiet_tensorflow(verbose)
    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif device == "gpu" and not tf.config.list_physical_devices("GPU"):
        sys.exit("error: --device gpu, but TensorFlow sees no GPU (see README: CUDA / Apple Metal installs)")


def build_parser() -> argparse.ArgumentParser:
    from .commands import (
        cmd_app,
        cmd_audit,
        cmd_compare,
        cmd_demo,
        cmd_evaluate,
        cmd_explain,
        cmd_export,
        cmd_fit_ood,
        cmd_phantoms,
        cmd_report,
        cmd_segment,
        cmd_serve,
        cmd_train,
    )
    p = argparse.ArgumentParser(prog="xai-cxr", description="Explainable pneumonia detection on chest X-rays")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="phantoms (or chest_xray/) → training → evaluation → sample_results.png")
    add_common(d)
    d.set_defaults(func=cmd_demo)
    t = sub.add_parser("train", help="two-stage training, then test evaluation and Grad-CAM samples")
    t.add_argument("--folds", type=int, default=None,
                   help="k-fold cross-validation on the train split, grouped by patient: mean ± std of every metric")
    add_common(t)
    t.set_defaults(func=cmd_train)
    c = sub.add_parser("compare", help="train several backbones on the same data; one table of test metrics")
    c.add_argument("--backbones", nargs="+", default=["mobilenetv2", "densenet169", "ensemble"])
    add_common(c)
    c.set_defaults(func=cmd_compare)
    e = sub.add_parser("evaluate", help="metrics of saved weights on the test split")
    e.add_argument("--data-dir", default="chest_xray")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--labels-csv", default=None, help="multilabel models: the CSV of findings of DATA_DIR")
    e.add_argument("--tta", nargs="+", default=(), choices=list(TTA_TRANSFORMS),
                   help="test-time augmentation: average the probabilities over these views (e.g. identity zoom "
                        "shift_left shift_right); default none")

    add_common(e, data=False, cam=())
    e.set_defaults(func=cmd_evaluate)
    x = sub.add_parser("explain", help="Grad-CAM overlays for image files")
    x.add_argument("images", nargs="+")
    x.add_argument("--out", default="sample_results/explain")
    x.add_argument("--dicom-out", default=None, metavar="DIR",
                   help="DICOM inputs only: also write each overlay as a DICOM Secondary Capture in the source's "
                        "study (references its UIDs, copies no name or birth date) into DIR")
    add_common(x, data=False, results=False)
    x.set_defaults(func=cmd_explain)
    _add_audit(sub, cmd_audit)
    sg = sub.add_parser("segment", help="U-Net on lesion masks, classify-then-segment, Dice/IoU next to Grad-CAM")
    sg.add_argument("--data-dir", default="phantoms/chest_xray", help="data with *_mask.png lesion masks")
    sg.add_argument("--epochs", type=int, default=15)
    sg.add_argument("--out", default="sample_results/segmentation")
    add_common(sg, data=False, cam=(), results=False)
    sg.set_defaults(func=cmd_segment)
    _add_serving(sub, cmd_report, cmd_serve, cmd_app)
    ex = sub.add_parser("export",
                        help="the model as a TensorFlow SavedModel or an ONNX file (uint8 film in, calibrated "
                                       "probabilities out), checked against the Keras model before it is kept")
    ex.add_argument("weights_dir", help="a trained model's folder (model_config.json + model.weights.h5)")
    ex.add_argument("--format", choices=["savedmodel", "onnx"], required=True)
    ex.add_argument("--out", required=True, help="folder for the export, its card, export.json and README.md")
    ex.set_defaults(func=cmd_export, device="cpu")
    from .models.ood import INPUT_CHECKS
    o = sub.add_parser("fit-ood",
                       help="fit (again) the out-of-distribution detector and the error-level rule of a trained "
                                      "model on the films it was trained on (its run_config.json: same training "
                                      "films, same holdout)")
    o.add_argument("weights_dir",
                   help="a trained model's folder (model_config.json, model.weights.h5, run_config.json)")
    o.add_argument("--data-dir", default=None, help="where its training data lives now (default: the saved path)")
    o.add_argument("--population-age", default=None, metavar="MIN-MAX",
                   help="ages in years of the training films' patients, written into a model card that has none "
                        "(cards written before the age rule): a DICOM whose PatientAge lies outside is then referred")
    o.add_argument("--error-level", type=float, default=None, metavar="LEVEL",
                   help="the error of the answered films the referral rule bounds on the holdout (default: the "
                        "folder's, else the run's, else 0.05); refitted with the detector")
    o.add_argument("--input-checks", nargs="+", default=None, choices=sorted(INPUT_CHECKS), metavar="CHECK",
                   help="the input-level checks the detector scores beside the model's features: autoencoder (the "
                        "default), contrastive (a self-supervised encoder of the training films; minutes more), "
                        "or both")
    o.set_defaults(func=cmd_fit_ood, device="auto")
    g = sub.add_parser("phantoms", help="write a synthetic phantom data set with lesion masks")
    g.add_argument("--out", default="phantoms/chest_xray")
    g.add_argument("--image-size", type=int, default=128)
    g.add_argument("--n-train", type=int, default=300)
    g.add_argument("--n-test", type=int, default=100)
    g.add_argument("--n-val", type=int, default=0)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_phantoms, device="auto")
    return p


def _add_audit(sub, cmd_audit) -> None:
    from .data.confounders import CONFOUNDERS
    from .explain.registry import EXPLAINERS
    a = sub.add_parser("audit", help="localization, faithfulness and sanity checks of explainers; with --confounder, "
                                     "the planted-shortcut audit (trains on a contaminated copy first)")
    a.add_argument("--methods", nargs="*", choices=list(EXPLAINERS), default=None,
                   help="default: every CAM method and fused (input attributions on request: they cost more)")
    a.add_argument("--n-images", type=int, default=50)
    a.add_argument("--steps", type=int, default=20, help="deletion/insertion steps")
    a.add_argument("--baseline", choices=["blur", "mean"], default="blur")
    a.add_argument("--out", default=None,
                   help="output folder (default sample_results/audit; with --confounder sample_results)")
    a.add_argument("--images", choices=["positive", "all"], default="positive",
                   help="audit pneumonia images only (default; lesion masks) or all test images")
    a.add_argument("--target", choices=["true", "predicted"], default="true",
                   help="class each map explains: the true label (default) or the predicted class (as RISE)")
    a.add_argument("--label-randomization", action="store_true",
                   help="also retrain the model on permuted labels (its saved configs, DATA_DIR's train split) "
                        "and compare maps: Adebayo et al.'s second sanity check; costs one training run")
    a.add_argument("--confounder", nargs="+", choices=list(CONFOUNDERS), default=None,
                   help="plant this shortcut on a share of the PNEUMONIA training films of DATA_DIR, train with the "
                        "training flags below (as `train`), and score how often each explainer finds it")
    a.add_argument("--degree", nargs="+", type=float, default=[0.5],
                   help="share(s) of the PNEUMONIA training films that carry the confounder, in [0, 1]; 0 = the "
                        "control (a clean model, where a map on the confounder is a false alarm)")
    a.add_argument("--copy-dir", default="confounded", help="where the contaminated copies of the data go")
    add_common(a, data=True)
    a.set_defaults(func=cmd_audit, data_dir="phantoms/chest_xray")
    a.set_defaults(training_defaults=training_defaults(a))


def _add_serving(sub, cmd_report, cmd_serve, cmd_app) -> None:
    from .explain.registry import EXPLAINERS
    r = sub.add_parser("report", help="HTML or PDF report of one image: prediction, confidence, uncertainty, overlays")
    r.add_argument("image")
    r.add_argument("--out", default="sample_results/report.html", help="*.html or *.pdf")
    r.add_argument("--methods", nargs="+", choices=list(EXPLAINERS), default=["gradcam"])
    r.add_argument("--mc-passes", type=int, default=20, help="MC-dropout passes for the uncertainty (1 = off)")
    r.add_argument("--phantom", action="store_true", help="use the phantom model when WEIGHTS_DIR has no weights")
    r.add_argument("--dicom-out", default=None, metavar="DIR",
                   help="a DICOM input only: also write the first method's overlay as a DICOM Secondary Capture in "
                        "the source's study into DIR")
    add_common(r, data=False, cam=("top_fraction",), results=False)
    r.set_defaults(func=cmd_report)
    sv = sub.add_parser("serve", help="HTTP API: /predict, /explain, /health (FastAPI + uvicorn)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-batch", type=int, default=16, help="requests batched onto one forward pass")
    sv.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits to fill")
    sv.add_argument("--mc-passes", type=int, default=20, help="MC-dropout passes per batch (1 = no uncertainty)")
    sv.add_argument("--phantom", action="store_true", help="serve the phantom model when WEIGHTS_DIR has no weights")
    sv.add_argument("--token", default=None,
                    help="require 'Authorization: Bearer TOKEN' on every endpoint but /health "
                         "(default: $XAI_CXR_API_TOKEN; none = open, so bind 127.0.0.1)")
    sv.add_argument("--weights-dir", default="saved_weights")
    sv.set_defaults(func=cmd_serve, device="auto")
    ap = sub.add_parser("app", help="the Streamlit app (upload → prediction, confidence, overlays, report)")
    ap.add_argument("--port", type=int, default=8501)
    ap.add_argument("--address", default="localhost", help="0.0.0.0 to serve other machines (e.g. from Docker)")
    ap.add_argument("--weights-dir", default="saved_weights")
    ap.set_defaults(func=cmd_app, device="auto")


def main(argv=None) -> int:
    from .data import DatasetLayoutError
    from .models import WeightsNotFoundError
    args = build_parser().parse_args(argv)
    _setup_device(args.device, getattr(args, "verbose", False))
    if args.command in ("train", "demo"):
        from .runtime import multi_worker_strategy
        args.strategy = multi_worker_strategy()      # TF_CONFIG with several workers; before any other TF op
    if getattr(args, "precision", "float32") != "float32":
        from .models.train import set_precision
        set_precision(args.precision)
    try:
        args.func(args)
    except (DatasetLayoutError, WeightsNotFoundError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
