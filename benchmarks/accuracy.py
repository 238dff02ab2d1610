"""Accuracy without pretrained weights on the Kermany test split: one recipe, several seeds, one JSON.

Each seed runs the exact `xai-cxr train` command printed (a subprocess, so what is measured is what a user
runs), trained on the train split with a patient-grouped holdout for validation — the test split is read only
by the final evaluation. Results: benchmarks/results/accuracy.json (per seed: the metrics, training minutes,
epochs run, out-of-distribution share, the command; per recipe: mean ± sd), merged with earlier recipes.

    python benchmarks/accuracy.py --recipe cxr-res --seeds 42 1 2
    python benchmarks/accuracy.py --recipe cxr-small-augment --seeds 42      # the earlier README recipe
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kermany224" / "chest_xray"
RESULTS = Path(__file__).resolve().parent / "results" / "accuracy.json"
COMMON = ["--weights", "none", "--validation", "holdout:0.1", "--batch-size", "32", "--budget-minutes", "30",
          "--no-download"]
RECIPES = {
    # the best recipe found (see docs/results.md, "A model worth explaining without pretrained weights")
    "cxr-res": ["--backbone", "cxr-res", "--image-size", "160", "--precision", "mixed_bfloat16", "--augment",
                "--clahe", "--optimizer", "adamw", "--schedule", "cosine", "--lr", "1e-3", "--epochs1", "20"],
    # levers on top of the recipe, one at a time (the from-scratch recipe's ablation)
    "cxr-res-strong-aug": ["--backbone", "cxr-res", "--image-size", "160", "--precision", "mixed_bfloat16",
                           "--augment", "strong", "--clahe", "--optimizer", "adamw", "--schedule", "cosine",
                           "--lr", "1e-3", "--epochs1", "20"],
    "cxr-res-ema": ["--backbone", "cxr-res", "--image-size", "160", "--precision", "mixed_bfloat16", "--augment",
                    "--clahe", "--optimizer", "adamw", "--schedule", "cosine", "--lr", "1e-3", "--epochs1", "20",
                    "--ema", "0.99"],
    # the recipe of pipeline.scratch_configs: cxr-res + the holdout's 95%-sensitivity operating point (measured so far
    # by applying the rule to the cxr-res runs after the fact: benchmarks/operating_point.py, the same computation)
    "cxr-res-op95": ["--backbone", "cxr-res", "--image-size", "160", "--precision", "mixed_bfloat16", "--augment",
                     "--clahe", "--optimizer", "adamw", "--schedule", "cosine", "--lr", "1e-3", "--epochs1", "20",
                     "--operating-point", "sensitivity:0.95"],
    # input size: 128 px gives ~1.5x the images/s of 160 px (benchmarks/train_speed.py), so 28 epochs fit the budget
    "cxr-res-128-op95": ["--backbone", "cxr-res", "--image-size", "128", "--precision", "mixed_bfloat16", "--augment",
                         "--clahe", "--optimizer", "adamw", "--schedule", "cosine", "--lr", "1e-3", "--epochs1", "28",
                         "--operating-point", "sensitivity:0.95"],
    # the squash shortcut: a random ±30% zoom of the width alone (docs/results.md, "The squash shortcut")
    "cxr-res-aspect-op95": ["--backbone", "cxr-res", "--image-size", "160", "--precision", "mixed_bfloat16",
                            "--augment", "aspect", "--clahe", "--optimizer", "adamw", "--schedule", "cosine",
                            "--lr", "1e-3", "--epochs1", "20", "--operating-point", "sensitivity:0.95"],
    # fixed 2026-11-26 16:38 UTC (commit 2c5a253), before seed 2's result existed: with --augment aspect the holdout loss rises over
    # the last epochs (the holdout still carries the squash cue the model is kept from using), so the best-holdout
    # epoch is a mid-schedule one; keep the last epoch of the cosine schedule and decide at 0.5. Seeds 42 and 1
    # were looked at on the test split before this was fixed (last-epoch weights from their resume backups).
    "cxr-res-aspect-last": ["--backbone", "cxr-res", "--image-size", "160", "--precision", "mixed_bfloat16",
                            "--augment", "aspect", "--clahe", "--optimizer", "adamw", "--schedule", "cosine",
                            "--lr", "1e-3", "--epochs1", "20", "--keep", "last"],
    # the same recipe without the width jitter (standard augmentation only): squash ± jitter side by side, and the
    # model the shortcut probes must fail (docs/results.md, "Input geometry")
    "cxr-res-no-jitter-last": ["--backbone", "cxr-res", "--image-size", "160", "--precision", "mixed_bfloat16",
                               "--augment", "standard", "--clahe", "--optimizer", "adamw", "--schedule", "cosine",
                               "--lr", "1e-3", "--epochs1", "20", "--keep", "last"],
    "cxr-res-no-clahe": ["--backbone", "cxr-res", "--image-size", "160", "--precision", "mixed_bfloat16",
                         "--augment", "--optimizer", "adamw", "--schedule", "cosine", "--lr", "1e-3",
                         "--epochs1", "20"],
    # the earlier README run: cxr-small at 128 px with augmentation, Adam + plateau schedule
    "cxr-small-augment": ["--backbone", "cxr-small", "--image-size", "128", "--augment", "--epochs1", "30"],
}
KEYS = ("accuracy", "recall", "specificity", "roc_auc", "f1", "training_minutes")


def run_seed(recipe: str, seed: int, data: Path, out: Path) -> dict:
    cmd = ["xai-cxr", "train", "--data-dir", str(data), *COMMON, *RECIPES[recipe], "--seed", str(seed),
           "--weights-dir", str(out / "weights"), "--results-dir", str(out / "results")]
    print("$", " ".join(cmd), flush=True)
    exe = [sys.executable, "-m", "xai_cxr.cli", *cmd[1:]]
    subprocess.run(exe, check=True)
    m = json.loads((out / "results" / "metrics.json").read_text())
    return {"seed": seed, "command": " ".join(cmd), **{k: m.get(k) for k in KEYS},
            "epochs_run": m.get("epochs_run"), "accuracy_ci95": m.get("accuracy_ci95"),
            "out_of_distribution_test_share": (m.get("out_of_distribution") or {}).get("test_flagged_share"),
            "date": dt.date.today().isoformat()}


def summarize(runs: list[dict], keys=KEYS) -> dict:
    """Mean, sample sd and count of each key over the runs (runs without the key are left out)."""
    import numpy as np
    out = {}
    for k in keys:
        v = np.array([r[k] for r in runs if r.get(k) is not None], float)
        out[k] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", choices=list(RECIPES), default="cxr-res")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path("benchmarks/runs"))
    p.add_argument("--name", help="the JSON entry's name (default: the recipe), e.g. for the same recipe on a "
                                  "slowed machine (`taskset -c 1 python benchmarks/accuracy.py ...`)")
    args = p.parse_args(argv)
    if not args.data_dir.is_dir():
        sys.exit(f"no Kermany copy at {args.data_dir} (see ../shared/data/README.md)")
    table = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    entry = table.setdefault(args.name or args.recipe, {"flags": " ".join(COMMON + RECIPES[args.recipe]), "runs": []})
    for seed in args.seeds:
        result = run_seed(args.recipe, seed, args.data_dir, args.out / (args.name or args.recipe) / f"seed{seed}")
        entry["runs"] = [r for r in entry["runs"] if r["seed"] != seed] + [result]
        entry["summary"] = summarize(entry["runs"])
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(table, indent=2))
        print(json.dumps(result, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
