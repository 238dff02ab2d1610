"""Writes eXplainable-ai.ipynb (outputs cleared). Edit the cells here, then run this script."""
import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# Explainable pneumonia detection on chest X-rays

This notebook walks through the whole `xai_cxr` pipeline, one step per cell: scan the data, decode it once,
train a classifier in two stages, evaluate it on the test split, and explain its predictions with Grad-CAM.
Every step is a call into the `xai_cxr` package, so the command line (`xai-cxr demo`, `xai-cxr train`)
does exactly the same thing.

**Data.** With the Kaggle *Chest X-Ray Images (Pneumonia)* set unpacked in `chest_xray/`, the notebook uses it
at 256 px. Without it, it generates **synthetic chest X-ray phantoms** (lungs, ribs, heart shadow, and
consolidation-like opacities with known lesion masks) at 128 px, so everything runs offline in minutes and we
can *check* that the heat maps point at the lesion.

*Research use only; not a diagnostic device.*"""),
    md("Parameters. `QUICK = True` shrinks the run to seconds (the test suite executes the notebook that way)."),
    code("""DATA_DIR = "chest_xray"   # Kaggle layout: train/ [val/] test/ with NORMAL/ and PNEUMONIA/ inside
SEED = 42
QUICK = False""", metadata={"tags": ["parameters"]}),
    code("""%matplotlib inline
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np

from xai_cxr.config import CamConfig
from xai_cxr.data import scan_dataset
from xai_cxr.evaluate import format_metrics, plot_confusion, plot_roc
from xai_cxr.models import BACKBONES, build_model
from xai_cxr.pipeline import (demo_configs, evaluate_on_test, fit, lesion_masks, lesion_pointing_game,
                              prepare_data, resolve_model, sample_figure, save_figure)
from xai_cxr.train import plot_history"""),
    md("""## 1. Data

`demo_configs` picks the data (your `chest_xray/` when it has a `train/` split, phantoms otherwise), the input
size and a short training schedule. The configs are frozen dataclasses: change a value with `replace`."""),
    code("""data_cfg, model_cfg, train_cfg, note = demo_configs(DATA_DIR, seed=SEED)
if QUICK:
    data_cfg = replace(data_cfg, image_size=64, limit=48)
    train_cfg = train_cfg.with_epochs(stage1=1, stage2=1)
print(note)
data_cfg"""),
    md("The manifest: one row per image, with the pneumonia subtype and patient id parsed from Kermany file names."),
    code("""manifest = scan_dataset(data_cfg.root)
print(manifest.groupby(["split", "label"]).size().unstack())
manifest.head(3)"""),
    md("""## 2. Decode once, class weights, and the validation choice

Images are decoded to grayscale once (unreadable files are skipped and listed), squashed to a square, and kept
as uint8 in memory; tf.data then batches them and applies the backbone's preprocessing.

Kermany's `val/` split has only 16 images, so — like the seed notebook — the **test split serves as validation
data** by default. That choice is visible here: early stopping and checkpoint selection then see the test
images, so the test metrics are optimistic. `replace(data_cfg, validation="holdout:0.1")` holds out 10% of the
train patients instead."""),
    code("""prep = prepare_data(data_cfg)
print(prep.validation_note)
print("class weights:", prep.class_weight)
print("skipped:", prep.skipped or "none")"""),
    code("""masks = lesion_masks(prep.test, data_cfg.image_size)
fig, axes = plt.subplots(1, 6, figsize=(14, 2.6))
for ax, i in zip(axes, np.r_[np.flatnonzero(prep.test.labels == 0)[:3], np.flatnonzero(prep.test.labels == 1)[:3]]):
    ax.imshow(prep.test.images[i], cmap="gray")
    if masks is not None and masks[i].any():
        ax.contour(masks[i], levels=[0.5], colors="yellow", linewidths=0.8)
    ax.set_title(prep.test.manifest.label[i], fontsize=9)
    ax.axis("off")
plt.show()"""),
    md("""## 3. Model

VGG19 with ImageNet weights is the seed's model. ImageNet weights are never downloaded at run time: Keras's
cache file `~/.keras/models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5` is used when present. Without it,
VGG19 from random weights does not learn in demo time, so `backbone="auto"` falls back to `cxr-small`, a compact
BatchNorm CNN, and says so. Both share the head (GAP → Dropout 0.4 → Dense 256 + L2 → Dropout 0.3 → softmax),
the training, the evaluation and the Grad-CAM code."""),
    code("""model_cfg, why = resolve_model(model_cfg)
print(why or f"using {model_cfg.backbone} with ImageNet weights")
model = build_model(model_cfg, data_cfg.image_size)
spec = BACKBONES[model_cfg.backbone]
print(f"{model.name}: {model.count_params():,} parameters; Grad-CAM layer {spec.target_layer}")"""),
    md("""## 4. Two-stage training

Stage 1 trains the head on the frozen backbone (Adam 3e-4); stage 2 unfreezes `block5_conv1` and above (Adam
1e-5, clipnorm 1.0). Each stage has fresh EarlyStopping, ReduceLROnPlateau and checkpoint callbacks; the loss is
categorical cross-entropy with label smoothing 0.05, weighted by class. `cxr-small` has no pretrained weights, so
it trains whole in a single stage."""),
    code("""history = fit(model, prep, data_cfg, train_cfg, weights_dir="saved_weights")
plot_history(history);"""),
    md("## 5. Evaluation on the test split"),
    code("""metrics, proba = evaluate_on_test(model, prep.test, data_cfg, prep.skipped)
print(format_metrics(metrics))
plot_confusion(metrics, data_cfg.class_names)
plot_roc(prep.test.labels, proba[:, 1]);"""),
    md("""**Calibrated confidence and uncertainty.** A probability of 0.9 should be right 9 times in 10. Temperature
scaling divides the logits by one number T fitted on the validation data (the predicted class never changes);
the reliability diagram shows accuracy per confidence bin before and after, and `calibration.json` beside the
weights lets the app, the API and the report show calibrated confidences."""),
    code("""from pathlib import Path
from xai_cxr.calibration import apply_temperature, plot_reliability
from xai_cxr.pipeline import calibrate
cal = calibrate(model, prep, data_cfg, proba, Path("saved_weights"), Path("sample_results"))
print({k: v for k, v in cal.items() if k != "note"})
plot_reliability(prep.test.labels, proba, apply_temperature(proba, cal["temperature"]));"""),
    md("""Monte-Carlo dropout keeps dropout on at inference (BatchNorm stays in inference mode) and reads the spread
of 20 passes as uncertainty. Referring the least certain cases to a reader should raise the accuracy on the rest:"""),
    code("""from xai_cxr.calibration import accuracy_at_coverage
from xai_cxr.data import to_model_input
from xai_cxr.uncertainty import mc_dropout_model, mc_predict
mc = mc_predict(mc_dropout_model(model), to_model_input(prep.test.images, spec.preprocess).numpy(),
                passes=5 if QUICK else 20)
sd = mc["std"][np.arange(len(proba)), proba.argmax(1)]
print("accuracy at coverage (most uncertain referred):", accuracy_at_coverage(prep.test.labels, proba.argmax(1), sd))"""),
    md("""## 6. Grad-CAM

Grad-CAM weights each channel of the target layer by the spatial mean of the class logit's gradient and keeps
the positive part of the weighted sum. The overlay paints the **top 5% of heat red** on the grayscale X-ray."""),
    code("""cam_cfg = CamConfig()
fig = sample_figure(model, prep.test, data_cfg, cam_cfg, spec.target_layer)
save_figure(fig, "sample_results/sample_results.png")
fig"""),
    md("""On phantoms we know where the lesion is, so the heat map can be *checked*: the pointing game counts the
positive test images whose hottest pixel lies inside the lesion mask."""),
    code("""pg = lesion_pointing_game(model, prep.test, data_cfg, cam_cfg, spec.target_layer)
print(f"pointing game: {pg['hit_rate']:.1%} of {pg['n_images']} images" if pg else "no lesion masks in this data set")"""),
    md("""**Other explainers, side by side.** Grad-CAM sees the image at the resolution of its target layer;
Integrated Gradients and SmoothGrad attribute every pixel from input gradients; LIME (superpixels) and SHAP
(Partition explainer over image regions) only query the model's outputs, at hundreds of forward passes per image.
All of them are also available to the audit below and in the app."""),
    code("""from xai_cxr.attribution import ATTRIBUTION_METHODS
from xai_cxr.cam import CAM_METHODS
from xai_cxr.overlay import red_overlay
idx = np.flatnonzero(prep.test.labels == 1)[:2]
x = to_model_input(prep.test.images[idx], spec.preprocess).numpy()
n = 60 if QUICK else 300
explainers = {"gradcam": CAM_METHODS["gradcam"](model, spec.target_layer),
              **{m: ATTRIBUTION_METHODS[m](model) for m in ("integrated_gradients", "smoothgrad")},
              **{m: ATTRIBUTION_METHODS[m](model, n_samples=n) for m in ("lime", "shap")}}
maps = {name: e(x, targets=1) for name, e in explainers.items()}
fig, axes = plt.subplots(len(idx), len(maps), figsize=(3 * len(maps), 3 * len(idx)), squeeze=False)
for r, i in enumerate(idx):
    for c, (name, m) in enumerate(maps.items()):
        axes[r, c].imshow(red_overlay(prep.test.images[i], m[r]))
        if masks is not None:
            axes[r, c].contour(masks[i], levels=[0.5], colors="yellow", linewidths=0.6)
        axes[r, c].set_title(name, fontsize=9)
        axes[r, c].axis("off")
plt.show()"""),
    md("""## 7. Are the explanations right? The audit

Drawing a heat map is easy; knowing whether it is faithful is not. `audit` scores CAM methods against the
phantom lesion masks (pointing game, top-5% hit rate, IoU/Dice), by deletion/insertion and ROAD against random
and centre-bias maps, and by the cascading randomization sanity check (a map that survives randomizing the
model's weights does not explain the model)."""),
    code("""from xai_cxr.audit import audit, to_markdown
from xai_cxr.config import AuditConfig
from IPython.display import Markdown

audit_cfg = AuditConfig(methods=("gradcam", "hirescam", "gradcam++"), n_images=8 if QUICK else 50,
                        steps=5 if QUICK else 20, sanity_images=4 if QUICK else 8)
report = audit(model, model_cfg.backbone, prep.test, masks, audit_cfg)
Markdown(to_markdown(report))"""),
    md("""## 8. Optional set-ups (same training, evaluation and Grad-CAM code)

**Augmentation** (`--augment`, off by default like the seed): small rotations, zoom, shifts, brightness and
contrast on training batches only, never a horizontal flip (the heart sits on one side). One batch, augmented:"""),
    code("""from xai_cxr.config import AugmentConfig
from xai_cxr.data import make_dataset
x, _ = next(iter(make_dataset(prep.train.images[:6], prep.train.labels[:6], spec.preprocess,
                              batch_size=6, augment=AugmentConfig(), seed=SEED)))
fig, axes = plt.subplots(2, 6, figsize=(14, 5))
for k in range(6):
    axes[0, k].imshow(prep.train.images[k], cmap="gray"); axes[0, k].set_title("original", fontsize=8)
    axes[1, k].imshow(np.asarray(x[k, ..., 0]), cmap="gray"); axes[1, k].set_title("augmented", fontsize=8)
for ax in axes.ravel():
    ax.axis("off")
plt.show()"""),
    md("""**Three classes** (`--task subtype`): NORMAL / BACTERIA / VIRUS from the Kermany file names, with
per-class metrics and a 3×3 confusion matrix (the phantoms carry the same names)."""),
    code("""from xai_cxr.data import TASKS
sub_cfg = replace(data_cfg, task="subtype", class_names=TASKS["subtype"])
sub_prep = prepare_data(sub_cfg, progress=False)
sub_model = build_model(replace(model_cfg, num_classes=3), sub_cfg.image_size)
fit(sub_model, sub_prep, sub_cfg, train_cfg, weights_dir="saved_weights/subtype")
sub_metrics, _ = evaluate_on_test(sub_model, sub_prep.test, sub_cfg)
print(format_metrics(sub_metrics))"""),
    md("""**Segmentation** (`xai-cxr segment`): where lesion masks exist, a small U-Net learns them and runs on
the images the classifier calls positive — supervised localisation next to Grad-CAM's weakly supervised one."""),
    code("""from xai_cxr.segment import SegmentConfig, classify_then_segment, mask_scores, train_unet
train_masks = lesion_masks(prep.train, data_cfg.image_size)
if masks is not None and train_masks is not None:
    unet, _ = train_unet(prep.train.images, train_masks, cfg=SegmentConfig(epochs=2 if QUICK else 15))
    _, seg = classify_then_segment(model, spec.preprocess, unet, prep.test.images)
    print("U-Net (classify, then segment):", mask_scores(seg, masks))"""),
    md("""From the command line: `xai-cxr train --folds 5` (k-fold cross-validation grouped by patient, mean ± std),
`xai-cxr train --task multilabel --labels-csv Data_Entry_2017.csv --data-dir NIH_IMAGES` (ChestX-ray14, focal
loss, per-label AUROC, `--bbox-csv` for box localization), `xai-cxr compare --backbones mobilenetv2 densenet169
ensemble` (the stacked ensemble against its members), `--backbone` any of the registry, `--classes auto` for any
folder-per-class data set, and a `<case>/<name>` + `<name>_mask` layout (LGG brain MRI) read as is."""),
    md("""## 9. Using the model: report, app, API

`Predictor` bundles the model, the fitted temperature and MC dropout for single images (PNG, JPEG or DICOM
bytes). The same object is behind the HTML/PDF report (`xai-cxr report IMAGE --out report.html`), the Streamlit
app (`xai-cxr app`) and the HTTP API (`xai-cxr serve`: `/predict`, `/explain`, `/health`). Research use only."""),
    code("""from IPython.display import HTML
from xai_cxr.inference import Predictor
from xai_cxr.models import ModelCard
from xai_cxr.report import render_html, report_fields
card = ModelCard(model_cfg.backbone, data_cfg.image_size, tuple(data_cfg.class_names), target_layer=spec.target_layer)
predictor = Predictor(model, card, temperature=cal["temperature"], calibrated=True,
                      weights_id="(this notebook's model)", source="notebook", mc_passes=5 if QUICK else 20)
gray = prep.test.images[idx[0]]
pred = predictor.predict(gray[None])[0]
print(pred)
HTML(render_html(gray, {"gradcam": red_overlay(gray, predictor.explain(gray[None])[0])},
                 report_fields(pred, predictor, prep.test.manifest.path[idx[0]])))"""),
    md("""## Where next

- Real data: put the Kaggle set in `chest_xray/` and rerun, or `xai-cxr train --data-dir chest_xray`.
- ImageNet weights: copy the Keras cache file named above into `~/.keras/models/` (see the README).
- Explain your own images: `xai-cxr explain IMAGE... --out DIR`.
- Check the explanations: `xai-cxr audit` scores Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM, Score-CAM, Eigen-CAM
  and a layer fusion for localization (phantom lesion masks), faithfulness (deletion/insertion, ROAD) and the
  randomization sanity check, and draws galleries of the model's mistakes."""),
]
for i, cell in enumerate(cells):
    cell["id"] = f"cell-{i:02d}"                 # stable ids: regenerating gives a clean diff
nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"}})
nbf.write(nb, "eXplainable-ai.ipynb")
