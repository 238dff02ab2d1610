"""How fast this CPU runs a plain convolution in TensorFlow (GFLOPS), to project a time measured here onto another
CPU: the older reference CPU (AMD EPYC, first Zen generation, 2 cores, AVX2, no AVX-512) reaches 65 GFLOPS on it.
The workload is tests/timing.py's (ten 3×3 convolutions, 32 → 32 channels, on 8 images of 96 × 96), best of 20
runs after a warm-up. Writes benchmarks/results/conv_gflops.json with the CPU it ran on.

    python benchmarks/conv_gflops.py
"""
from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "conv_gflops.json"
OLDER_CPU_GFLOPS = 65.0            # the older CPU's figure for a plain convolution (TensorFlow 2.21)


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from xai_cxr.runtime import cpu_description, quiet_tensorflow
    quiet_tensorflow()
    import timing
    best = timing.workload_s(repeats=20)
    gflops = timing.WORKLOAD_FLOPS / best / 1e9
    out = {"date": dt.date.today().isoformat(), "machine": cpu_description(),
           "command": "python benchmarks/conv_gflops.py", "workload_s": round(best, 4), "gflops": round(gflops, 1),
           "older_cpu_gflops": OLDER_CPU_GFLOPS, "times_faster_than_older_cpu": round(gflops / OLDER_CPU_GFLOPS, 2)}
    RESULTS.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
