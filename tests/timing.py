"""The quick suite's per-test time budget: every test not marked ``slow`` must finish (setup + call + teardown)
within ``BUDGET_S`` seconds on the reference CPU, scaled by how much slower this machine runs a fixed
convolution (``slowness``) — so the budget means the same on a fast CPU and an old one, and a test that grows
heavy is caught on either. ``XAI_CXR_TEST_BUDGET_S=0`` turns the check off (e.g. under a profiler)."""
from __future__ import annotations

import os
import time

BUDGET_S = 30.0
# best of ``_workload``'s runs on the reference CPU (Intel Xeon, 2 cores, AVX-512 and AMX; 284 GFLOPS on it:
# benchmarks/results/conv_gflops.json, 2026-12-05)
REFERENCE_WORKLOAD_S = 0.048


def budget_s() -> float:
    return float(os.environ.get("XAI_CXR_TEST_BUDGET_S", BUDGET_S))


LAYERS, IMAGES, SIDE, CHANNELS = 10, 8, 96, 32
WORKLOAD_FLOPS = LAYERS * IMAGES * SIDE * SIDE * CHANNELS * CHANNELS * 3 * 3 * 2     # multiply-adds × 2


def _workload() -> None:
    import tensorflow as tf
    x = tf.ones((IMAGES, SIDE, SIDE, CHANNELS))
    k = tf.ones((3, 3, CHANNELS, CHANNELS)) * 0.01
    for _ in range(LAYERS):
        x = tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME"))
    float(tf.reduce_sum(x))


def workload_s(repeats: int = 5) -> float:
    """The best time of ``repeats`` runs of the fixed workload, after an untimed warm-up (kernels chosen, threads
    started)."""
    _workload()
    return min(_timed(_workload) for _ in range(repeats))


def slowness(repeats: int = 5) -> float:
    """This machine's time for the fixed workload over the reference CPU's (≥ 1: a faster machine keeps the
    stated budget)."""
    return max(1.0, workload_s(repeats) / REFERENCE_WORKLOAD_S)


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def over_budget(durations: dict[str, float], budget: float, factor: float) -> dict[str, float]:
    """The tests whose total time exceeds ``budget × factor`` seconds."""
    return {name: t for name, t in durations.items() if t > budget * factor}
