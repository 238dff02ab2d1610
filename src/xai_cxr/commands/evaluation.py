"""Commands on a trained model and data: ``evaluate``, ``explain``, ``audit`` (and the planted-shortcut audit),
``segment``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config import write_csv_atomic
from ..tasks import get_task
from .configs import base_configs, cam_config_from_args, configs_from_args
from .serving import _dicom_references, _write_dicom_overlay


def decision_row(pred) -> dict:
    """What ``decisions.csv`` says of one film (``explain`` and ``evaluate``): the decision and its reasons first,
    then the model's output and the scores behind the decision."""
    return {"decision": pred.decision, "reasons": ";".join(pred.reasons), "label": pred.label,
            "confidence": pred.confidence,
            **{f"p_{name}": v for name, v in pred.probabilities.items()},
            "uncertainty": pred.uncertainty, "ood_score": pred.ood_score, "ood_threshold": pred.ood_threshold}


def cmd_evaluate(args):
    import numpy as np
    import pandas as pd

    from ..config import write_json_atomic
    from ..data import require_splits
    from ..data.stream import stream_predict
    from ..evaluate import format_metrics
    from ..models import BACKBONES, referral
    from ..models.calibration import accuracy_at_coverage
    from ..serve.inference import Predictor
    predictor = Predictor.from_weights_dir(args.weights_dir)
    model, card = predictor.model, predictor.card
    task = get_task(card.task)
    df = task.scan(args.data_dir, card.class_names, card.seed, args.labels_csv)
    require_splits(df, "test", root=args.data_dir)
    decide = (lambda grays: predictor.predict(grays, mc=True)) if task.per_image_figures else None   # noqa: E731
    out = stream_predict(model, df[df.split == "test"], card.image_size, BACKBONES[card.backbone].preprocess,
                         progress=True, color=card.color, batch_size=args.batch_size, clahe=card.clahe,
                         geometry=card.geometry, tta=args.tta, per_chunk=decide)
    # the card's threshold applies to calibrated probabilities (as in the app and API; at 0.5 nothing changes)
    proba = task.calibrate(out["proba"], predictor.temperature)
    m = task.metrics(out["labels"], proba, card.class_names, card.threshold, seed=args.seed)
    if out["records"] is not None:
        preds = out["records"]
        labels = np.array([card.class_names.index(p.label) for p in preds])
        y = np.asarray(out["labels"])
        correct = labels == y
        m["shift"] = _shift_test(predictor.ood, preds, y, card.class_names)
        m["referral_per_film"] = referral.summary([tuple(p.reasons) for p in preds], correct)
        folder_foreign = bool(m["shift"] and m["shift"]["all films"]["foreign"])
        if folder_foreign:          # the error level is stated for Kermany-like films: no answer here has it
            for p in preds:
                p.refer_for("foreign_folder")
        m["referral"] = referral.summary([tuple(p.reasons) for p in preds], correct)
        m["referral"]["rule"] = (f"refer when out of distribution (combined score > {predictor.ood.threshold:.2f})"
                                 if predictor.ood else "no out-of-distribution detector beside the weights") + \
            f"; {predictor.confidence_rule()}; every film of a folder the shift test finds foreign"
        m["risk_coverage_by_uncertainty"] = accuracy_at_coverage(
            y, labels, np.array([p.uncertainty for p in preds]),
            coverages=tuple(np.round(np.arange(1.0, 0.45, -0.05), 2)))
        m["referral_by_class"] = {name: referral.summary([tuple(p.reasons) for p, t in zip(preds, y) if t == k],
                                                         correct[y == k])
                                  for k, name in enumerate(card.class_names) if (y == k).any()}
        f = m["referral_per_film"]
        print(f"referral film by film: {f['coverage']:.1%} answered (accuracy "
              f"{f['accuracy_answered'] or float('nan'):.3f}), {f['referred']:.1%} referred — out of distribution "
              f"{f['referred_out_of_distribution']:.1%}, below the error level's confidence "
              f"{f['referred_uncertain']:.1%}; accuracy of all films {f['accuracy_all']:.3f}")
        if folder_foreign:
            print("referral: every film referred — the folder as a whole is unlike the training films")
        print("referred by true class: " + ", ".join(f"{name} {c['referred']:.1%}"
                                                     for name, c in m["referral_by_class"].items()))
        m["error_level"] = _error_level(predictor.selective, f)     # the level's own domain: film by film
        rows = [{"file": path, "true_label": card.class_names[t], **decision_row(p)}
                for path, t, p in zip(out["paths"], y, preds)]
        write_csv_atomic(pd.DataFrame(rows), Path(args.results_dir) / "decisions.csv")
        print(f"decisions → {Path(args.results_dir) / 'decisions.csv'} (one row per film)")
    m["skipped_images"] = [{"path": p, "reason": r} for p, r in out["skipped"]]
    results = Path(args.results_dir)
    write_json_atomic(m, results / "metrics.json")
    print(format_metrics(m))
    for p, r in out["skipped"]:
        print(f"skipped {p}: {r}")
    print(f"metrics → {results / 'metrics.json'}")


def _error_level(rule, referral_summary: dict) -> dict | None:
    """Whether the error level the rule was fitted for held on these films: the accuracy of the answered films
    against 1 − level (None when none was answered), printed; None (with a note) for a folder without the rule."""
    if rule is None:
        print("error level: none beside the weights (`xai-cxr fit-ood WEIGHTS_DIR` fits one)")
        return None
    acc, coverage = referral_summary["accuracy_answered"], referral_summary["coverage"]
    held = None if acc is None else bool(acc >= 1 - rule.error_level)
    verdict = "nothing answered, nothing to check" if held is None else \
        f"{acc:.1%} of them right — the bound {'held' if held else 'did NOT hold'} here"
    print(f"error level {rule.error_level:.0%}: film by film {coverage:.1%} of these films answered, {verdict} (it is "
          f"stated for Kermany-like films: {rule.in_words()})")
    finite = rule.min_confidence != float("inf")
    return {"level": rule.error_level, "delta": rule.delta, "min_confidence": rule.min_confidence if finite else None,
            "holdout_coverage": rule.holdout_coverage, "holdout_error_bound": rule.error_bound,
            "coverage": coverage, "accuracy_answered": acc, "held": held}


def _shift_test(detector, preds, y, class_names) -> dict | None:
    """The folder shift test (``models/shift.py``) of the evaluated films against the model's holdout films, overall
    and per true class, printed in words before the metrics; None (with a note) when the detector has no reference."""
    import numpy as np

    from ..models.shift import MIN_FILMS, c2st
    if detector is None or detector.reference_z is None:
        print("folder shift test: not run — the detector beside the weights keeps no holdout reference; "
              "`xai-cxr fit-ood WEIGHTS_DIR` refits it with one")
        return None
    reference, ref_y = detector.reference(), detector.reference_labels
    films = np.array([[p.ood_z[b] for b in detector.combine] for p in preds])
    if min(len(films), len(reference)) < MIN_FILMS:
        print(f"folder shift test: not run — {len(films)} films against {len(reference)} holdout films; it needs "
              f"{MIN_FILMS} on each side")
        return None
    tests = {"all films": c2st(reference, films)}
    if ref_y is None:
        print("folder shift test: per class not run — the detector keeps no classes of its holdout films "
              "(`xai-cxr fit-ood WEIGHTS_DIR` refits it with them)")
    else:       # each class against the holdout films of the same class: a folder of one class is not a shift
        tests.update({f"{name} films": c2st(detector.reference(k), films[y == k]) for k, name in
                      enumerate(class_names) if (y == k).sum() >= MIN_FILMS and (ref_y == k).sum() >= MIN_FILMS})
    for what, t in tests.items():
        print(f"folder shift test — {t.in_words(what)}")
    return {what: {**t.__dict__, "foreign": t.foreign} for what, t in tests.items()}


def cmd_explain(args):
    import cv2
    import numpy as np
    import pandas as pd

    from ..config import atomic_path
    from ..data import ImageReadError
    from ..explain.overlay import jet_overlay, red_overlay
    from ..models import BACKBONES
    from ..pipeline import explain_images
    from ..serve.inference import Predictor
    refs = _dicom_references(args.images) if args.dicom_out else {}
    predictor = Predictor.from_weights_dir(args.weights_dir)
    model, card = predictor.model, predictor.card
    spec = BACKBONES[card.backbone]
    grays, names, ages, skipped = [], [], [], []
    for path in args.images:
        try:
            data = Path(path).read_bytes()
            grays.append(predictor.load(data, path))        # blank or constant images are refused here
            names.append(Path(path))
            ages.append(predictor.age_outside(data))
        except (ImageReadError, OSError, cv2.error) as exc:
            skipped.append((path, str(exc)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if grays:
        cam = cam_config_from_args(args)
        heats, _, _ = explain_images(model, np.stack(grays), spec.preprocess, cam, card.target_layer)
        preds = predictor.predict(np.stack(grays), mc=True, age_outside=ages)
        rows = []
        for g, h, p, name in zip(grays, heats, preds, names):
            panel = np.hstack([red_overlay(g, h, args.top_fraction), jet_overlay(g, h)])
            dest = out / f"{name.stem}_{args.cam}.png"
            cv2.imwrite(str(dest), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
            said = (f"REFER ({'; '.join(p.reason_text)}) — model output, not an answer: {p.label} "
                    f"({p.confidence:.1%})") if p.referred else f"{p.label} ({p.confidence:.1%})"
            print(f"{name}: {said} → {dest}")
            rows.append({"file": name.name, **decision_row(p), "map": dest.name})
            if args.dicom_out and str(name) in refs:
                _write_dicom_overlay(refs[str(name)], red_overlay(g, h, args.top_fraction), p.label, p.confidence,
                                     predictor.weights_id, args.cam,
                                     Path(args.dicom_out) / f"{name.stem}_{args.cam}.dcm")
        with atomic_path(out / "decisions.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        print(f"decisions → {out / 'decisions.csv'}")
    for p, why in skipped:
        print(f"skipped {p}: {why}", file=sys.stderr)
    if skipped and not grays:
        sys.exit(1)


def cmd_audit(args):
    import matplotlib
    matplotlib.use("Agg")
    given = [k for k, v in args.training_defaults.items() if getattr(args, k) != v]
    from ..explain.registry import missing_packages
    if absent := {m: pk for m in args.methods or () if (pk := missing_packages(m))}:
        sys.exit("error: " + "; ".join(f"--methods {m} needs {', '.join(pk)}" for m, pk in absent.items())
                 + ", not installed: pip install -e '.[app]'")
    if args.confounder:
        if args.label_randomization:
            sys.exit("error: --label-randomization audits a saved model; it does not combine with --confounder")
        return _shortcut_audit(args)
    if given:
        sys.exit(f"error: {', '.join('--' + k.replace('_', '-') for k in given)} only apply with --confounder "
                 "(which trains a model); the audit of a saved model reads its settings from WEIGHTS_DIR")
    args.out = args.out or "sample_results/audit"
    from ..config import AuditConfig
    from ..studies import audit_saved_model
    cfg = AuditConfig(methods=tuple(args.methods or ()), n_images=args.n_images, steps=args.steps,
                      baseline=args.baseline, seed=args.seed, images=args.images, target=args.target)
    out = Path(args.out)
    report = audit_saved_model(args.weights_dir, args.data_dir, cfg, args.target_layer, args.labels_csv,
                               out / "label_randomized_weights" if args.label_randomization else None)
    report.write(out)
    print(report.to_markdown())
    print(f"audit → {out}/audit.md, audit_*.csv, regions.csv, mean_maps.png, methods/*.png, galleries/*.png, "
          "what_it_reads_*.csv")


def _shortcut_audit(args):
    from ..data.confounders import check_degree
    from ..studies import run_shortcut_audit
    degrees = [check_degree(d) for d in args.degree]
    data, model, train, cam = configs_from_args(args, *base_configs(args))
    from ..explain.recommend import recommended_methods
    methods = tuple(args.methods or dict.fromkeys(["gradcam", "fused", *recommended_methods()]))
    out = Path(args.out or args.results_dir)      # results-dir: where the trained models' own results go too
    results = run_shortcut_audit(data, model, train, cam, args.confounder, degrees, methods, out,
                                 Path(args.weights_dir) / "confounders", args.copy_dir, args.n_images)
    from ..explain.metrics.shortcut import to_markdown
    print(to_markdown(results))
    _print_recommendation(out / "recommendation.md")
    print(f"planted-shortcut audit → {out}/confounder_<kind>/confounder_audit.md, .csv, gallery_*.png")


def cmd_segment(args):
    import matplotlib
    matplotlib.use("Agg")
    from ..config import write_json_atomic
    from ..models.segment import SegmentConfig
    from ..pipeline import save_figure
    from ..studies import segmentation_stage
    res = segmentation_stage(args.weights_dir, args.data_dir, SegmentConfig(epochs=args.epochs, seed=args.seed))
    out = Path(args.out)
    write_json_atomic(res["scores"], out / "segmentation.json")
    save_figure(res["figure"], out / "segmentation.png")
    print(json.dumps(res["scores"], indent=2))
    print(f"segmentation → {out}/segmentation.json, segmentation.png")


def _print_recommendation(path: Path) -> None:
    """Which explainer to trust for which kind of shortcut (the measured table), printed and written to ``path``."""
    from ..explain.recommend import to_markdown
    text = "### Which explainer to trust for which shortcut\n\n" + to_markdown()
    print("\n" + text)
    with open(path, "a") as f:
        f.write("\n" + text)
