"""``run``: data → model → two-stage training → test evaluation, calibration, operating point, detector →
figures; every artefact written, a summary printed."""
from __future__ import annotations

import time
from pathlib import Path

from ..config import CamConfig, DataConfig, ModelConfig, TrainConfig, write_json_atomic
from ..models import BACKBONES, ModelCard, ModelFolder, build_model, files
from ..tasks import get_task
from .after_training import apply_operating_point, calibrate, evaluate_on_test, fit_error_level, fit_out_of_distribution
from .figures import lesion_pointing_game, sample_figure, save_figure
from .fit import fit, resolve_model
from .prepare import prepare_data


def run(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, cam_cfg: CamConfig = CamConfig(),
        weights_dir: str | Path = "saved_weights", results_dir: str | Path = "sample_results",
        resume: bool = False, strategy=None) -> dict:
    """Train, evaluate on the test split and draw the Grad-CAM sample grid; writes every artefact and
    returns {"model", "card", "metrics", "history", "prepared"}. ``strategy``: a ``tf.distribute`` strategy;
    None = ``MirroredStrategy`` over all GPUs when several are visible, else the default."""
    from ..evaluate import plot_confusion, plot_roc
    from ..models.train import distribution_strategy, plot_history, seed_everything
    from ..runtime import cpu_description, full_precision
    t0 = time.time()
    weights_dir, results_dir = Path(weights_dir), Path(results_dir)
    model_cfg = resolve_model(model_cfg, data_cfg)                  # weights fetched before any image is decoded
    target_layer = cam_cfg.target_layer or BACKBONES[model_cfg.backbone].target_layer

    prep = prepare_data(data_cfg)
    print(f"train {len(prep.train.images)}  val {len(prep.val.images)}  test {len(prep.test.images)} images "
          f"at {data_cfg.image_size}px; class weights {prep.class_weight}")
    print("note:", prep.validation_note)
    seed_everything(train_cfg.seed, train_cfg.deterministic)       # initial weights depend on the random seed too
    strategy = strategy or distribution_strategy()
    if strategy.num_replicas_in_sync > 1:
        print(f"training on {strategy.num_replicas_in_sync} devices ({type(strategy).__name__})")
    with strategy.scope():
        model = build_model(model_cfg, data_cfg.image_size, get_task(data_cfg.task).activation)
    print(f"model: {model_cfg.backbone} (weights: {model_cfg.weights}), {model.count_params():,} parameters, "
          f"Grad-CAM layer {target_layer}")
    t_fit = time.time()
    history = fit(model, prep, data_cfg, train_cfg, weights_dir, resume, strategy, model_cfg, cam_cfg)
    training_minutes = round((time.time() - t_fit) / 60, 2)
    card = ModelCard.load(weights_dir)
    save_figure(plot_history(history), weights_dir / "training_curves.png")

    # every reader of the folder builds the model in float32 (ModelFolder.load): so is everything fitted below on its
    # outputs — the temperature, the detector and its holdout reference, the error level — whatever trained it
    if model.dtype_policy.name != "float32":
        model, card = ModelFolder(weights_dir).load()
    with full_precision():
        metrics, proba = evaluate_on_test(model, prep.test, data_cfg, prep.skipped)
        metrics.update(backbone=model_cfg.backbone, weights=model_cfg.weights, image_size=data_cfg.image_size,
                       validation=data_cfg.validation, validation_note=prep.validation_note,
                       training_minutes=training_minutes, budget_minutes=train_cfg.budget_minutes,
                       epochs_run={stage: len(h.get("loss", [])) for stage, h in history.items()},
                       epochs_planned={"stage1": train_cfg.stage1.epochs, "stage2": train_cfg.stage2.epochs},
                       n_train_images=len(prep.train.images))
        metrics["calibration"], val_calibrated = calibrate(model, prep, data_cfg, proba, weights_dir, results_dir)
        if train_cfg.operating_point:
            metrics = apply_operating_point(train_cfg.operating_point, metrics, prep, data_cfg, val_calibrated, proba,
                                            metrics["calibration"]["temperature"], weights_dir)
            card = ModelCard.load(weights_dir)
        metrics["out_of_distribution"] = fit_out_of_distribution(model, prep, weights_dir, data_cfg.seed)
        metrics["error_level"] = fit_error_level(model, prep, data_cfg, weights_dir, train_cfg.error_level)
        save_figure(sample_figure(model, prep.test, data_cfg, cam_cfg, target_layer),
                    results_dir / "sample_results.png")
        pg = lesion_pointing_game(model, prep.test, data_cfg, cam_cfg, target_layer)
        if pg:
            metrics["gradcam_pointing_game"] = pg
        if "confusion_matrix" in metrics:
            save_figure(plot_confusion(metrics, data_cfg.class_names), results_dir / "confusion_matrix.png")
        save_figure(plot_roc(prep.test.labels, proba, data_cfg.class_names), results_dir / "roc_curve.png")
        metrics["wall_time_s"] = round(time.time() - t0, 1)
        metrics["machine"] = cpu_description()
        write_json_atomic(metrics, results_dir / "metrics.json")

    print_summary(metrics, prep.skipped, weights_dir, results_dir)
    return {"model": model, "card": card, "metrics": metrics, "history": history, "prepared": prep}


def training_line(metrics: dict) -> str:
    """What training did, in one line: epochs per stage (and why fewer than planned), films, minutes."""
    run, planned = metrics["epochs_run"], metrics.get("epochs_planned", {})
    parts = [f"{stage} {n}" + (f" of {planned[stage]}" if planned.get(stage, n) > n else "")
             for stage, n in run.items()]
    line = (f"training: {', '.join(parts)} epochs on {metrics.get('n_train_images', '?')} films in "
            f"{metrics['training_minutes']:.1f} min")
    if any(planned.get(stage, n) > n for stage, n in run.items()):
        line += " — fewer epochs than planned: early stopping"
        if metrics.get("budget_minutes"):
            line += (f" or the {metrics['budget_minutes']:g}-minute budget on this machine (the log above says "
                     "which; a budget's cut makes these metrics differ from a faster machine's)")
    return line


def print_summary(metrics: dict, skipped, weights_dir: Path, results_dir: Path) -> None:
    """The end-of-run report: test metrics, the phantom pointing game, skipped files, where everything went."""
    from ..evaluate import format_metrics
    from ..runtime import cpu_line
    print("\ntest metrics:\n" + format_metrics(metrics))
    if "epochs_run" in metrics:
        print(training_line(metrics))
    pg = metrics.get("gradcam_pointing_game")
    if pg:
        print(f"Grad-CAM pointing game on phantom lesions: {pg['hit_rate']:.1%} of {pg['n_images']} images")
    if skipped:
        print(f"\nskipped {len(skipped)} unreadable image(s):")
        for p, r in skipped:
            print(f"  {p}: {r}")
    print(f"\nweights      {weights_dir / files.WEIGHTS}\nhistory      {weights_dir / files.HISTORY}"
          f"\ncurves       {weights_dir / 'training_curves.png'}\nmetrics      {results_dir / 'metrics.json'}"
          f"\nfigures      {results_dir / 'confusion_matrix.png'}, {results_dir / 'roc_curve.png'}, "
          f"{results_dir / 'reliability.png'}"
          f"\nGrad-CAM     {results_dir / 'sample_results.png'}\ntotal time   {metrics['wall_time_s']:.0f} s"
          + (f" on {cpu_line(metrics['machine'])}" if "machine" in metrics else ""))
