"""What follows training: test metrics, the temperature fitted on validation, an operating point chosen on
validation, and the out-of-distribution detector — each saved beside the weights for the app, API and report."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config import DataConfig
from ..data import ImageSet
from ..models import BACKBONES, ModelCard, ModelFolder, backbone_of
from ..models.predict import predict_images
from ..tasks import get_task
from .figures import save_figure
from .prepare import Prepared, prepare_data


def evaluate_on_test(model, test: ImageSet, data_cfg: DataConfig, skipped=()):
    """Metrics dict and class probabilities of ``model`` on the decoded test split."""
    proba = predict_images(model, test.images, batch_size=data_cfg.batch_size)
    metrics = get_task(data_cfg.task).metrics(test.labels, proba, data_cfg.class_names, seed=data_cfg.seed)
    metrics["skipped_images"] = [{"path": p, "reason": r} for p, r in skipped]
    return metrics, proba


def calibrate(model, prep: Prepared, data_cfg: DataConfig, test_proba, weights_dir: Path, results_dir: Path) -> dict:
    """Fit the temperature on the validation split, save it beside the weights (the app, API and report
    use it), draw the reliability diagram and return the calibration summary for metrics.json."""
    from ..models.calibration import calibration_report, plot_reliability, save_temperature
    task = get_task(data_cfg.task)
    val_proba = test_proba if prep.val is prep.test else \
        predict_images(model, prep.val.images, batch_size=data_cfg.batch_size)
    rep = calibration_report(prep.val.labels, val_proba, prep.test.labels, test_proba, task.activation)
    val_calibrated = task.calibrate(val_proba, rep["temperature"])
    rep["fitted_on"] = f"validation ({data_cfg.validation})"
    if data_cfg.validation == "test":
        rep["note"] = ("the validation data is the test split here, so the test ECE after scaling is optimistic; "
                       "--validation holdout:0.1 fits the temperature on held-out training images")
    save_temperature(weights_dir, rep["temperature"], fitted_on=rep["fitted_on"])
    if task.per_image_figures:
        save_figure(plot_reliability(prep.test.labels, test_proba, task.calibrate(test_proba, rep["temperature"])),
                    results_dir / "reliability.png")
    return rep, val_calibrated


def apply_operating_point(rule: str, metrics: dict, prep: Prepared, data_cfg: DataConfig, val_calibrated,
                          test_proba, temperature: float, weights_dir: Path) -> dict:
    """Choose the decision threshold by ``rule`` on the validation split's calibrated probabilities (the ones the
    app, API and report show), store it in the card, and return the test metrics at that threshold, with the
    metrics at 0.5 kept under "at_threshold_0.5"."""
    from ..evaluate import operating_threshold
    task = get_task(data_cfg.task)
    if not task.operating_point_applies(data_cfg.class_names):
        print(f"note: operating point {rule} not applied: it is for two-class tasks (this one has "
              f"{len(data_cfg.class_names)} {task.unit}s)")
        return metrics
    t = operating_threshold(prep.val.labels, val_calibrated[:, 1], rule)
    card = ModelCard.load(weights_dir)
    replace(card, threshold=t).save(weights_dir)
    out = task.metrics(prep.test.labels, task.calibrate(test_proba, temperature), data_cfg.class_names,
                       threshold=t, seed=data_cfg.seed)
    keep = ("accuracy", "recall", "specificity", "precision", "f1", "confusion_matrix")
    out = {**metrics, **out, "at_threshold_0.5": {k: metrics[k] for k in keep if k in metrics}}
    out["operating_point"] = {"rule": rule, "threshold": t, "on": "calibrated probability of "
                              f"{data_cfg.class_names[1]}", "chosen_on": f"validation ({data_cfg.validation})"}
    if data_cfg.validation == "test":
        out["operating_point"]["note"] = "chosen on the test split itself: the test metrics at it are optimistic"
    print(f"operating point {rule}: threshold {t:.3f} on the calibrated probability (chosen on validation)")
    return out


def fit_error_level(model, prep: Prepared, data_cfg: DataConfig, weights_dir: Path,
                    error_level: float = 0.05) -> dict | None:
    """Fit the referral rule's confidence threshold (``models/selective.py``) on the validation films' calibrated
    probabilities at the card's decision threshold, leaving out the films the saved detector already refers, save
    it beside the weights and return its summary (None for tasks without one answer per film)."""
    from ..models.calibration import load_temperature
    from ..models.selective import fit_selective, predicted_confidence
    task = get_task(data_cfg.task)
    if not task.per_image_figures:
        return None
    card = ModelCard.load(weights_dir)
    proba = task.calibrate(predict_images(model, prep.val.images, batch_size=data_cfg.batch_size),
                           load_temperature(weights_dir))
    predicted = task.explained(proba, task.decide(proba, card.threshold))
    eligible, detector = None, ModelFolder(weights_dir).detector()
    if detector is not None:
        if detector.calibrated_on == "holdout" and detector.reference_z is not None \
                and len(detector.reference_z) == len(proba):
            eligible = detector.combined(detector.reference_z) <= detector.threshold      # the same films, in order
        else:
            preprocess = BACKBONES[backbone_of(model)].preprocess
            eligible = ~detector.assess(detector.image_values(model, prep.val.images, preprocess)).flagged
    fitted_on = "validation = the test split (the bound there is optimistic)" if prep.val is prep.test else \
        f"validation ({data_cfg.validation})"
    rule = fit_selective(predicted_confidence(proba, predicted), predicted == prep.val.labels, error_level,
                         eligible=eligible, fitted_on=fitted_on)
    rule.save(weights_dir)
    print(f"error level: {rule.in_words()}")
    return {**rule.__dict__, "min_confidence": rule.min_confidence if rule.min_confidence != float("inf") else None}


def fit_out_of_distribution(model, prep: Prepared, weights_dir: Path, seed: int = 42, progress: bool = False,
                            input_checks: tuple[str, ...] | None = None) -> dict:
    """Fit the out-of-distribution detector (``models/ood.py``: Mahalanobis at several depths + the input-level
    checks, default the autoencoder) on the training films, standardise it and set its threshold on the holdout (the
    training films when validation is the test split), save it beside the weights (the app, API, report,
    ``explain`` and ``evaluate`` read it) and return its summary with the share of test films it flags."""
    from ..models.ood import DEFAULT_INPUT_CHECKS, fit_for_model
    input_checks = input_checks or DEFAULT_INPUT_CHECKS
    preprocess = BACKBONES[backbone_of(model)].preprocess
    det = fit_for_model(model, preprocess, prep.train.images, prep.train.labels,
                        None if prep.val is prep.test else prep.val.images,
                        None if prep.val is prep.test else prep.val.labels, seed=seed, progress=progress,
                        input_checks=input_checks)
    det.save(weights_dir)
    flagged = det.assess(det.image_values(model, prep.test.images, preprocess,
                                          progress="detector: test films" if progress else None)).flagged
    return {"score": "sum of z-scores of Mahalanobis distances at several depths + the input-level checks",
            "input_checks": list(input_checks),
            "branches": list(det.combine), "threshold": det.threshold, "quantile": det.quantile,
            "calibrated_on": det.calibrated_on,
            "test_flagged_share": float(flagged.mean()) if len(flagged) else float("nan"),
            "test_flagged": int(flagged.sum())}


def refit_out_of_distribution(weights_dir: str | Path, data_root: str | Path | None = None,
                              progress: bool = False, error_level: float | None = None,
                              input_checks: tuple[str, ...] | None = None) -> tuple[dict, Prepared]:
    """Fit (again) the detector and the error-level rule of a trained model folder on the films it was trained on:
    its saved configs (``run_config.json``) rebuild the same training films and the same seeded holdout
    (``data_root`` when the data moved). For models trained before either changed. ``error_level``: default the
    folder's rule's, else the run's; ``input_checks``: keys of ``models.ood.INPUT_CHECKS`` (default the reference
    design's). Returns (summary, the decoded splits)."""
    folder = ModelFolder(weights_dir)
    data_cfg = folder.run_configs()["DataConfig"]
    if data_root is not None:
        data_cfg = replace(data_cfg, root=str(data_root))
    model, _ = folder.load()
    prep = prepare_data(data_cfg, progress=progress)
    summary = fit_out_of_distribution(model, prep, folder.path, data_cfg.seed, progress, input_checks)
    level = error_level if error_level is not None else \
        getattr(folder.selective(), "error_level", folder.run_configs()["TrainConfig"].error_level)
    summary["error_level"] = fit_error_level(model, prep, data_cfg, folder.path, level)
    return summary, prep
