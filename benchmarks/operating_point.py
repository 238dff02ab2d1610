"""What `--operating-point RULE` does to already trained models: the decision threshold chosen on each run's own
validation split (its seeded patient-grouped holdout, calibrated with the run's temperature), then the test split
evaluated at 0.5 and at that threshold. The same computation `xai-cxr train --operating-point` makes at the end of
training (`pipeline.apply_operating_point`), applied after the fact to the weights of `benchmarks/accuracy.py`.

    python benchmarks/operating_point.py --rule sensitivity:0.95 \
        --runs benchmarks/runs/cxr-res/seed42 benchmarks/runs/cxr-res/seed1 benchmarks/runs/cxr-res/seed2

With `--last-epoch` the run's last-epoch weights (`weights/train_state/stage1/latest.weights.h5`, the live weights
backup keeps for --resume) replace the best-holdout-epoch weights, and the temperature is refitted on the holdout for
them
— what `--keep last` does at the end of training.

Writes benchmarks/results/operating_point.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import summarize  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kermany224" / "chest_xray"
RESULTS = Path(__file__).resolve().parent / "results" / "operating_point.json"
KEYS = ("accuracy", "recall", "specificity", "roc_auc")


def evaluate_run(run: Path, rule: str, data: Path, last_epoch: bool = False) -> dict:
    from xai_cxr.config import DataConfig
    from xai_cxr.evaluate import operating_threshold
    from xai_cxr.models import BACKBONES, load_trained_model
    from xai_cxr.models.calibration import apply_temperature, fit_temperature, load_temperature
    from xai_cxr.models.predict import predict_images
    from xai_cxr.pipeline import prepare_data
    from xai_cxr.tasks import get_task
    weights = run / "weights"
    model, card = load_trained_model(weights)
    saved = json.loads((weights / "run_config.json").read_text())["DataConfig"]
    cfg = DataConfig(root=str(data), image_size=card.image_size, validation=saved["validation"], clahe=card.clahe,
                     seed=card.seed)
    prep = prepare_data(cfg, progress=False)
    pre = BACKBONES[card.backbone].preprocess
    if last_epoch:
        model.load_weights(weights / "train_state" / "stage1" / "latest.weights.h5")
    val_raw = predict_images(model, prep.val.images, pre, batch_size=64)
    temperature = fit_temperature(val_raw, prep.val.labels) if last_epoch else load_temperature(weights)
    val = apply_temperature(val_raw, temperature)
    test = apply_temperature(predict_images(model, prep.test.images, pre, batch_size=64),
                             temperature)
    t = operating_threshold(prep.val.labels, val[:, 1], rule)
    at = {name: get_task(card.task).metrics(prep.test.labels, test, card.class_names, threshold=thr)
          for name, thr in (("0.5", 0.5), (rule, t))}
    return {"run": str(run), "seed": card.seed, "weights": "last epoch" if last_epoch else "best holdout epoch",
            "threshold": t,
            **{f"{k}@{name}": float(m[k]) for name, m in at.items() for k in KEYS}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rule", default="sensitivity:0.95")
    p.add_argument("--runs", type=Path, nargs="+", required=True)
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--name", default=None, help="the entry in the JSON (default: the rule)")
    p.add_argument("--last-epoch", action="store_true", help="the last epoch's weights instead of the best's")
    args = p.parse_args(argv)
    if not args.data_dir.is_dir():
        sys.exit(f"no Kermany copy at {args.data_dir} (see ../shared/data/README.md)")
    rows = [evaluate_run(r, args.rule, args.data_dir, args.last_epoch) for r in args.runs]
    summary = summarize(rows, [k for k in rows[0] if "@" in k or k == "threshold"])
    table = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    name = args.name or args.rule
    table[name] = {"rule": args.rule, "date": dt.date.today().isoformat(), "command": " ".join(
        ["python benchmarks/operating_point.py", *(argv if argv is not None else sys.argv[1:])]),
        "runs": rows, "summary": summary}
    RESULTS.write_text(json.dumps(table, indent=2))
    print(json.dumps(table[name], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
