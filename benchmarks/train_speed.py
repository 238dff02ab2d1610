"""Training throughput of the from-scratch backbones on this CPU, and the share of the CPU's peak FLOP rate it reaches.

For each backbone × input size × precision: images/s over 8 training steps of batch 32 (after one warm-up step),
the model's forward multiply-adds counted layer by layer (Conv2D, Dense), training FLOPs ≈ 3 × forward (forward +
two backward products) × 2 FLOPs per multiply-add, and that rate as a share of the peak. Peak assumed: AMD Zen 4
(AVX-512 on two 256-bit FMA pipes) = 32 fp32 FLOPs/cycle/core at the clock /proc/cpuinfo reports; bfloat16 dot
products (AVX512-BF16) double it. Writes benchmarks/results/train_speed.json.

    python benchmarks/train_speed.py [--backbones cxr-small cxr-res] [--sizes 128 160 224]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "train_speed.json"


def forward_macs(model) -> int:
    """Multiply-adds of one forward pass of one image (Conv2D and Dense layers; BatchNorm/ReLU/adds ignored)."""
    import keras
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            kh, kw = layer.kernel_size
            total += h * w * c_out * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def clock_ghz() -> float:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1]) / 1000
    return float("nan")


def measure(backbone: str, size: int, precision: str) -> dict:
    import keras

    from xai_cxr.config import ModelConfig
    from xai_cxr.models import build_model
    keras.mixed_precision.set_global_policy(precision)
    model = build_model(ModelConfig(backbone=backbone, weights="none"), size)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
    x = np.random.default_rng(0).random((32, size, size, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[np.arange(32) % 2]
    model.train_on_batch(x, y)
    t0, steps = time.perf_counter(), 8
    for _ in range(steps):
        model.train_on_batch(x, y)
    ips = steps * 32 / (time.perf_counter() - t0)
    macs = forward_macs(model)
    cores = os.cpu_count() or 1
    peak = cores * 32 * clock_ghz() * 1e9 * (2 if precision == "mixed_bfloat16" else 1)
    achieved = ips * macs * 2 * 3
    keras.mixed_precision.set_global_policy("float32")
    return {"backbone": backbone, "size": size, "precision": precision, "train_img_per_s": round(ips, 1),
            "forward_gmacs_per_image": round(macs / 1e9, 3), "achieved_gflops": round(achieved / 1e9, 1),
            "peak_gflops_assumed": round(peak / 1e9, 1), "share_of_peak": round(achieved / peak, 3)}


def main(argv=None) -> int:
    from xai_cxr.runtime import quiet_tensorflow
    quiet_tensorflow()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["cxr-small", "cxr-res"])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 224])
    p.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    args = p.parse_args(argv)
    rows = []
    for b in args.backbones:
        for s in args.sizes:
            for prec in args.precisions:
                rows.append(measure(b, s, prec))
                print(rows[-1], flush=True)
    from xai_cxr.runtime import cpu_description
    RESULTS.write_text(json.dumps({"date": dt.date.today().isoformat(), "machine": cpu_description(),
                                   "cores": os.cpu_count(),
                                   "clock_ghz": clock_ghz(), "command": "python benchmarks/train_speed.py "
                                   + " ".join(argv or sys.argv[1:]), "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
