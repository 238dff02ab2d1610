"""The flags subcommands share: the common ones (device, seed, precision, CAM, folders) and the "training" group
(data, model, schedule; ``commands/configs.py`` maps each to its config field)."""
from __future__ import annotations

import argparse

from .config import AUGMENT_PRESETS
from .data.images import GEOMETRIES
from .tasks import TASKS


def add_common(p, data=True, cam=("cam", "target_layer", "top_fraction"), results=True):
    """Flags shared by subcommands; each subcommand gets only the CAM flags and --results-dir it reads."""
    from .explain.registry import EXPLAINERS
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="cpu hides GPUs (compare with this when Metal/CUDA results look off)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ log (hidden by default)")
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"], default="float32",
                   help="Keras dtype policy: mixed_float16 for CUDA GPUs, mixed_bfloat16 for CPUs with AVX512-BF16")
    if data:
        add_training_flags(p)
    if "cam" in cam:
        p.add_argument("--cam", choices=[n for n, s in EXPLAINERS.items() if s.reads != "input"], default="gradcam",
                       help="CAM method for the sample grid / overlays (default gradcam)")
    if "target_layer" in cam:
        p.add_argument("--target-layer", default=None,
                       help="CAM layer (default: the backbone's, block5_conv3 for VGG19)")
    if "top_fraction" in cam:
        p.add_argument("--top-fraction", type=float, default=0.05, help="share of pixels painted red (default 0.05)")
    p.add_argument("--weights-dir", default="saved_weights")
    if results:
        p.add_argument("--results-dir", default="sample_results")


def add_training_flags(p) -> None:
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
    p.add_argument("--error-level", type=float, default=None, metavar="LEVEL",
                   help="the error of the answered films the referral rule bounds (default 0.05: answered films "
                        "≥ 95%% right on validation, with 95%% confidence); films below the confidence this needs are "
                        "referred")
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


def training_defaults(parser) -> dict:
    """Defaults of the flags only a training run reads (audit accepts them with --confounder only): the "training"
    argument group — every flag of ``add_training_flags`` but the two an audit reads too, --data-dir and --labels-csv —
    and the CAM and results flags."""
    group = next(g for g in parser._action_groups if g.title == "training")
    dests = [a.dest for a in group._group_actions if a.dest not in ("data_dir", "labels_csv")]
    dests += ["cam", "top_fraction", "results_dir"]
    return {k: parser.get_default(k) for k in dests}


def _env_no_download() -> bool:
    from .models import download_allowed
    return not download_allowed()
