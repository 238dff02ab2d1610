"""The end-to-end run the CLI and the notebook share: data → model → two-stage training → test
evaluation → Grad-CAM sample grid. Each step is a function with arrays in and out; ``run`` wires them and
does the file I/O (weights, metrics.json, figures)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .config import CamConfig, DataConfig, ModelConfig, StageConfig, TrainConfig, to_json, write_json_atomic
from .data import (ImageSet, class_weights, find_data_root, limit_train, load_images, make_dataset, require_splits,
                   to_model_input, select_validation)
from .models import BACKBONES, HEAD_PREFIX, ModelCard, backbone_of, build_model, resolve_backbone, resolve_weights
from .tasks import get_task

PHANTOM_ROOT = Path("phantoms") / "chest_xray"


def has_split(root: str | Path, split: str = "train") -> bool:
    """``root`` (or the Kaggle zip's nested folder inside it) has a ``split`` folder."""
    root, _ = find_data_root(root)
    return root.is_dir() and any(p.is_dir() and p.name.lower() == split for p in root.iterdir())


def scratch_configs(root: str | Path, seed: int = 42, budget_minutes: float | None = 30.0):
    """The best recipe measured without pretrained weights (docs/results.md): ``cxr-res`` at 160 px, trained whole
    with AdamW (lr 1e-3) on a warm-up + cosine schedule over 20 epochs, augmentation with a random change of the
    width (``--augment aspect``: squashed films must not teach how wide a chest looks) and CLAHE, a patient-grouped
    holdout for validation; a wall-clock budget re-plans the cosine so that it ends at the last epoch that fits (a
    slow machine runs fewer, fully decayed epochs); the last epoch is kept (the holdout still carries the squash
    cue, so its best epoch is a mid-schedule one) and the decision threshold is 0.5.
    bfloat16 is left to ``--precision`` (it pays only on CPUs with AVX512-BF16/AMX)."""
    from .config import AUGMENT_PRESETS
    from .data.population import default_population
    data = DataConfig(root=str(root), image_size=160, validation="holdout:0.1", augment=AUGMENT_PRESETS["aspect"],
                      clahe=True, seed=seed, population_age=default_population(root, DataConfig.class_names))
    model = ModelConfig(backbone="cxr-res", weights="none")
    train = replace(TrainConfig(seed=seed, optimizer="adamw", schedule="cosine", budget_minutes=budget_minutes,
                                keep="last"),
                    stage1=StageConfig(epochs=20, learning_rate=1e-3))
    return data, model, train


def demo_configs(data_root: str | Path | None = None, seed: int = 42, allow_download: bool | None = None):
    """Configs of ``xai-cxr demo``. With real data in ``data_root``: 256 px, VGG19 (ImageNet weights fetched
    like Keras), short stages — or, when the ImageNet file is not on disk and downloads are off, the
    from-scratch recipe (``scratch_configs``, 30-minute budget). Otherwise phantoms at 128 px (not 256, to fit ≤ 10 minutes on 2 CPU cores) and
    VGG19 only when its ImageNet file is already on disk — else the compact CNN, said in the note: the demo
    never downloads, and VGG19 from random weights does not learn in demo time."""
    from .models import download_allowed, imagenet_available, keras_models_dir
    from .data.phantom import PhantomConfig, write_phantom_dataset
    if data_root is not None and has_split(data_root):
        root, found = find_data_root(data_root)
        if not imagenet_available("vgg19") and not download_allowed(allow_download):
            data, model, train = scratch_configs(root, seed)
            return data, model, replace(train, verbose=2), "\n".join(filter(None, [
                f"data: {root}", found, f"note: VGG19's ImageNet weights are not in {keras_models_dir()} and "
                "downloads are off: training cxr-res from scratch (the recipe of docs/results.md, 30-minute "
                "budget) instead"]))
        from .data.population import default_population
        data = DataConfig(root=str(root), image_size=256, seed=seed,
                          population_age=default_population(root, DataConfig.class_names))
        model = ModelConfig(backbone="vgg19")
        note = "\n".join(filter(None, [f"data: {root}", found]))
    else:
        pcfg = PhantomConfig(seed=seed)
        root = write_phantom_dataset(PHANTOM_ROOT, pcfg)
        data = DataConfig(root=str(root), image_size=pcfg.image_size, seed=seed)
        note = (f"data: {2 * pcfg.n_train} train / {2 * pcfg.n_test} test synthetic phantoms at "
                f"{pcfg.image_size}px in {root} (no chest_xray/train found; the real input size is 256px)")
        if imagenet_available("vgg19"):
            model = ModelConfig(backbone="vgg19")
        else:
            model = ModelConfig(backbone="cxr-small", weights="none")
            note += (f"\nnote: VGG19's ImageNet weights are not in {keras_models_dir()}; on phantoms the demo does "
                     "not download them and uses the compact BatchNorm CNN 'cxr-small' instead (same training, "
                     "evaluation and Grad-CAM code; VGG19 from random weights does not learn in demo time)")
    train = replace(TrainConfig(seed=seed).with_epochs(stage1=10, stage2=4), verbose=2)
    return data, model, train, note


@dataclass
class Prepared:
    """Decoded splits ready for training."""
    train: ImageSet
    val: ImageSet
    test: ImageSet
    validation_note: str
    class_weight: dict[int, float]

    @property
    def skipped(self):
        seen = {}
        for s in (self.train, self.val, self.test):
            seen.update(dict(s.skipped))
        return sorted(seen.items())


def prepare_data(cfg: DataConfig, progress: bool = True) -> Prepared:
    """Scan, limit, choose validation, decode once (corrupt files skipped), class weights."""
    task = get_task(cfg.task)
    df = task.scan(cfg.root, cfg.class_names, cfg.seed, cfg.labels_csv)
    require_splits(df, "train", "test", root=cfg.root)
    df = limit_train(df, cfg.limit, cfg.seed)
    train, val, test, note = select_validation(df, cfg.validation, cfg.seed)
    sets = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        if name == "val" and cfg.validation == "test":
            continue
        if cfg.image_store:                       # large sets: decoded once to disk, read back memory-mapped
            from .data.store import load_images_stored
            sets[name] = load_images_stored(part, cfg.image_size, cfg.image_store, cfg.workers, cfg.color,
                                            cfg.clahe, progress=progress, geometry=cfg.geometry)
        else:
            sets[name] = load_images(part, cfg.image_size, cfg.workers, progress, cfg.color, cfg.clahe, cfg.geometry)
    if cfg.validation == "test":
        sets["val"] = sets["test"]
    return Prepared(sets["train"], sets["val"], sets["test"], note, train_class_weights(sets["train"].labels, cfg))


def train_class_weights(labels: np.ndarray, cfg: DataConfig) -> dict[int, float]:
    """Balanced class weights (n / (k · n_c)); {} for a multi-label task (per-label weights in ``fit``)."""
    return {} if get_task(cfg.task).multilabel else class_weights(labels, len(cfg.class_names))



def datasets(prep: Prepared, cfg: DataConfig, preprocess):
    train = make_dataset(prep.train.images, prep.train.labels, preprocess, len(cfg.class_names),
                         cfg.batch_size, shuffle=True, seed=cfg.seed, augment=cfg.augment)
    val = make_dataset(prep.val.images, prep.val.labels, preprocess, len(cfg.class_names), cfg.batch_size)
    return train, val


def pick_samples(labels: np.ndarray, n: int, seed: int = 42) -> np.ndarray:
    """Indices of up to ``n`` images, as balanced over classes as the data allow (seeded)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    picked = []
    while len(picked) < n and any(per.values()):
        for c in classes:
            if per[c] and len(picked) < n:
                picked.append(per[c].pop(0))
    return np.array(sorted(picked), int)


def explain_images(model, grays: np.ndarray, preprocess, cam_cfg: CamConfig, target_layer: str):
    """CAM maps (B, H, W) in [0, 1], predicted classes and confidences for uint8 gray images."""
    from .explain.registry import make_explainer
    x = to_model_input(grays, preprocess).numpy()
    proba = model.predict(x, batch_size=cam_cfg.batch_size, verbose=0)
    cam = make_explainer(cam_cfg.method, model, backbone_of(model), cam_cfg.target_layer or target_layer,
                         cam_cfg.batch_size)
    pred = proba.argmax(1)
    return cam(x, targets=pred), pred, proba.max(1)


def resolve_model(model_cfg: ModelConfig, data_cfg: DataConfig | None = None) -> ModelConfig:
    """The concrete model config: backbone "auto" → vgg19; with ``data_cfg``, the output sized to its classes
    (sigmoid for the multi-label task). Pretrained weights are fetched *now* (downloaded like Keras when
    missing), so a missing file stops the run in seconds, before any image is decoded."""
    if data_cfg is not None:
        model_cfg = replace(model_cfg, num_classes=len(data_cfg.class_names),
                            multilabel=get_task(data_cfg.task).multilabel)
    model_cfg = replace(model_cfg, backbone=resolve_backbone(model_cfg.backbone))
    resolve_weights(model_cfg.backbone, model_cfg.weights, model_cfg.allow_download)
    return model_cfg


def model_config_of(model) -> ModelConfig:
    """The ModelConfig that rebuilds ``model`` (a ``build_model`` classifier): backbone, classes, head sizes."""
    def layer(name):
        return next((l for l in model.layers if l.name == HEAD_PREFIX + name), None)
    dense, d1, d2 = layer("dense"), layer("dropout1"), layer("dropout2")
    default = ModelConfig()
    reg = getattr(dense, "kernel_regularizer", None)
    return ModelConfig(backbone=backbone_of(model), weights="none", num_classes=int(model.output_shape[-1]),
                       dense_units=int(dense.units) if dense is not None else default.dense_units,
                       dropout=(float(d1.rate), float(d2.rate)) if d1 is not None and d2 is not None else default.dropout,
                       l2=float(reg.l2) if reg is not None else default.l2,
                       multilabel=getattr(model.layers[-1].activation, "__name__", "") == "sigmoid")


def save_description(weights_dir: str | Path, data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig,
                     cam_cfg: CamConfig = CamConfig()) -> ModelCard:
    """Write what rebuilds and uses the weights in ``weights_dir``: ``model_config.json`` (the card read by
    evaluate/explain/app/API) and ``run_config.json`` (every config of the run)."""
    card = ModelCard(model_cfg.backbone, data_cfg.image_size, tuple(data_cfg.class_names), task=data_cfg.task,
                     color=data_cfg.color, seed=data_cfg.seed, clahe=data_cfg.clahe, geometry=data_cfg.geometry,
                     population_age=data_cfg.population_age, target_layer=cam_cfg.target_layer or BACKBONES[model_cfg.backbone].target_layer,
                     dense_units=model_cfg.dense_units, dropout=tuple(model_cfg.dropout), l2=model_cfg.l2)
    card.save(weights_dir)
    write_json_atomic(json.loads(to_json(data_cfg, model_cfg, train_cfg, cam_cfg)), Path(weights_dir) / "run_config.json")
    return card


def fit(model, prep: Prepared, data_cfg: DataConfig, train_cfg: TrainConfig, weights_dir: str | Path,
        resume: bool = False, strategy=None, model_cfg: ModelConfig | None = None, cam_cfg: CamConfig = CamConfig()):
    """Two-stage training on the prepared splits (class weights from the train counts). Writes the model's
    description (``save_description``) before the first checkpoint, so the weights in ``weights_dir`` are
    never paired with another run's card."""
    from .models.train import train_two_stage
    from .models.cache import StageFeatureCache
    spec = BACKBONES[backbone_of(model)]
    Path(weights_dir).mkdir(parents=True, exist_ok=True)
    save_description(weights_dir, data_cfg, model_cfg or model_config_of(model), train_cfg, cam_cfg)
    train_ds, val_ds = datasets(prep, data_cfg, spec.preprocess)
    stage_data = None
    if train_cfg.feature_cache and data_cfg.augment is not None:
        print("note: feature cache bypassed: augmentation changes every image every epoch, so frozen "
              "features cannot be computed once")
    elif train_cfg.feature_cache:
        stage_data = StageFeatureCache(model, prep.train.images, prep.train.labels, prep.val.images,
                                       prep.val.labels, spec.preprocess, len(data_cfg.class_names),
                                       data_cfg.batch_size, data_cfg.seed,
                                       spec.finetune_from if train_cfg.stage2.epochs > 0 else None,
                                       train_cfg.feature_cache_dir)
    labels = prep.train.labels
    pos_weight = None
    multilabel = get_task(data_cfg.task).multilabel
    if multilabel:                                # per-label positive weights instead of class weights
        pos = labels.sum(0)
        pos_weight = np.where(pos > 0, (len(labels) - pos) / np.maximum(pos, 1), 1.0)
    return train_two_stage(model, train_ds, val_ds, train_cfg, weights_dir,
                           prep.class_weight if train_cfg.class_weighting and prep.class_weight else None,
                           spec.finetune_from, resume, stage_data, strategy, pos_weight, multilabel)


def evaluate_on_test(model, test: ImageSet, data_cfg: DataConfig, skipped=()):
    """Metrics dict and class probabilities of ``model`` on the decoded test split."""
    from .evaluate import predict_proba
    spec = BACKBONES[backbone_of(model)]
    proba = predict_proba(model, make_dataset(test.images, None, spec.preprocess, batch_size=data_cfg.batch_size))
    metrics = get_task(data_cfg.task).metrics(test.labels, proba, data_cfg.class_names, seed=data_cfg.seed)
    metrics["skipped_images"] = [{"path": p, "reason": r} for p, r in skipped]
    return metrics, proba


def calibrate(model, prep: Prepared, data_cfg: DataConfig, test_proba, weights_dir: Path, results_dir: Path) -> dict:
    """Fit the temperature on the validation split, save it beside the weights (the app, API and report
    use it), draw the reliability diagram and return the calibration summary for metrics.json."""
    from .models.calibration import apply_temperature, calibration_report, plot_reliability, save_temperature
    from .evaluate import predict_proba
    spec = BACKBONES[backbone_of(model)]
    multilabel = get_task(data_cfg.task).multilabel
    val_proba = test_proba if prep.val is prep.test else \
        predict_proba(model, make_dataset(prep.val.images, None, spec.preprocess, batch_size=data_cfg.batch_size))
    rep = calibration_report(prep.val.labels, val_proba, prep.test.labels, test_proba, multilabel)
    val_calibrated = apply_temperature(val_proba, rep["temperature"], multilabel)
    rep["fitted_on"] = f"validation ({data_cfg.validation})"
    if data_cfg.validation == "test":
        rep["note"] = ("the validation data is the test split here, so the test ECE after scaling is optimistic; "
                       "--validation holdout:0.1 fits the temperature on held-out training images")
    save_temperature(weights_dir, rep["temperature"], fitted_on=rep["fitted_on"])
    if not multilabel:
        save_figure(plot_reliability(prep.test.labels, test_proba,
                                     apply_temperature(test_proba, rep["temperature"])),
                    results_dir / "reliability.png")
    return rep, val_calibrated


def apply_operating_point(rule: str, metrics: dict, prep: Prepared, data_cfg: DataConfig, val_calibrated,
                          test_proba, temperature: float, weights_dir: Path) -> dict:
    """Choose the decision threshold by ``rule`` on the validation split's calibrated probabilities (the ones the
    app, API and report show), store it in the card, and return the test metrics at that threshold, with the
    metrics at 0.5 kept under "at_threshold_0.5"."""
    from .evaluate import operating_threshold
    from .models.calibration import apply_temperature
    if get_task(data_cfg.task).multilabel or len(data_cfg.class_names) != 2:
        print(f"note: operating point {rule} not applied: it is for two-class tasks (this one has "
              f"{len(data_cfg.class_names)} {'labels' if get_task(data_cfg.task).multilabel else 'classes'})")
        return metrics
    t = operating_threshold(prep.val.labels, val_calibrated[:, 1], rule)
    card = ModelCard.load(weights_dir)
    replace(card, threshold=t).save(weights_dir)
    out = get_task(data_cfg.task).metrics(prep.test.labels, apply_temperature(test_proba, temperature),
                                          data_cfg.class_names, threshold=t, seed=data_cfg.seed)
    keep = ("accuracy", "recall", "specificity", "precision", "f1", "confusion_matrix")
    out = {**metrics, **out, "at_threshold_0.5": {k: metrics[k] for k in keep if k in metrics}}
    out["operating_point"] = {"rule": rule, "threshold": t, "on": "calibrated probability of "
                              f"{data_cfg.class_names[1]}", "chosen_on": f"validation ({data_cfg.validation})"}
    if data_cfg.validation == "test":
        out["operating_point"]["note"] = "chosen on the test split itself: the test metrics at it are optimistic"
    print(f"operating point {rule}: threshold {t:.3f} on the calibrated probability (chosen on validation)")
    return out


def fit_out_of_distribution(model, prep: Prepared, weights_dir: Path, seed: int = 42) -> dict:
    """Fit the out-of-distribution detector (``models/ood.py``: Mahalanobis at several depths + the input-level
    autoencoder) on the training films, standardise it and set its threshold on the holdout (the training films
    when validation is the test split), save it beside the weights (the app, API, report, ``explain`` and
    ``evaluate`` read it) and return its summary with the share of test films it flags."""
    from .models.ood import fit_for_model
    preprocess = BACKBONES[backbone_of(model)].preprocess
    det = fit_for_model(model, preprocess, prep.train.images, prep.train.labels,
                        None if prep.val is prep.test else prep.val.images, seed=seed)
    det.save(weights_dir)
    verdict = det.assess(det.image_values(model, prep.test.images, preprocess))
    flagged = verdict.flagged
    return {"score": "sum of z-scores of Mahalanobis distances at several depths + the input-level check",
            "branches": list(det.combine), "threshold": det.threshold, "quantile": det.quantile,
            "calibrated_on": det.calibrated_on,
            "test_flagged_share": float(flagged.mean()) if len(flagged) else float("nan"),
            "test_flagged": int(flagged.sum())}


def refit_out_of_distribution(weights_dir: str | Path, data_root: str | Path | None = None,
                              progress: bool = False) -> tuple[dict, Prepared]:
    """Fit (again) the detector of a trained model folder on the films it was trained on: its saved configs
    (``run_config.json``) rebuild the same training films and the same seeded holdout (``data_root`` when the data
    moved). For models trained before the detector changed. Returns (summary, the decoded splits)."""
    from .config import from_json
    from .models import load_trained_model
    weights_dir = Path(weights_dir)
    data_cfg = from_json((weights_dir / "run_config.json").read_text())["DataConfig"]
    if data_root is not None:
        data_cfg = replace(data_cfg, root=str(data_root))
    model, _ = load_trained_model(weights_dir)
    prep = prepare_data(data_cfg, progress=progress)
    return fit_out_of_distribution(model, prep, weights_dir, data_cfg.seed), prep


def sample_figure(model, test: ImageSet, data_cfg: DataConfig, cam_cfg: CamConfig, target_layer: str):
    """The sample_results.png grid: balanced test images with true/predicted label, confidence, overlay."""
    from .explain.overlay import gallery, sample_grid
    spec = BACKBONES[backbone_of(model)]
    labels, task = test.labels, get_task(data_cfg.task)
    idx = pick_samples(task.stratify(labels), cam_cfg.n_samples, data_cfg.seed)
    heats, pred, conf = explain_images(model, test.images[idx], spec.preprocess, cam_cfg, target_layer)
    if task.multilabel:                            # explain each image's most probable finding
        names = data_cfg.class_names
        titles = [f"true {'|'.join(n for n, v in zip(names, labels[i]) if v) or 'No Finding'}\n"
                  f"map: {names[p]} {c:.0%}" for i, p, c in zip(idx, pred, conf)]
        return gallery(test.images[idx], heats, titles, fraction=cam_cfg.top_fraction, columns=4,
                       suptitle="Grad-CAM of the most probable finding")
    return sample_grid(test.images[idx], heats, test.labels[idx], pred, conf, data_cfg.class_names,
                       cam_cfg.top_fraction)


def lesion_pointing_game(model, test: ImageSet, data_cfg: DataConfig, cam_cfg: CamConfig, target_layer: str):
    """Grad-CAM pointing game (15 px tolerance at 224 px, scaled) on positive test images that have lesion
    masks (phantoms); None if none do."""
    from .explain.metrics.localization import pointing_game
    masks = lesion_masks(test, data_cfg.image_size)
    if masks is None:
        return None
    pos = np.flatnonzero((test.labels > 0) & masks.reshape(len(masks), -1).any(1))
    if not len(pos):
        return None
    spec = BACKBONES[backbone_of(model)]
    heats, _, _ = explain_images(model, test.images[pos], spec.preprocess, cam_cfg, target_layer)
    return {"hit_rate": float(pointing_game(heats, masks[pos]).mean()), "n_images": int(len(pos))}


def lesion_masks(images: ImageSet, size: int):
    """Lesion masks aligned with ``images`` when the data set has them (phantoms), else None."""
    if "mask_path" not in images.manifest or images.manifest["mask_path"].isna().all():
        return None
    import cv2
    out = np.zeros((len(images.manifest), size, size), bool)
    for i, p in enumerate(images.manifest["mask_path"]):
        if isinstance(p, str):
            out[i] = cv2.resize(cv2.imread(p, cv2.IMREAD_GRAYSCALE), (size, size),
                                interpolation=cv2.INTER_NEAREST) > 127
    return out


def save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def run(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, cam_cfg: CamConfig = CamConfig(),
        weights_dir: str | Path = "saved_weights", results_dir: str | Path = "sample_results",
        resume: bool = False, strategy=None) -> dict:
    """Train, evaluate on the test split and draw the Grad-CAM sample grid; writes every artefact and
    returns {"model", "card", "metrics", "history", "prepared"}. ``strategy``: a ``tf.distribute`` strategy;
    None = ``MirroredStrategy`` over all GPUs when several are visible, else the default."""
    from .evaluate import plot_confusion, plot_roc
    from .models.train import distribution_strategy, plot_history, seed_everything
    t0 = time.time()
    weights_dir, results_dir = Path(weights_dir), Path(results_dir)
    model_cfg = resolve_model(model_cfg, data_cfg)                  # weights fetched before any image is decoded
    spec = BACKBONES[model_cfg.backbone]
    target_layer = cam_cfg.target_layer or spec.target_layer

    prep = prepare_data(data_cfg)
    print(f"train {len(prep.train.images)}  val {len(prep.val.images)}  test {len(prep.test.images)} images "
          f"at {data_cfg.image_size}px; class weights {prep.class_weight}")
    print("note:", prep.validation_note)
    seed_everything(train_cfg.seed, train_cfg.deterministic)       # initial weights depend on the random seed too
    strategy = strategy or distribution_strategy()
    if strategy.num_replicas_in_sync > 1:
        print(f"training on {strategy.num_replicas_in_sync} devices ({type(strategy).__name__})")
    with strategy.scope():
        model = build_model(model_cfg, data_cfg.image_size)
    print(f"model: {model_cfg.backbone} (weights: {model_cfg.weights}), {model.count_params():,} parameters, "
          f"Grad-CAM layer {target_layer}")
    t_fit = time.time()
    history = fit(model, prep, data_cfg, train_cfg, weights_dir, resume, strategy, model_cfg, cam_cfg)
    training_minutes = round((time.time() - t_fit) / 60, 2)
    card = ModelCard.load(weights_dir)
    save_figure(plot_history(history), weights_dir / "training_curves.png")

    metrics, proba = evaluate_on_test(model, prep.test, data_cfg, prep.skipped)
    metrics.update(backbone=model_cfg.backbone, weights=model_cfg.weights, image_size=data_cfg.image_size,
                   validation=data_cfg.validation, validation_note=prep.validation_note,
                   training_minutes=training_minutes, budget_minutes=train_cfg.budget_minutes,
                   epochs_run={stage: len(h.get("loss", [])) for stage, h in history.items()})
    metrics["calibration"], val_calibrated = calibrate(model, prep, data_cfg, proba, weights_dir, results_dir)
    if train_cfg.operating_point:
        metrics = apply_operating_point(train_cfg.operating_point, metrics, prep, data_cfg, val_calibrated, proba,
                                        metrics["calibration"]["temperature"], weights_dir)
        card = ModelCard.load(weights_dir)
    metrics["out_of_distribution"] = fit_out_of_distribution(model, prep, weights_dir, data_cfg.seed)
    save_figure(sample_figure(model, prep.test, data_cfg, cam_cfg, target_layer), results_dir / "sample_results.png")
    pg = None if get_task(data_cfg.task).multilabel else lesion_pointing_game(model, prep.test, data_cfg, cam_cfg,
                                                                              target_layer)
    if pg:
        metrics["gradcam_pointing_game"] = pg
    if "confusion_matrix" in metrics:
        save_figure(plot_confusion(metrics, data_cfg.class_names), results_dir / "confusion_matrix.png")
    save_figure(plot_roc(prep.test.labels, proba, data_cfg.class_names), results_dir / "roc_curve.png")
    metrics["wall_time_s"] = round(time.time() - t0, 1)
    write_json_atomic(metrics, results_dir / "metrics.json")

    print_summary(metrics, prep.skipped, weights_dir, results_dir)
    return {"model": model, "card": card, "metrics": metrics, "history": history, "prepared": prep}


def print_summary(metrics: dict, skipped, weights_dir: Path, results_dir: Path) -> None:
    """The end-of-run report: test metrics, the phantom pointing game, skipped files, where everything went."""
    from .evaluate import format_metrics
    print("\ntest metrics:\n" + format_metrics(metrics))
    pg = metrics.get("gradcam_pointing_game")
    if pg:
        print(f"Grad-CAM pointing game on phantom lesions: {pg['hit_rate']:.1%} of {pg['n_images']} images")
    if skipped:
        print(f"\nskipped {len(skipped)} unreadable image(s):")
        for p, r in skipped:
            print(f"  {p}: {r}")
    print(f"\nweights      {weights_dir / 'model.weights.h5'}\nhistory      {weights_dir / 'history.json'}"
          f"\ncurves       {weights_dir / 'training_curves.png'}\nmetrics      {results_dir / 'metrics.json'}"
          f"\nfigures      {results_dir / 'confusion_matrix.png'}, {results_dir / 'roc_curve.png'}, "
          f"{results_dir / 'reliability.png'}"
          f"\nGrad-CAM     {results_dir / 'sample_results.png'}\ntotal time   {metrics['wall_time_s']:.0f} s")
