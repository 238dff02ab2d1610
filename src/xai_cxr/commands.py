"""The subcommands of ``xai-cxr``: each builds the configs from its flags (``configs_from_args``) and calls the package.
``cli.build_parser`` wires them to their flags."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from .config import AUGMENT_PRESETS, CamConfig, DataConfig, ModelConfig, TrainConfig
from .tasks import TASKS, get_task


def class_names_from_args(args) -> tuple[str, ...]:
    """The task's classes, or --classes (folder names; 'auto' = the sub-folders of train/) where the task
    reads class folders (binary) or a CSV's columns (multilabel)."""
    from .data import detect_classes
    task = TASKS[args.task]
    if not args.classes:
        return task.class_names
    if args.task not in ("binary", "multilabel"):
        raise ValueError(f"--classes does not apply to --task {args.task} (its classes are {task.class_names})")
    if args.classes == "auto" and args.task == "binary":
        return detect_classes(args.data_dir)
    return tuple(c.strip() for c in args.classes.split(",") if c.strip())


def configs_from_args(args, data: DataConfig, model: ModelConfig, train: TrainConfig):
    """The run's configs: ``data``, ``model``, ``train`` with the flags the user set applied, and the CamConfig."""
    from .data import find_data_root
    root, note = find_data_root(args.data_dir or data.root)
    if note:
        print("note:", note)
    args.data_dir = str(root)
    given = lambda **kw: {k: v for k, v in kw.items() if v is not None}   # noqa: E731  (unset flags keep the config's)
    data = replace(data, root=str(root), seed=args.seed, batch_size=args.batch_size, limit=args.limit,
                   image_store=args.image_store,
                   task=args.task, labels_csv=args.labels_csv, color=args.color, class_names=class_names_from_args(args),
                   **given(image_size=args.image_size, validation=args.validation, clahe=args.clahe,
                           geometry=args.geometry, augment=AUGMENT_PRESETS.get(args.augment)))
    if args.augment == "none":
        data = replace(data, augment=None)
    from .data.population import default_population, parse_range
    data = replace(data, population_age=parse_range(args.population_age) if getattr(args, "population_age", None)
                   else default_population(root, data.class_names))
    model = replace(model, **({"backbone": args.backbone} if args.backbone else {}),
                    **({"weights": args.weights} if args.weights else {}), allow_download=not args.no_download)
    train = replace(train.with_epochs(args.epochs1, args.epochs2), seed=args.seed, deterministic=args.deterministic,
                    feature_cache=not args.no_feature_cache, feature_cache_dir=args.cache_dir,
                    **given(budget_minutes=args.budget_minutes, optimizer=args.optimizer,
                            weight_decay=args.weight_decay, schedule=args.schedule, ema_momentum=args.ema,
                            operating_point=args.operating_point, keep=args.keep),
                    multilabel_loss=args.loss, focal_gamma=args.focal_gamma, focal_alpha=args.focal_alpha,
                    verbose=1 if sys.stdout.isatty() else 2)   # progress bars only on a terminal
    if args.lr is not None:
        train = replace(train, stage1=replace(train.stage1, learning_rate=args.lr))
    cam = CamConfig(method=args.cam, target_layer=args.target_layer, top_fraction=args.top_fraction)
    return data, model, train, cam



def _run(args, data, model, train, cam):
    """Train + evaluate + Grad-CAM figure; then, with --bbox-csv, Grad-CAM against the boxes."""
    from .config import write_json_atomic
    from .pipeline import run
    from .studies import bbox_localization
    strategy = getattr(args, "strategy", None)
    weights_dir, results_dir = args.weights_dir, args.results_dir
    if strategy is not None:
        from .runtime import cluster_from_env
        cluster = cluster_from_env()
        print(f"multi-worker training: {cluster['workers']} workers, this is {cluster['task'][0]} "
              f"{cluster['task'][1]}{' (chief: writes the weights and results)' if cluster['chief'] else ''}")
        if not cluster["chief"]:                     # the others train in lockstep and write to a scratch folder
            weights_dir = str(Path(weights_dir) / f"_worker{cluster['task'][1]}")
            results_dir = str(Path(results_dir) / f"_worker{cluster['task'][1]}")
    result = run(data, model, train, cam, weights_dir, results_dir, args.resume, strategy)
    if args.mlflow and weights_dir == args.weights_dir:
        from .tracking import log_run
        log_run({"data": data, "model": model, "train": train, "cam": cam}, result["metrics"], result["history"],
                args.weights_dir, args.results_dir, args.mlflow_store)
    if args.bbox_csv:
        scores = bbox_localization(result["model"], result["prepared"].test, args.bbox_csv, data.class_names,
                                   result["card"].target_layer)
        write_json_atomic(scores, Path(results_dir) / "bbox_localization.json")
        print(json.dumps(scores, indent=2))


def cmd_demo(args):
    from .pipeline import demo_configs
    from .pipeline import has_split
    data, model, train, note = demo_configs(args.data_dir if args.data_dir != "chest_xray" or
                                            has_split("chest_xray") else None, args.seed, not args.no_download)
    print(note)
    args.data_dir = data.root
    data, model, train, cam = configs_from_args(args, data, model, train)
    _run(args, data, model, train, cam)


def _refuse(args, flags, what):
    """Stop when a flag that ``what`` does not support was given (no flag is silently ignored)."""
    given = [f for f in flags if getattr(args, f.lstrip("-").replace("-", "_"))]
    if given:
        sys.exit(f"error: {', '.join(given)} not supported with {what}")


def cmd_compare(args):
    from .studies import compare_backbones
    _refuse(args, ["--mlflow", "--resume", "--bbox-csv"], "compare")
    data, model, train, cam = configs_from_args(args, DataConfig(), ModelConfig(), TrainConfig())
    compare_backbones(data, model, train, args.backbones, Path(args.weights_dir) / "compare",
                      Path(args.results_dir) / "compare", cam)


def cmd_train(args):
    from .studies import cross_validate
    data, model, train, cam = configs_from_args(args, DataConfig(), ModelConfig(), TrainConfig())
    if args.folds:
        _refuse(args, ["--mlflow", "--resume", "--bbox-csv"], "--folds")
        cross_validate(data, model, train, args.folds, Path(args.weights_dir) / "cv", Path(args.results_dir) / "cv")
        return
    _run(args, data, model, train, cam)


def cmd_evaluate(args):
    import numpy as np
    from .config import write_json_atomic
    from .data import require_splits
    from .data.stream import stream_predict
    from .evaluate import format_metrics
    from .models import BACKBONES, referral
    from .models.calibration import accuracy_at_coverage, apply_temperature
    from .serve.inference import Predictor
    predictor = Predictor.from_weights_dir(args.weights_dir)
    model, card = predictor.model, predictor.card
    task = get_task(card.task)
    df = task.scan(args.data_dir, card.class_names, card.seed, args.labels_csv)
    require_splits(df, "test", root=args.data_dir)
    decide = None if task.multilabel else (lambda grays: predictor.predict(grays, mc=True))   # noqa: E731
    out = stream_predict(model, df[df.split == "test"], card.image_size, BACKBONES[card.backbone].preprocess,
                         progress=True, color=card.color, batch_size=args.batch_size, clahe=card.clahe,
                         geometry=card.geometry, tta=args.tta, per_chunk=decide)
    # the card's threshold applies to calibrated probabilities (as in the app and API; at 0.5 nothing changes)
    proba = apply_temperature(out["proba"], predictor.temperature, task.multilabel)
    m = task.metrics(out["labels"], proba, card.class_names, card.threshold, seed=args.seed)
    if out["records"] is not None:
        preds = out["records"]
        labels = np.array([card.class_names.index(p.label) for p in preds])
        correct = labels == np.asarray(out["labels"])
        m["referral"] = referral.summary([tuple(p.reasons) for p in preds], correct)
        m["referral"]["rule"] = (f"refer when out of distribution (combined score > {predictor.ood.threshold:.2f})"
                                 if predictor.ood else "no out-of-distribution detector beside the weights") + \
            f" or MC-dropout sd > {predictor.refer_above:.2f}"
        m["risk_coverage_by_uncertainty"] = accuracy_at_coverage(
            np.asarray(out["labels"]), labels, np.array([p.uncertainty for p in preds]),
            coverages=tuple(np.round(np.arange(1.0, 0.45, -0.05), 2)))
        r = m["referral"]
        print(f"referral: {r['coverage']:.1%} answered (accuracy {r['accuracy_answered'] or float('nan'):.3f}), "
              f"{r['referred']:.1%} referred — out of distribution {r['referred_out_of_distribution']:.1%}, "
              f"uncertain {r['referred_uncertain']:.1%}; accuracy of all films {r['accuracy_all']:.3f}")
    m["skipped_images"] = [{"path": p, "reason": r} for p, r in out["skipped"]]
    results = Path(args.results_dir)
    write_json_atomic(m, results / "metrics.json")
    print(format_metrics(m))
    for p, r in out["skipped"]:
        print(f"skipped {p}: {r}")
    print(f"metrics → {results / 'metrics.json'}")


def cmd_explain(args):
    import cv2
    import numpy as np
    import pandas as pd
    from .config import atomic_path
    from .data import ImageReadError
    from .explain.overlay import jet_overlay, red_overlay
    from .models import BACKBONES
    from .pipeline import explain_images
    from .serve.inference import Predictor
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
        cam = CamConfig(method=args.cam, target_layer=args.target_layer, top_fraction=args.top_fraction)
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
            rows.append({"file": name.name, "decision": p.decision, "reasons": ";".join(p.reasons),
                         "label": p.label, "confidence": p.confidence, "uncertainty": p.uncertainty,
                         "ood_score": p.ood_score, "ood_threshold": p.ood_threshold, "map": dest.name})
            if args.dicom_out and str(name) in refs:
                _write_dicom_overlay(refs[str(name)], red_overlay(g, h, args.top_fraction), p.label, p.confidence,
                                     predictor.weights_id, args.cam, Path(args.dicom_out) / f"{name.stem}_{args.cam}.dcm")
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
    if args.confounder:
        if args.label_randomization:
            sys.exit("error: --label-randomization audits a saved model; it does not combine with --confounder")
        return _shortcut_audit(args)
    if given:
        sys.exit(f"error: {', '.join('--' + k.replace('_', '-') for k in given)} only apply with --confounder "
                 "(which trains a model); the audit of a saved model reads its settings from WEIGHTS_DIR")
    args.out = args.out or "sample_results/audit"
    from .explain.metrics.audit import audit, to_markdown
    from .config import AuditConfig
    from .data import load_images, require_splits
    from .models import load_trained_model
    from .pipeline import lesion_masks
    model, card = load_trained_model(args.weights_dir)
    df = get_task(card.task).scan(args.data_dir, card.class_names, card.seed, args.labels_csv)
    require_splits(df, "test", root=args.data_dir)
    test = load_images(df[df.split == "test"], card.image_size, color=card.color, clahe=card.clahe,
                       geometry=card.geometry)
    masks = lesion_masks(test, card.image_size)
    cfg = AuditConfig(methods=tuple(args.methods or ()), n_images=args.n_images, steps=args.steps,
                      baseline=args.baseline, seed=args.seed, images=args.images, target=args.target)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    label_model = None
    if args.label_randomization:
        from .studies import train_label_randomized
        print("label randomization: retraining the same model on permuted training labels ...")
        label_model = train_label_randomized(args.weights_dir, out / "label_randomized_weights", args.data_dir,
                                             args.seed)
    result = audit(model, card.backbone, test, masks, cfg, args.target_layer, label_model=label_model)
    md = to_markdown(result)
    (out / "audit.md").write_text(f"# Explanation audit\n\nmodel: {card.backbone} at {card.image_size}px "
                                  f"({args.weights_dir}); data: {args.data_dir} test split\n\n" + md)
    for key in ("localization", "faithfulness", "sanity"):
        if result[key] is not None:
            result[key].to_csv(out / f"audit_{key}.csv", index=False)
    _audit_figures(model, card, test, masks, result["maps"], out, args.target_layer)
    regions_md = _where_it_looks(model, card, test, out, args.target_layer)
    print(md + "\n" + regions_md)
    if len(card.class_names) == 2 and not get_task(card.task).multilabel:
        print(_what_it_reads(model, card, test, df, out, args.weights_dir, args.seed))
    print(f"audit → {out}/audit.md, audit_*.csv, regions.csv, mean_maps.png, methods/*.png, galleries/*.png, "
          "what_it_reads_*.csv")


def _what_it_reads(model, card, test, manifest, out: Path, weights_dir, seed: int) -> str:
    """The shortcut probes (width, border, corners) on the test films and the metadata-only baseline on the
    data's files → what_it_reads_*.csv and a section of audit.md; returns the markdown."""
    from .explain.metrics.probes import data_baseline, model_predictor, to_markdown, what_the_model_reads
    from .models.calibration import load_temperature
    print("probing what the model reads (width, border, corners; metadata-only baseline) ...")
    predict = model_predictor(model, card.backbone, load_temperature(weights_dir))
    report = what_the_model_reads(predict, test.images, test.labels, 1, card.threshold,
                                  data_baseline(manifest, seed=seed))
    for name in ("verdict", "width", "regions"):
        getattr(report, name).to_csv(out / f"what_it_reads_{name}.csv", index=False)
    md = to_markdown(report)
    with open(out / "audit.md", "a") as f:
        f.write("\n### What does the model read? Shortcut probes (thresholds in docs/results.md)\n\n" + md)
    return md


def _audit_figures(model, card, test, masks, maps_by_method, out: Path, target_layer) -> None:
    """Per method a gallery of its maps; the error galleries (false positives / negatives) of Grad-CAM."""
    from .explain.metrics.audit import error_galleries
    from .explain.overlay import gallery
    from .pipeline import save_figure
    for name, (idx, maps) in maps_by_method.items():
        k = idx[:12]
        fig = gallery(test.images[k], maps[:12], [test.manifest.path[i].split("/")[-1][:22] for i in k],
                      None if masks is None else masks[k], suptitle=f"{name}: top 5% of heat")
        save_figure(fig, out / "methods" / f"{name}.png")
    for name, fig in error_galleries(model, card.backbone, test, masks, target_layer=target_layer,
                                     class_names=card.class_names).items():
        save_figure(fig, out / "galleries" / f"{name}.png")


def _where_it_looks(model, card, test, out: Path, target_layer) -> str:
    """Share of Grad-CAM's top-5% heat per region by predicted class → regions.csv, mean_maps.png, audit.md."""
    from .explain.metrics.shortcut import where_it_looks
    from .pipeline import save_figure
    regions, fig = where_it_looks(model, card.backbone, test, card.class_names, target_layer=target_layer)
    regions.to_csv(out / "regions.csv", index=False)
    save_figure(fig, out / "mean_maps.png")
    regions_md = regions.to_markdown(index=False, floatfmt=".3f")
    with open(out / "audit.md", "a") as f:
        f.write("\n### Where the model looks: share of Grad-CAM's top-5% heat per region, by predicted class "
                "(share_of_image = what a random map gets)\n\n" + regions_md + "\n")
    return regions_md


def _shortcut_audit(args):
    from .data.confounders import check_degree
    from .studies import run_shortcut_audit
    degrees = [check_degree(d) for d in args.degree]
    data, model, train, cam = configs_from_args(args, DataConfig(), ModelConfig(), TrainConfig())
    methods = tuple(args.methods or ("gradcam", "hirescam", "gradcam++", "fused", "integrated_gradients", "smoothgrad"))
    out = Path(args.out or args.results_dir)      # results-dir: where the trained models' own results go too
    results = run_shortcut_audit(data, model, train, cam, args.confounder, degrees, methods, out,
                                 Path(args.weights_dir) / "confounders", args.copy_dir, args.n_images)
    from .explain.metrics.shortcut import to_markdown
    print(to_markdown(results))
    print(f"planted-shortcut audit → {out}/confounder_<kind>/confounder_audit.md, .csv, gallery_*.png")


def cmd_segment(args):
    import matplotlib
    matplotlib.use("Agg")
    from .config import write_json_atomic
    from .pipeline import save_figure
    from .studies import segmentation_stage
    from .models.segment import SegmentConfig
    res = segmentation_stage(args.weights_dir, args.data_dir, SegmentConfig(epochs=args.epochs, seed=args.seed))
    out = Path(args.out)
    write_json_atomic(res["scores"], out / "segmentation.json")
    save_figure(res["figure"], out / "segmentation.png")
    print(json.dumps(res["scores"], indent=2))
    print(f"segmentation → {out}/segmentation.json, segmentation.png")


def _dicom_references(images) -> dict:
    """--dicom-out: the source UIDs of every input, read before any work; a PNG/JPEG or a DICOM without its UIDs
    stops the command with the file and the reason."""
    from .serve.dicom_out import DicomOutError, source_references
    refs, problems = {}, []
    for path in images:
        try:
            refs[str(Path(path))] = source_references(Path(path).read_bytes(), path)
        except (DicomOutError, OSError) as exc:
            problems.append(str(exc))
    if problems:
        sys.exit("error: --dicom-out refused:\n  " + "\n  ".join(problems))
    return refs


def _write_dicom_overlay(refs, overlay_rgb, label, confidence, weights_id, method, dest: Path) -> None:
    from .config import atomic_path
    from .serve.dicom_out import overlay_dataset, to_bytes
    data = to_bytes(overlay_dataset(refs, overlay_rgb, label, confidence, weights_id, method))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    print(f"  DICOM overlay (Secondary Capture in the source's study) → {dest}")


def cmd_report(args):
    from .data import ImageReadError
    from .serve.inference import load_predictor
    from .serve.report import write_report
    path = Path(args.image)
    refs = _dicom_references([args.image]) if args.dicom_out else {}
    predictor = load_predictor(args.weights_dir, allow_phantom=args.phantom)
    try:
        data = path.read_bytes()
        gray = predictor.load(data, path)
    except ImageReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    pred = predictor.predict(gray[None], mc=args.mc_passes > 1, age_outside=[predictor.age_outside(data)])[0]
    target = [predictor.class_names.index(pred.label)]
    heats = {m: predictor.explain(gray[None], m, targets=target)[0] for m in args.methods}
    out = write_report(args.out, gray, heats, pred, predictor, path.name, args.top_fraction)
    said = f"REFER ({'; '.join(pred.reason_text)})" if pred.referred else \
        f"{pred.label} ({pred.confidence:.1%}, MC sd {pred.uncertainty:.3f})"
    print(f"{path.name}: {said} → {out}")
    if args.dicom_out:
        from .explain.overlay import red_overlay
        method = args.methods[0]
        _write_dicom_overlay(refs[str(path)], red_overlay(gray, heats[method], args.top_fraction), pred.label,
                             pred.confidence, predictor.weights_id, method,
                             Path(args.dicom_out) / f"{path.stem}_{method}.dcm")


def cmd_serve(args):
    from .runtime import limit_malloc_arenas
    from .serve.api import serve
    limit_malloc_arenas()                       # before the request threads start: RSS stays flat under load
    serve(args.weights_dir, host=args.host, port=args.port, max_batch=args.max_batch,
          max_wait_ms=args.max_wait_ms, allow_phantom=args.phantom, mc_passes=args.mc_passes, token=args.token)


def cmd_app(args):
    import subprocess
    app = Path(__file__).parent / "serve" / "app.py"
    os.environ["XAI_CXR_WEIGHTS_DIR"] = str(Path(args.weights_dir).resolve())
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")     # a long-running server: see runtime.limit_malloc_arenas
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
           "--server.maxUploadSize", "20", "--server.address", args.address]
    print("starting", " ".join(cmd))
    sys.exit(subprocess.call(cmd))


def cmd_phantoms(args):
    from .data.phantom import PhantomConfig, write_phantom_dataset
    cfg = PhantomConfig(image_size=args.image_size, n_train=args.n_train, n_test=args.n_test,
                        n_val=args.n_val, seed=args.seed)
    root = write_phantom_dataset(args.out, cfg)
    print(f"phantoms → {root}")



def cmd_export(args):
    from .serve.export import ExportError, export
    try:
        s = export(args.weights_dir, args.format, args.out)
    except ExportError as exc:
        sys.exit(f"error: {exc}")
    print(f"{args.format} export → {Path(args.out) / s['file']} ({s['size_bytes'] / 1e6:.1f} MB); calibrated "
          f"probabilities within {s['parity_max_abs_diff']:.1e} of the Keras model on {s['parity_films']} films "
          f"(tolerance {s['parity_tolerance']:g}); card, export.json and README.md beside it")


def cmd_fit_ood(args):
    from .pipeline import refit_out_of_distribution
    summary, _ = refit_out_of_distribution(args.weights_dir, args.data_dir, progress=True)
    print(f"out-of-distribution detector → {Path(args.weights_dir) / 'ood.npz'}: threshold "
          f"{summary['threshold']:.2f} ({summary['quantile']:.0%} of the {summary['calibrated_on']} films), "
          f"{summary['test_flagged']} test films flagged ({summary['test_flagged_share']:.1%})")
