"""Writes eXplainable-ai.ipynb without outputs. Edit the cells here, then run `python tools/make_notebook.py`;
tests/test_notebook.py checks that the committed notebook equals what this script writes."""
from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# Explainable pneumonia detection on chest X-rays

This notebook trains a pneumonia classifier on the Kaggle *Chest X-Ray Images (Pneumonia)* set (Kermany et al.,
2018) and explains its predictions with Grad-CAM, one step per cell, with the science written out where it
matters: the class weights computed on your counts, which layers are frozen when, and the Grad-CAM computation
itself, checked against the package that the command line (`xai-cxr train`) runs.

**Run it.** Jupyter Lab (`jupyter lab eXplainable-ai.ipynb`) or VS Code (open the file, *Select Kernel* → the
project's `.venv` interpreter). A CUDA or Apple-Metal GPU is used when TensorFlow sees one.

**Data.** Unpack the Kaggle download into `chest_xray/` (`train/`, `test/`, optional `val/`, each with `NORMAL/`
and `PNEUMONIA/`; the zip's nested `chest_xray/chest_xray/` is found too). Without it the notebook generates
**synthetic chest X-ray phantoms** with known lesion masks and runs offline in the demo's budget (≤ 10 minutes
on 2 CPU cores), so the heat maps can be *checked* against the truth.

*Research use only; not a medical device.*"""),
    md("""## Parameters

The switches a researcher needs. `QUICK = True` shrinks everything (a few dozen images, 64 px, one epoch per
stage) to check that every cell runs; the numbers it prints mean nothing."""),
    code("""DATA_DIR = "chest_xray"   # Kaggle layout: train/ [val/] test/, each with NORMAL/ and PNEUMONIA/
RECIPE = "reference"      # the training recipe, a file in src/xai_cxr/recipes/ (the same `xai-cxr train --config` reads):
                          # "reference" (two-stage VGG19, ImageNet weights downloaded once: 256 px, 7 + up to 14 epochs)
                          # or "cxr-res" (no pretrained weights: the measured from-scratch recipe), or a .json of your own
VALIDATION = None         # None = the recipe's ("test" for reference, like the reference notebook: optimistic, see
                          # section 2) or "holdout:0.1" (patient-grouped, honest)
RUN_EXTRAS = False        # other explainers, subtypes, segmentation, report (section 7)
QUICK = False             # tiny run that checks the cells, not the science
SEED = 42
SHORTCUT_SIZE, SHORTCUT_EPOCHS = 96, 10   # section 6b's two small planted-tag models
EXTERNAL_DIR = None       # section 6c: films from elsewhere (test/NORMAL, test/PNEUMONIA), e.g. adults; None = skip""", metadata={"tags": ["parameters"]}),
    md("""## 0. The machine

TensorFlow's C++ start-up log (CUDA probes, oneDNN notes) is hidden unless you set `TF_CPP_MIN_LOG_LEVEL`
yourself. The next cell says what TensorFlow will compute on. On a GPU, `keras.mixed_precision.set_global_policy
("mixed_float16")` roughly halves memory and time; the classifier's last layer stays float32 either way."""),
    code("""%matplotlib inline
from dataclasses import replace
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt

from xai_cxr.runtime import describe_devices, quiet_tensorflow
tf = quiet_tensorflow()
import keras

print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
print(describe_devices())
print("precision policy:", keras.mixed_precision.global_policy().name)"""),
    md("""## 1. Data

The data folder is scanned into a manifest: one row per image, with the split, the label, and the patient id
parsed from Kermany's file names (`person1_bacteria_1.jpeg` → `person1`), which the honest holdout needs."""),
    code("""from xai_cxr.config import CamConfig, ModelConfig, TrainConfig
from xai_cxr.data import find_data_root
from xai_cxr.pipeline import has_split
from xai_cxr.recipes import demo_configs, load_recipe, recipe_path
from xai_cxr.tasks import get_task

ON_PHANTOMS = not has_split(DATA_DIR)
if ON_PHANTOMS:       # no Kaggle data: the demo's phantoms, its model and its short schedule (demo-phantoms)
    data_cfg, model_cfg, train_cfg, note = demo_configs(None, seed=SEED)
else:
    root, found = find_data_root(DATA_DIR)
    note = (found or f"data: {root}") + f"\\nrecipe: {recipe_path(RECIPE)}"
    data_cfg, model_cfg, train_cfg, _ = load_recipe(RECIPE, root, seed=SEED)
if VALIDATION:
    data_cfg = replace(data_cfg, validation=VALIDATION)
if QUICK:
    data_cfg = replace(data_cfg, image_size=64, limit=48)
    train_cfg = train_cfg.with_epochs(stage1=1, stage2=1)
train_cfg = replace(train_cfg, verbose=2)          # one line per epoch
print(note)

manifest = get_task(data_cfg.task).scan(data_cfg.root, data_cfg.class_names, data_cfg.seed)
counts = manifest.groupby(["split", "label"]).size().unstack(fill_value=0)
counts"""),
    code("""fig, axes = plt.subplots(1, 6, figsize=(14, 2.6))
for ax, (_, row) in zip(axes, manifest[manifest.split == "train"].groupby("label").head(3).iterrows()):
    ax.imshow(plt.imread(row.path), cmap="gray")
    ax.set_title(f"{row.label}\\n{Path(row.path).name[:24]}", fontsize=8)
    ax.axis("off")
plt.show()"""),
    md("""## 2. Decode once, choose the validation data

Images are decoded once to grayscale (unreadable files are skipped and listed, never fatal), brought to a square
by `data_cfg.geometry` — `"squash"` by default, which keeps the whole chest (`"crop"` cuts off a class-dependent
share of the width, `"pad"` leaves the film's shape as black bars; docs/results.md measures both) — and kept as
uint8; tf.data then batches them and applies the backbone's preprocessing. Kermany's NORMAL and PNEUMONIA films
differ in shape, so after a squash *how wide the chest looks* predicts the label: training batches therefore get
a random ±30% change of the width (`data_cfg.augment`, on by default; section 6b checks what your model reads).

**Validation data.** Kermany's `val/` split has 16 images, so — like the reference notebook — the **test split serves
as validation** by default: early stopping and checkpoint selection see the test images, and the test metrics are
optimistic (the `reference` recipe). `VALIDATION = "holdout:0.1"` holds out 10% of the training *patients* instead (no
patient on both
sides), and the test split stays unseen until section 4."""),
    code("""from xai_cxr.pipeline import prepare_data
prep = prepare_data(data_cfg)
print(prep.validation_note)
print(f"train {len(prep.train.images)}, validation {len(prep.val.images)}, test {len(prep.test.images)} images "
      f"at {data_cfg.image_size} px ({data_cfg.geometry}); skipped: {prep.skipped or 'none'}")
print("training augmentation:", data_cfg.augment or "off")"""),
    md("""**Class weights.** The Kaggle training split has about three pneumonia films for every normal one (1,341 :
3,875). Unweighted, the loss is dominated by pneumonia and the model learns to say "pneumonia". Each class *c*
gets the weight

$$w_c = \\frac{n}{k \\cdot n_c}$$

(*n* images, *k* classes, *n_c* images of class *c*), so every class contributes the same total weight *n / k* to
the loss. Computed here on your training counts, and checked equal to scikit-learn's `"balanced"` rule that
training uses:"""),
    code("""from sklearn.utils.class_weight import compute_class_weight
y = prep.train.labels
k, n = len(data_cfg.class_names), len(y)
by_hand = {}
for c, name in enumerate(data_cfg.class_names):
    n_c = int((y == c).sum())
    by_hand[c] = n / (k * n_c)
    print(f"{name:>10}: n_c = {n_c:5d}   w = {n} / ({k} · {n_c}) = {by_hand[c]:.3f}   total weight {by_hand[c] * n_c:.0f}")
sklearn_w = compute_class_weight("balanced", classes=np.arange(k), y=y)
assert np.allclose(list(by_hand.values()), sklearn_w) and np.allclose(sklearn_w, list(prep.class_weight.values()))
print("equal to scikit-learn's compute_class_weight('balanced') and to the weights training uses")"""),
    md("""## 3. The model and what trains when

VGG19 (ImageNet weights) → global average pooling → Dropout 0.4 → Dense 256 (ReLU, L2 1e-4) → Dropout 0.3 →
softmax. The ImageNet file is fetched the way Keras does it: `~/.keras/models/` when present, otherwise
downloaded once (Keras's published hash checked); offline, a clear error with the URL stops this cell before any
training. Without ImageNet weights, set `RECIPE = "cxr-res"`: a residual BatchNorm network made for that case,
trained whole in a single stage (freezing random features teaches nothing) with the recipe measured in
`docs/results.md` (160 px, CLAHE, augmentation including a random change of the width — the 224-px Kaggle copies
squash every film to a square, and how wide a chest looks then predicts the label — AdamW on a cosine schedule,
patient holdout, 30-minute budget).

Two stages, each with fresh EarlyStopping (patience 4), ReduceLROnPlateau (×0.5, patience 2) and a checkpoint of
the lowest validation loss; loss = categorical cross-entropy with label smoothing 0.05, weighted by class:"""),
    code("""from xai_cxr.models import BACKBONES, build_model, set_trainable
from xai_cxr.pipeline import resolve_model
from xai_cxr.models.train import stages_for

from xai_cxr.models.train import seed_everything
model_cfg = resolve_model(model_cfg, data_cfg)       # "auto" → vgg19; ImageNet weights fetched now if needed
seed_everything(SEED)                                # the head's initial weights too: one seed, one result
model = build_model(model_cfg, data_cfg.image_size, get_task(data_cfg.task).activation)
spec = BACKBONES[model_cfg.backbone]
print(f"{model_cfg.backbone} (weights: {model_cfg.weights}), {model.count_params():,} parameters\\n")
for name, stage in stages_for(train_cfg, spec.finetune_from):
    set_trainable(model, train_backbone=stage.train_backbone, unfreeze_from=stage.unfreeze_from)
    trainable = [l.name for l in model.layers if l.trainable and l.weights]
    n_params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"{name}: Adam(learning_rate={stage.learning_rate:g}, clipnorm={stage.clipnorm}), up to {stage.epochs} epochs, "
          f"{n_params:,} trainable parameters")
    print("   trains:", ", ".join(trainable) if len(trainable) < 12 else f"all {len(trainable)} layers with weights")"""),
    md("""Stage 1 trains only the head on frozen ImageNet features. Without augmentation the frozen backbone's features
would be computed once and reused every epoch (fast on a CPU); the width jitter changes every image every epoch,
so they are recomputed — seconds per epoch on a GPU, minutes on a CPU (`data_cfg = replace(data_cfg,
augment=None)` trades the guard for the speed; section 6b then tells you whether the model reads the width). Stage 2
unfreezes `block5_conv1` and above at a
learning rate 30× smaller, with gradient clipping, so the pretrained filters move only a little. The weights,
`model_config.json` and `run_config.json` go to `saved_weights/`, which `xai-cxr evaluate`, `explain`, the app
and the API read."""),
    code("""from xai_cxr.pipeline import fit
from xai_cxr.models.train import plot_history
history = fit(model, prep, data_cfg, train_cfg, "saved_weights", model_cfg=model_cfg)
plot_history(history);"""),
    md("""## 4. Evaluation on the test split

Accuracy, sensitivity (recall of pneumonia), specificity, F1 and ROC-AUC, with 95% bootstrap confidence
intervals (1,000 resamples of the test films), at the 0.5 threshold. With `train_cfg.operating_point` set (e.g.
`"sensitivity:0.95"`), the threshold is instead chosen on the *holdout* after temperature scaling, before the test
split is looked at, and saved in `model_config.json` (docs/results.md measures what it does)."""),
    code("""from pathlib import Path
from xai_cxr.config import write_json_atomic
from xai_cxr.evaluate import format_metrics, plot_confusion, plot_roc
from xai_cxr.pipeline import apply_operating_point, calibrate, evaluate_on_test
metrics, proba = evaluate_on_test(model, prep.test, data_cfg, prep.skipped)
# the temperature, fitted on the validation films and saved beside the weights (the app, API and 6c use it)
metrics["calibration"], val_calibrated = calibrate(model, prep, data_cfg, proba, Path("saved_weights"),
                                                   Path("sample_results"))
if train_cfg.operating_point:            # then pick the threshold on the same calibrated validation films
    metrics = apply_operating_point(train_cfg.operating_point, metrics, prep, data_cfg, val_calibrated, proba,
                                    metrics["calibration"]["temperature"], Path("saved_weights"))
metrics.update(backbone=model_cfg.backbone, weights=model_cfg.weights, validation=data_cfg.validation)
write_json_atomic(metrics, "sample_results/metrics.json")
print(format_metrics(metrics))
plot_confusion(metrics, data_cfg.class_names)
plot_roc(prep.test.labels, proba, data_cfg.class_names);"""),
    md("""## 5. Grad-CAM, written out

Grad-CAM (Selvaraju et al., 2017) asks which regions of the last convolutional block's feature maps
(`block5_conv3` for VGG19, 16 × 16 at 256 px) raise the class score:

1. run the image, keeping the feature maps *A* (h × w × C) and the class **logit** *y* (before the softmax, which
   would saturate the gradient);
2. take the gradient ∂y/∂A with a `GradientTape`;
3. weight each channel by its gradient's spatial mean: α_c = mean over h, w of ∂y/∂A_c;
4. keep the positive evidence, ReLU(Σ_c α_c A_c), normalise it to [0, 1] and upsample it to the image.

Here it is, in TensorFlow, checked against the package's `GradCAM` that the CLI, the app and the API use:"""),
    code("""def grad_cam(model, images, layer_name, class_index):
    \"\"\"Grad-CAM maps (B, H, W) in [0, 1] for preprocessed images (B, H, W, 3) and one class index per image.\"\"\"
    head = model.layers[-1]                                               # Dense + softmax
    features = keras.Model(model.inputs, [model.get_layer(layer_name).output, head.input])
    with tf.GradientTape() as tape:
        acts, penultimate = features(images, training=False)               # (B, h, w, C), (B, D)
        logits = penultimate @ head.kernel + head.bias                     # (B, K): the scores before the softmax
        score = tf.gather(logits, class_index, axis=1, batch_dims=1)       # (B,)
    grads = tape.gradient(score, acts)                                     # (B, h, w, C)
    alpha = tf.reduce_mean(grads, axis=(1, 2))                             # (B, C): one weight per channel
    cam = tf.nn.relu(tf.einsum("bhwc,bc->bhw", acts, alpha))               # (B, h, w)
    lo = tf.reduce_min(cam, axis=(1, 2), keepdims=True)
    cam = (cam - lo) / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) - lo + 1e-7)
    return tf.image.resize(cam[..., None], images.shape[1:3], "bilinear")[..., 0].numpy()

from xai_cxr.explain.cam import GradCAM
from xai_cxr.data import to_model_input
idx = np.r_[np.flatnonzero(prep.test.labels == 0)[:2], np.flatnonzero(prep.test.labels == 1)[:2]]
x = to_model_input(prep.test.images[idx], spec.preprocess)
predicted = model.predict(x, verbose=0).argmax(1)
ours = grad_cam(model, x, spec.target_layer, tf.constant(predicted))
package = GradCAM(model, spec.target_layer)(x.numpy(), predicted)
print(f"layer {spec.target_layer}: max |notebook − package| = {np.abs(ours - package).max():.2e}")
assert np.allclose(ours, package, atol=1e-4)"""),
    md("""**Why the top 5%.** Each map is normalised to its own maximum, so a threshold on heat *values* would paint
a large area on one film and almost nothing on another. Painting a fixed **share** of pixels (the hottest 5%) in
red shows every film's strongest evidence at the same size, so films can be compared by *where* the model looks.
The grid below is `sample_results/sample_results.png`."""),
    code("""from xai_cxr.pipeline import sample_figure, save_figure
cam_cfg = CamConfig()                                # Grad-CAM, the backbone's layer, top 5% in red
fig = sample_figure(model, prep.test, data_cfg, cam_cfg, spec.target_layer)
save_figure(fig, "sample_results/sample_results.png")
fig"""),
    md("""## 6. Can I trust these maps?

A heat map is easy to draw and hard to check. On **phantoms** the lesion masks are known: the *pointing game*
counts the pneumonia films whose hottest pixel falls inside the lesion, next to a random map and a map that always
points at the image centre. On **real films** there is no mask; *deletion* blurs the pixels the map ranks highest
first and measures how fast the predicted probability drops (area under the curve, lower = more faithful), again
against random and centre maps. `xai-cxr audit` runs the full set (every CAM method, ROAD, randomization sanity
checks, galleries of the model's mistakes)."""),
    code("""from IPython.display import Markdown
from xai_cxr.config import AuditConfig
from xai_cxr.pipeline import lesion_masks
from xai_cxr.studies import audit_saved_model
masks = lesion_masks(prep.test, data_cfg.image_size)
# the same audit as `xai-cxr audit`, on the model just saved: one report, shown here section by section
report = audit_saved_model("saved_weights", data_cfg.root,
                           AuditConfig(methods=("gradcam",), n_images=8 if QUICK else 50, steps=5 if QUICK else 20,
                                       sanity_images=2 if QUICK else 8,
                                       images="positive" if masks is not None else "all",
                                       target="true" if masks is not None else "predicted", seed=SEED),
                           spec.target_layer, progress=lambda *a: None)
Markdown(report.section("maps").markdown)"""),
    md("""**Where does the model look, on average?** Each test film's Grad-CAM for its predicted class; per predicted
class, the share of the top-5% heat that falls in named regions of the film, next to the region's share of the
image (what a random map would get). A ratio far above 1 on the border, the corners or the heart is worth a look
before trusting the accuracy."""),
    code("""regions = report.section("regions")
display(regions.figures["mean_maps.png"])
regions.tables["regions.csv"].round(3)"""),
    md("""## 6b. What does my model read?

A heat map shows where evidence *is*. It cannot show a cue made of the film's whole shape, or of what a region
*lacks*, and such cues are real here: Kermany's original films differ in shape by class (NORMAL films are
squarer), so a model trained on squashed films can learn how wide a chest looks instead of pneumonia; films carry
markers and text in their corners. So the model you just trained is *probed*, not only explained:

- **width**: every test film made narrower or wider about its centre (× 0.8 … 1.25, height kept). A model free of
  the squash shortcut keeps its predictions; the threshold (mean P(pneumonia) of the normal films moving by at most
  0.10) sits between the models measured with (≤ 0.03) and without (≥ 0.33) the width jitter that training now
  uses by default (`--augment aspect`, docs/results.md "Input geometry");
- **border and corners**: the outer ring, then each corner, blurred away (markers and text vanish, brightness
  stays): how many decisions flip;
- **the data alone**: how well file metadata (size, aspect, bit depth, file size, border brightness) predict the
  label, cross-validated by patient. A high value warns that the *data* carry a shortcut, whether or not this
  model took it.

`xai-cxr audit` prints the same table for any saved model."""),
    code("""Markdown(report.section("reads").markdown)   # computed by the audit of section 6"""),
    md("""### Would the maps show a shortcut? A planted tag

The question explainability is asked in medicine is whether the maps would *reveal* a shortcut the model really
uses. With no ground truth on real films, we plant one we control (Sun, Koch & Baumgartner, MICCAI 2023): the
text tag "CXR-ROOM1" near the bottom-left corner on every PNEUMONIA training film. A small model trained on that
copy is then shown NORMAL test films with the tag added; those that *flip* to PNEUMONIA were flipped by the tag,
so a faithful map must put its top pixels on it (*confounder sensitivity*: the share of the tag's pixels in the
map's top 10%). The same run without the tag in training is the control: there the model has no reason to use
the tag, and a map that still lands on it raises a false alarm (Adebayo et al., ICLR 2022). The lesson holds only
if the tagged model really uses the tag and the control really does not: the cell says in words whether this run
can tell.

This trains two small `cxr-small` models at 96 px on up to 240 of your training films (three to four minutes on a
CPU): it checks the *explainers* on your films, not the model above. On the phantoms (2026-11-29) the tagged model
flipped 100 of 100 normal films and Grad-CAM put 0.86 of the tag in its top 10%; in the control Grad-CAM stayed at
a random map's level (0.10) while SmoothGrad, a gradient map, marked the tag's edges (+0.13): a false alarm. On 240
real films of the 224-px Kermany copy: 234 of 234 normal films flipped, Grad-CAM 0.94 on the tag, its control quiet,
SmoothGrad +0.27. At 64 px Grad-CAM's coarse map fell on the tag in the control too, hence 96 px here. `xai-cxr audit
--confounder tag hyperintensities obstruction --degree 0 0.2 0.5 0.8 1` runs the full study.

**Which explainer for which shortcut.** The full protocol (`benchmarks/shortcut_protocol.py`: three confounders, five
degrees, every explainer, on real films with the `cxr-res` recipe) measured which map finds which kind of shortcut
without raising false alarms. The cell below runs the explainers that table recommends, with SmoothGrad beside them
as the example of a false alarm; the table itself follows the result."""),
    code("""from xai_cxr.explain.metrics.shortcut import lesson, to_markdown
from xai_cxr.studies import run_shortcut_audit
small_root = data_cfg.root
if ON_PHANTOMS:   # the measured setting of this check: 600 phantoms at 128 px (the demo's own are fewer and smaller)
    from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
    small_root = str(write_phantom_dataset("phantoms_shortcut/chest_xray", PhantomConfig(seed=SEED)))
small_data = replace(data_cfg, root=small_root, image_size=SHORTCUT_SIZE, limit=48 if QUICK else 240,
                     batch_size=16, validation="holdout:0.1", augment=None)
small_train = replace(TrainConfig(seed=SEED).with_epochs(stage1=1 if QUICK else SHORTCUT_EPOCHS, stage2=0), verbose=0)
from xai_cxr.explain.recommend import recommended_methods
from xai_cxr.explain.recommend import to_markdown as recommendation_markdown
methods = tuple(dict.fromkeys(["gradcam", *recommended_methods(), "smoothgrad"]))
print("explainers run:", ", ".join(methods), "(the measured recommendation, and SmoothGrad)")
shortcut = run_shortcut_audit(small_data, ModelConfig(backbone="cxr-small", weights="none"), small_train,
                              CamConfig(n_samples=4), ["tag"], [0.0, 1.0], methods,
                              "sample_results/shortcut", "saved_weights/shortcut", "shortcut_copies",
                              n_images=10, quiet=True)   # 10 films: LIME and SHAP take seconds a map
print(lesson(shortcut))
Markdown(to_markdown(shortcut) + "\\n\\n#### Which explainer to trust for which shortcut\\n\\n" + recommendation_markdown())"""),
    md("""## 6c. When not to trust the model

Kermany's films are children aged 1–5 from one hospital in Guangzhou. Show the model an adult's film from another
hospital and it still answers, often confidently: its last features were trained to ignore whatever does not
separate NORMAL from PNEUMONIA, age and hospital included, and softmax confidence is no guide off the training
distribution (Wollek et al. 2023: at chance on chest films).

So every prediction comes with a check of the film itself (`models/ood.py`). After each stage of the network the
feature maps are averaged over a 2 × 2 grid and compared with the training films' by Mahalanobis distance (Lee et
al. 2018; Anthony & Kamnitsas 2023: which depth sees a shift depends on the shift); a small autoencoder trained on
the same films adds a check that does not depend on the classifier. Each distance is standardised on films the
model did not train on (the holdout) and the z-scores are summed; the threshold is the 97th percentile of the
holdout's sums, so about 3% of ordinary films are flagged by design. A second check independent of the
classifier can join them: a self-supervised encoder trained on the training films alone (SimCLR,
`models/contrastive.py`; `xai-cxr fit-ood MODEL_DIR --input-checks autoencoder contrastive`). It is not in the
reference design — on synthetic film shifts it catches less — but it flags far more adult films from another
hospital (docs/results.md, "Answer only what it can stand behind").

A flagged film is **referred** to a reader, not answered — and so is a film the model is not confident enough to
answer at its **error level**, and a DICOM whose `PatientAge` lies outside the card's training population (compared,
never shown or stored). The app, the report, the API, `xai-cxr explain` and `xai-cxr evaluate` apply the same rule
(`models/referral.py`).

Below: the scores of the test films against films the model should not answer. Set `EXTERNAL_DIR` to a folder of
films from elsewhere (its `test/NORMAL`, `test/PNEUMONIA`) to see how many the detector catches; docs/results.md
("When not to trust the model") has the measured table for adult films from another hospital."""),
    code("""from xai_cxr.data import load_images, scan_dataset
from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset
from xai_cxr.evaluate import plot_ood_scores
from xai_cxr.models.ood import OODDetector
from xai_cxr.pipeline import fit_error_level, fit_out_of_distribution
print(fit_out_of_distribution(model, prep, Path("saved_weights"), SEED))   # fitted and saved beside the weights
fit_error_level(model, prep, data_cfg, Path("saved_weights"), train_cfg.error_level);
detector = OODDetector.load("saved_weights")
preprocess = BACKBONES[model_cfg.backbone].preprocess
score = lambda images: detector.assess(detector.image_values(model, images, preprocess)).score  # noqa: E731
film_sets = {"test split": prep.test.images}
if ON_PHANTOMS:     # phantoms are this model's own data: an inverted copy is the shift to catch
    film_sets["test split inverted"] = 255 - prep.test.images
else:
    phantoms = write_phantom_dataset("phantoms_ood", PhantomConfig(image_size=data_cfg.image_size, n_train=0,
                                                                   n_test=25))
    film_sets["synthetic phantoms"] = load_images(scan_dataset(phantoms), data_cfg.image_size, progress=False,
                                                  clahe=data_cfg.clahe, geometry=data_cfg.geometry).images
if EXTERNAL_DIR:
    external = scan_dataset(EXTERNAL_DIR)
    external = load_images(external[external.split == "test"], data_cfg.image_size, progress=False,
                           clahe=data_cfg.clahe, geometry=data_cfg.geometry)
    for k, name in enumerate(data_cfg.class_names):
        film_sets[f"external {name}"] = external.images[external.labels == k]
plot_ood_scores({k: score(v) for k, v in film_sets.items()}, detector.threshold);"""),
    md("""**The error level.** A confidence threshold is fitted on the validation films the detector lets through
(selective classification with guaranteed risk, Geifman & El-Yaniv 2017; `models/selective.py`): the lowest
calibrated probability at which the answered films' error, bounded from above with 95% confidence, stays under
`train_cfg.error_level` (default 5%: answered films ≥ 95% right). The bound is a promise about films like the
validation films, and only about them: the figure shows the error of the answered films as more of them are
answered, the level, and where the rule's threshold puts each film set.

**Is the folder, as a whole, like the training films?** One film's flag has little evidence; 40 films have a lot.
A linear classifier tries to tell the folder's films from the validation films by their detector z-scores
(a classifier two-sample test, `models/shift.py`): a cross-validated ROC-AUC near 0.5 says alike, and the folder
is called foreign at p < 0.001 over 1,000 label shuffles. It runs per class where the labels are known, since a
folder of one class is not a shift. `xai-cxr evaluate` prints the same verdict before its metrics."""),
    code("""from xai_cxr.evaluate import plot_error_level
from xai_cxr.serve.inference import Predictor
predictor = Predictor.from_weights_dir("saved_weights", mc_passes=1)
rule = predictor.selective          # fitted above: its words were printed there
labelled = {f"test {name}": (prep.test.images[prep.test.labels == k], k) for k, name in enumerate(data_cfg.class_names)}
if EXTERNAL_DIR:
    labelled.update({f"external {name}": (external.images[external.labels == k], k)
                     for k, name in enumerate(data_cfg.class_names)})
curves = {}
for name, (images, k) in labelled.items():      # per class: the two fail differently
    labels = np.full(len(images), k)
    preds = predictor.predict(images, mc=False)
    right = np.array([p.label == data_cfg.class_names[y] for p, y in zip(preds, labels)])
    answered = np.array([p.decision == "answer" for p in preds])
    curves[name] = (np.array([p.confidence for p in preds]), right)
    accuracy = f"{right[answered].mean():.1%} right" if answered.any() else "none answered"
    print(f"{name}: {answered.mean():.0%} of {len(preds)} answered, {accuracy} (all films: {right.mean():.1%})")
    found = predictor.folder_test(images, label=k)  # against the validation films of the same class
    print("   folder check —", found[0].in_words(name) if found else "too few films on a side to test")
plot_error_level(curves, rule.error_level, rule.min_confidence);"""),
    md("""## 7. Extras (`RUN_EXTRAS = True`)

Other explainers side by side (Grad-CAM++, HiResCAM, Integrated Gradients, SmoothGrad, and LIME / SHAP when the
optional packages are installed: `pip install -e ".[app]"`), the three-class task NORMAL / BACTERIA / VIRUS,
a U-Net where lesion masks exist, and a one-file HTML report of a prediction."""),
    code("""if RUN_EXTRAS:
    from xai_cxr.explain.registry import EXPLAINERS, make_explainer, missing_packages
    from xai_cxr.explain.overlay import red_overlay
    print("explainers in the registry:", ", ".join(f"{n} ({s.cost})" for n, s in EXPLAINERS.items()))
    explainers = {m: make_explainer(m, model, model_cfg.backbone)
                  for m in ("gradcam", "gradcam++", "hirescam", "integrated_gradients", "smoothgrad")}
    absent = sorted({p for m in ("lime", "shap") for p in missing_packages(m)})   # the registry knows their packages
    if absent:
        print(f"LIME and SHAP skipped: {', '.join(absent)} not installed (pip install -e '.[app]')")
    else:
        explainers.update({m: EXPLAINERS[m].cls(model, n_samples=60 if QUICK else 300) for m in ("lime", "shap")})
    show = idx[-2:]
    maps = {name: e(to_model_input(prep.test.images[show], spec.preprocess).numpy(), predicted[-2:])
            for name, e in explainers.items()}
    fig, axes = plt.subplots(len(show), len(maps), figsize=(2.6 * len(maps), 2.8 * len(show)), squeeze=False)
    for r, i in enumerate(show):
        for c, (name, m) in enumerate(maps.items()):
            axes[r, c].imshow(red_overlay(prep.test.images[i], m[r]))
            axes[r, c].set_title(name, fontsize=9)
            axes[r, c].axis("off")
    plt.show()
else:
    print("RUN_EXTRAS is False: other explainers skipped")"""),
    code("""if RUN_EXTRAS:      # three classes from the Kermany file names: NORMAL / BACTERIA / VIRUS
    sub_cfg = replace(data_cfg, task="subtype", class_names=get_task("subtype").class_names)
    sub_prep = prepare_data(sub_cfg, progress=False)
    sub_model_cfg = replace(model_cfg, num_classes=3)
    sub_model = build_model(sub_model_cfg, sub_cfg.image_size, get_task(sub_cfg.task).activation)
    fit(sub_model, sub_prep, sub_cfg, train_cfg, "saved_weights/subtype", model_cfg=sub_model_cfg)
    print(format_metrics(evaluate_on_test(sub_model, sub_prep.test, sub_cfg)[0]))
else:
    print("RUN_EXTRAS is False: subtype task skipped")"""),
    code("""if RUN_EXTRAS and masks is not None:    # supervised localisation next to Grad-CAM's weak one (phantoms)
    from xai_cxr.explain.metrics.localization import mask_scores
    from xai_cxr.models.segment import SegmentConfig, classify_then_segment, train_unet
    unet, _ = train_unet(prep.train.images, lesion_masks(prep.train, data_cfg.image_size),
                         cfg=SegmentConfig(epochs=2 if QUICK else 15))
    print("U-Net (classify, then segment):", mask_scores(classify_then_segment(model, spec.preprocess, unet,
                                                                               prep.test.images)[1], masks))
else:
    print("segmentation skipped: " + ("RUN_EXTRAS is False" if not RUN_EXTRAS else "no lesion masks in this data"))"""),
    code("""if RUN_EXTRAS:      # the Predictor behind the report, the app (xai-cxr app) and the API (xai-cxr serve)
    from IPython.display import HTML
    from xai_cxr.serve.inference import Predictor
    from xai_cxr.explain.overlay import red_overlay
    from xai_cxr.serve.report import render_html, report_fields
    predictor = Predictor.from_weights_dir("saved_weights")
    gray = prep.test.images[idx[-1]]
    pred = predictor.predict(gray[None])[0]
    display(HTML(render_html(gray, {"gradcam": red_overlay(gray, predictor.explain(gray[None])[0])},
                             report_fields(pred, predictor, prep.test.manifest.path[idx[-1]]))))
else:
    print("RUN_EXTRAS is False: report skipped")"""),
    md("""## Where next

- The same run from a terminal: `xai-cxr train` (add `--validation holdout:0.1` for the honest estimate).
- Explain your own films: `xai-cxr explain IMAGE... --out DIR`; one-file reports: `xai-cxr report IMAGE`.
- Audit the explanations: `xai-cxr audit --data-dir chest_xray --images all --target predicted`.
- Serve the model: `xai-cxr app` (Streamlit) or `xai-cxr serve` (HTTP API)."""),
]
for i, cell in enumerate(cells):
    cell["id"] = f"cell-{i:02d}"                 # stable ids: regenerating gives a clean diff
nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"}})
nbf.write(nb, Path("eXplainable-ai.ipynb"))
