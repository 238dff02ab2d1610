"""Command line: ``xai-cxr demo | train | compare | evaluate | explain | audit | segment | report | serve | app |
phantoms``.

The CLI builds the config dataclasses from flags and calls the package; choices come from the registries.
"""
from __future__ import annotations

import argparse
import os
import sys

from .config import AUGMENT_PRESETS
from .data.images import GEOMETRIES, TTA_TRANSFORMS
from .tasks import TASKS


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


def _add_common(p, data=True, cam=("cam", "target_layer", "top_fraction"), results=True):
    """Flags shared by subcommands; each subcommand gets only the CAM flags and --results-dir it reads."""
    from .explain.registry import EXPLAINERS
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="cpu hides GPUs (compare with this when Metal/CUDA results look off)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ log (hidden by default)")
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"], default="float32",
                   help="Keras dtype policy: mixed_float16 for CUDA GPUs, mixed_bfloat16 for CPUs with AVX512-BF16")
    if data:
        _add_data_flags(p)
    if "cam" in cam:
        p.add_argument("--cam", choices=[n for n, s in EXPLAINERS.items() if s.layers != "input"], default="gradcam",
                       help="CAM method for the sample grid / overlays (default gradcam)")
    if "target_layer" in cam:
        p.add_argument("--target-layer", default=None,
                       help="CAM layer (default: the backbone's, block5_conv3 for VGG19)")
    if "top_fraction" in cam:
        p.add_argument("--top-fraction", type=float, default=0.05, help="share of pixels painted red (default 0.05)")
    p.add_argument("--weights-dir", default="saved_weights")
    if results:
        p.add_argument("--results-dir", default="sample_results")


def _add_data_flags(p) -> None:
    """The flags of a training run: data, model, schedule, task, caching, tracking (one argument group)."""
    from .models import BACKBONES
    from .recipes import recipe_names
    p = p.add_argument_group("training", "data, model and schedule of a training run; a flag left out keeps the "
                                         "value of the recipe (--config) or of the reference design")
    p.add_argument("--config", default=None, metavar="RECIPE",
                   help=f"start from a recipe: one of {recipe_names()} (src/xai_cxr/recipes/) or a JSON file of "
                        "the same form; flags given beside it override its values")
    p.add_argument("--data-dir", default="chest_xray", help="folder with train/ [val/] test/ (default: chest_xray)")
    p.add_argument("--image-size", type=int, default=None, help="input side in px (default 256; demo 128)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32")
    p.add_argument("--limit", type=int, default=None,
                   help="at most N train images, stratified (quick runs); val/test stay whole")
    p.add_argument("--validation", default=None, help="test (the reference design's) | val | holdout:0.1")
    p.add_argument("--backbone", choices=["auto", *BACKBONES], default=None)
    p.add_argument("--weights", default=None,
                   help="imagenet | none | PATH (default: imagenet, downloaded once into ~/.keras/models like Keras)")
    p.add_argument("--no-download", action="store_true", default=_env_no_download(),
                   help="never download ImageNet weights: use ~/.keras/models/ or stop with the URL "
                        "(default when XAI_CXR_NO_DOWNLOAD=1)")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="TensorFlow op determinism: same seed → same weights (default on; off is faster on GPUs)")
    p.add_argument("--epochs1", type=int, default=None, help="stage-1 epochs (default 7)")
    p.add_argument("--epochs2", type=int, default=None, help="stage-2 epochs (default 14)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="wall-clock training budget: stop after the last epoch that fits, keep the best epoch")
    p.add_argument("--optimizer", choices=["adam", "adamw"], default=None,
                   help="adam (the reference design) or adamw (decoupled weight decay, --weight-decay)")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW's weight decay (default 1e-4)")
    p.add_argument("--keep", choices=["best", "last"], default=None,
                   help="weights kept at the end of a stage: best (lowest validation loss; default) or last (the "
                        "final epoch, e.g. the end of a cosine schedule)")
    p.add_argument("--ema", type=float, default=None, metavar="MOMENTUM",
                   help="keep an exponential moving average of the weights (e.g. 0.99); validation and the best "
                        "checkpoint use it")
    p.add_argument("--operating-point", default=None, metavar="RULE",
                   help="two classes: choose the decision threshold on the validation split after calibration — "
                        "sensitivity:0.95 (highest threshold keeping 95%% sensitivity), specificity:0.9, or youden; "
                        "stored in the model card (evaluate, app, API use it); default 0.5")
    p.add_argument("--schedule", choices=["plateau", "cosine"], default=None,
                   help="plateau: ReduceLROnPlateau (the reference design); cosine: 1 warm-up epoch, then cosine decay "
                        "to 0")
    p.add_argument("--lr", type=float, default=None,
                   help="stage-1 learning rate (default 3e-4, the reference design's)")
    p.add_argument("--clahe", action=argparse.BooleanOptionalAction, default=None,
                   help="CLAHE-equalise every image after resizing (training, evaluation and serving alike)")
    p.add_argument("--task", choices=list(TASKS), default=None,
                   help="; ".join(f"{t.name}: {t.help}" for t in TASKS.values()))
    p.add_argument("--labels-csv", default=None, help="multilabel: Data_Entry_2017.csv-style labels")
    p.add_argument("--bbox-csv", default=None,
                   help="multilabel: BBox_List_2017.csv-style boxes → Grad-CAM pointing game / IoU against them")
    p.add_argument("--loss", choices=["focal", "bce"], default=None,
                   help="multilabel loss: binary focal (default) or per-label weighted BCE")
    p.add_argument("--focal-gamma", type=float, default=None, help="default 2.0")
    p.add_argument("--focal-alpha", type=float, default=None, help="default 0.25")
    p.add_argument("--classes", default=None,
                   help="class folder names, comma-separated, or 'auto' = the sub-folders of train/ "
                        "(any folder-per-class data set); default NORMAL,PNEUMONIA")
    p.add_argument("--color", action="store_true", default=None,
                   help="keep images in colour (non-X-ray data sets); default: decode to grayscale")
    p.add_argument("--augment", nargs="?", const="standard", choices=[*sorted(AUGMENT_PRESETS), "none"], default=None,
                   help="augment training batches (no flips). Default 'aspect' = 'standard' + a random ±30%% zoom "
                        "of the width alone (the chest made wider or narrower: the model must not learn the film's "
                        "shape); 'standard' (the flag alone) = small rotations/zoom/shifts/brightness/contrast; "
                        "'strong' adds gamma and widens the jitter; 'none' = off (frozen-feature cache on again)")
    p.add_argument("--geometry", choices=list(GEOMETRIES), default=None,
                   help="how a film becomes the square input, saved in the model card and applied by evaluate, "
                        "explain, the app and the API: squash (default; keeps the whole chest), crop (centre "
                        "square), pad (letterbox)")
    p.add_argument("--population-age", default=None, metavar="MIN-MAX",
                   help="ages in years of the training films' patients, saved in the model card: a DICOM whose "
                        "PatientAge lies outside is referred (the age is compared, never shown or stored); "
                        "'none' = unknown. Default: 1-5 for Kaggle's chest_xray NORMAL/PNEUMONIA folders "
                        "(Kermany's children), else unknown")
    p.add_argument("--image-store", default=None,
                   help="decode the images once into memory-mapped files in this folder and train from there "
                        "(bounded RAM for 100k+ films; reused while files and settings are unchanged)")
    p.add_argument("--cache-dir", default=None,
                   help="keep frozen-backbone features on disk here (keyed by images, weights, size; "
                        "memory-mapped), reused by later runs; default: memory only")
    p.add_argument("--no-feature-cache", action="store_true", default=None,
                   help="run the frozen backbone on every step instead of caching its features once")
    p.add_argument("--mlflow", action="store_true",
                   help="log params, metrics, curves, weights and figures to MLflow (pip install 'xai-cxr[mlflow]')")
    p.add_argument("--mlflow-store", default="mlruns", help="local MLflow store (default mlruns/)")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run from its last finished epoch (state in WEIGHTS_DIR/train_state)")


def _training_defaults(parser) -> dict:
    """Defaults of the flags only a training run reads (audit accepts them with --confounder only): the "training"
    argument group — every flag of ``_add_data_flags`` but the two an audit reads too, --data-dir and --labels-csv —
    and the CAM and results flags."""
    group = next(g for g in parser._action_groups if g.title == "training")
    dests = [a.dest for a in group._group_actions if a.dest not in ("data_dir", "labels_csv")]
    dests += ["cam", "top_fraction", "results_dir"]
    return {k: parser.get_default(k) for k in dests}


def _env_no_download() -> bool:
    from .models import download_allowed
    return not download_allowed()


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
    _add_common(d)
    d.set_defaults(func=cmd_demo)
    t = sub.add_parser("train", help="two-stage training, then test evaluation and Grad-CAM samples")
    t.add_argument("--folds", type=int, default=None,
                   help="k-fold cross-validation on the train split, grouped by patient: mean ± std of every metric")
    _add_common(t)
    t.set_defaults(func=cmd_train)
    c = sub.add_parser("compare", help="train several backbones on the same data; one table of test metrics")
    c.add_argument("--backbones", nargs="+", default=["mobilenetv2", "densenet169", "ensemble"])
    _add_common(c)
    c.set_defaults(func=cmd_compare)
    e = sub.add_parser("evaluate", help="metrics of saved weights on the test split")
    e.add_argument("--data-dir", default="chest_xray")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--labels-csv", default=None, help="multilabel models: the CSV of findings of DATA_DIR")
    e.add_argument("--tta", nargs="+", default=(), choices=list(TTA_TRANSFORMS),
                   help="test-time augmentation: average the probabilities over these views (e.g. identity zoom "
                        "shift_left shift_right); default none")

    _add_common(e, data=False, cam=())
    e.set_defaults(func=cmd_evaluate)
    x = sub.add_parser("explain", help="Grad-CAM overlays for image files")
    x.add_argument("images", nargs="+")
    x.add_argument("--out", default="sample_results/explain")
    x.add_argument("--dicom-out", default=None, metavar="DIR",
                   help="DICOM inputs only: also write each overlay as a DICOM Secondary Capture in the source's "
                        "study (references its UIDs, copies no name or birth date) into DIR")
    _add_common(x, data=False, results=False)
    x.set_defaults(func=cmd_explain)
    _add_audit(sub, cmd_audit)
    sg = sub.add_parser("segment", help="U-Net on lesion masks, classify-then-segment, Dice/IoU next to Grad-CAM")
    sg.add_argument("--data-dir", default="phantoms/chest_xray", help="data with *_mask.png lesion masks")
    sg.add_argument("--epochs", type=int, default=15)
    sg.add_argument("--out", default="sample_results/segmentation")
    _add_common(sg, data=False, cam=(), results=False)
    sg.set_defaults(func=cmd_segment)
    _add_serving(sub, cmd_report, cmd_serve, cmd_app)
    ex = sub.add_parser("export",
                        help="the model as a TensorFlow SavedModel or an ONNX file (uint8 film in, calibrated "
                                       "probabilities out), checked against the Keras model before it is kept")
    ex.add_argument("weights_dir", help="a trained model's folder (model_config.json + model.weights.h5)")
    ex.add_argument("--format", choices=["savedmodel", "onnx"], required=True)
    ex.add_argument("--out", required=True, help="folder for the export, its card, export.json and README.md")
    ex.set_defaults(func=cmd_export, device="cpu")
    o = sub.add_parser("fit-ood",
                       help="fit (again) the out-of-distribution detector of a trained model on the films it "
                                      "was trained on (its run_config.json: same training films, same holdout)")
    o.add_argument("weights_dir",
                   help="a trained model's folder (model_config.json, model.weights.h5, run_config.json)")
    o.add_argument("--data-dir", default=None, help="where its training data lives now (default: the saved path)")
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
    _add_common(a, data=True)
    a.set_defaults(func=cmd_audit, data_dir="phantoms/chest_xray")
    a.set_defaults(training_defaults=_training_defaults(a))


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
    _add_common(r, data=False, cam=("top_fraction",), results=False)
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
