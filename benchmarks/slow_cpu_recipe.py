"""The recipe on an older CPU, replayed without its clock: which recipe to pick when the first epoch is slow.

The recipe's budget planner keeps the epochs that fit in 30 minutes. On the older reference CPU (AMD EPYC, first Zen
generation, 2 cores, AVX2, no AVX-512) its 160-px epochs took up to 389 s, so 4 of 20 fit (measured there). An
epoch at another size costs (size/160)² of that (0.63-0.67 at 128 px, measured here on one core), so the planner
would keep ``floor(1800 / (389 · (size/160)²))`` epochs. This script trains the recipe here with exactly that many
cosine epochs per size (the schedule then ends at its floor at the last epoch, as the planner makes it) — the
older CPU's outcome, independent of this machine's speed — and writes the test metrics to
benchmarks/results/slow_cpu_recipe.json. The protocol (sizes, seed, epochs) was fixed before any test metric was
read; the patient holdout validates, the test split is read once per run.

    python benchmarks/slow_cpu_recipe.py --data-dir ../shared/data/kermany224/chest_xray --sizes 160 128 --seed 7
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "slow_cpu_recipe.json"
OLDER_CPU_EPOCH_S_160 = 389.0      # the longest 160-px epoch of the recipe on the older CPU (2 cores)
BUDGET_S = 30 * 60


def planned_epochs(size: int, epoch_s_160: float = OLDER_CPU_EPOCH_S_160, budget_s: float = BUDGET_S,
                   max_epochs: int = 20) -> int:
    """The epochs the budget planner keeps at ``size`` px on the older CPU."""
    return max(1, min(max_epochs, math.floor(budget_s / (epoch_s_160 * (size / 160) ** 2))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[160, 128])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="benchmarks/runs/slow_cpu_recipe")
    args = p.parse_args(argv)
    rows = []
    for size in args.sizes:
        epochs = planned_epochs(size)
        run = Path(args.out) / f"{size}px"
        if not (run / "results" / "metrics.json").is_file():
            subprocess.run([sys.executable, "-m", "xai_cxr.cli", "train", "--config", "cxr-res", "--data-dir",
                            args.data_dir, "--image-size", str(size), "--epochs1", str(epochs), "--seed",
                            str(args.seed), "--weights-dir", str(run / "weights"), "--results-dir",
                            str(run / "results")], check=True)
        m = json.loads((run / "results" / "metrics.json").read_text())
        rows.append({"size": size, "epochs": epochs, "seed": args.seed,
                     **{k: m[k] for k in ("accuracy", "recall", "specificity", "roc_auc")},
                     "training_minutes_here": m["training_minutes"], "machine": m.get("machine")})
        print(rows[-1], flush=True)
    command = "python benchmarks/slow_cpu_recipe.py " + " ".join(argv or sys.argv[1:])
    RESULTS.write_text(json.dumps({"date": dt.date.today().isoformat(), "command": command,
                                   "older_cpu_epoch_s_160": OLDER_CPU_EPOCH_S_160, "budget_s": BUDGET_S,
                                   "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
