"""Training commands: ``demo``, ``train`` (one run or k folds), ``compare``, ``fit-ood``, ``phantoms``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .configs import base_configs, configs_from_args


def _run(args, data, model, train, cam):
    """Train + evaluate + Grad-CAM figure; then, with --bbox-csv, Grad-CAM against the boxes."""
    from ..config import write_json_atomic
    from ..pipeline import run
    from ..studies import bbox_localization
    strategy = getattr(args, "strategy", None)
    weights_dir, results_dir = args.weights_dir, args.results_dir
    if strategy is not None:
        from ..runtime import cluster_from_env
        cluster = cluster_from_env()
        print(f"multi-worker training: {cluster['workers']} workers, this is {cluster['task'][0]} "
              f"{cluster['task'][1]}{' (chief: writes the weights and results)' if cluster['chief'] else ''}")
        if not cluster["chief"]:                     # the others train in lockstep and write to a scratch folder
            weights_dir = str(Path(weights_dir) / f"_worker{cluster['task'][1]}")
            results_dir = str(Path(results_dir) / f"_worker{cluster['task'][1]}")
    result = run(data, model, train, cam, weights_dir, results_dir, args.resume, strategy)
    if args.mlflow and weights_dir == args.weights_dir:
        from ..tracking import log_run
        log_run({"data": data, "model": model, "train": train, "cam": cam}, result["metrics"], result["history"],
                args.weights_dir, args.results_dir, args.mlflow_store)
    if args.bbox_csv:
        scores = bbox_localization(result["model"], result["prepared"].test, args.bbox_csv, data.class_names,
                                   result["card"].target_layer)
        write_json_atomic(scores, Path(results_dir) / "bbox_localization.json")
        print(json.dumps(scores, indent=2))


def cmd_demo(args):
    from ..pipeline import has_split
    from ..recipes import demo_configs
    _refuse(args, ["--config"], "demo (it picks its own recipe; `xai-cxr train --config NAME` trains another)")
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
    from ..studies import compare_backbones
    _refuse(args, ["--mlflow", "--resume", "--bbox-csv"], "compare")
    data, model, train, cam = configs_from_args(args, *base_configs(args))
    compare_backbones(data, model, train, args.backbones, Path(args.weights_dir) / "compare",
                      Path(args.results_dir) / "compare", cam)


def cmd_train(args):
    from ..studies import cross_validate
    data, model, train, cam = configs_from_args(args, *base_configs(args))
    if args.folds:
        _refuse(args, ["--mlflow", "--resume", "--bbox-csv"], "--folds")
        cross_validate(data, model, train, args.folds, Path(args.weights_dir) / "cv", Path(args.results_dir) / "cv")
        return
    _run(args, data, model, train, cam)


def cmd_fit_ood(args):
    from dataclasses import replace

    from ..data.population import parse_range
    from ..models import ModelCard, files
    from ..pipeline import refit_out_of_distribution
    card = ModelCard.load(args.weights_dir)
    if args.population_age is not None:
        age = parse_range(args.population_age)
        if card.population_age is not None and card.population_age != age:
            sys.exit(f"error: {args.weights_dir}'s card already names the training population's ages "
                     f"({card.population_age[0]:g}-{card.population_age[1]:g}); --population-age does not change them")
        replace(card, population_age=age).save(args.weights_dir)
        print(f"model card: training population aged {age[0]:g}-{age[1]:g} years" if age else
              "model card: training population's ages unknown")
    elif card.population_age is None:
        print(f"note: {args.weights_dir}'s card does not name the training population's ages, so no film is referred "
              "for its patient's age; add them with --population-age MIN-MAX (Kermany: 1-5)")
    summary, _ = refit_out_of_distribution(args.weights_dir, args.data_dir, progress=True,
                                           error_level=args.error_level,
                                           input_checks=tuple(args.input_checks) if args.input_checks else None)
    print(f"out-of-distribution detector ({' + '.join(summary['input_checks'])}) → "
          f"{Path(args.weights_dir) / files.OOD}: threshold "
          f"{summary['threshold']:.2f} ({summary['quantile']:.0%} of the {summary['calibrated_on']} films), "
          f"{summary['test_flagged']} test films flagged ({summary['test_flagged_share']:.1%})")
    if summary["error_level"]:
        print(f"error-level rule → {Path(args.weights_dir) / files.SELECTIVE}")


def cmd_phantoms(args):
    from ..data.phantom import PhantomConfig, write_phantom_dataset
    cfg = PhantomConfig(image_size=args.image_size, n_train=args.n_train, n_test=args.n_test,
                        n_val=args.n_val, seed=args.seed)
    root = write_phantom_dataset(args.out, cfg)
    print(f"phantoms → {root}")
