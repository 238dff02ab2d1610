"""The machine TensorFlow runs on: quiet start-up and a one-line description of the devices.

Nothing here runs on import; the CLI and the notebook call these before their first TensorFlow import.
"""
from __future__ import annotations

import os
import platform
from contextlib import contextmanager


def quiet_tensorflow(verbose: bool = False):
    """Import TensorFlow without its C++ start-up log (``cuInit`` on machines without a GPU, oneDNN notes,
    ``NodeDef mentions attribute …``): sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless the user set it, and keeps file
    descriptor 2 closed during the import itself (those lines are written before any log level is read).
    Python warnings and exceptions are untouched. ``verbose=True`` imports TensorFlow as it comes."""
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        import tensorflow as tf
        return tf
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tf


def cpu_description(cpuinfo: str | None = None) -> dict:
    """The CPU a time was measured on: model name, logical cores, and whether it has AVX-512 and AVX512-BF16 (the
    instructions that make the same training 3-6× faster than on an AVX2-only CPU). ``cpuinfo``: the text of
    /proc/cpuinfo (read when None; elsewhere only the model and cores are known)."""
    if cpuinfo is None:
        try:
            cpuinfo = open("/proc/cpuinfo").read()
        except OSError:
            cpuinfo = ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = next((set(line.split(":", 1)[1].split()) for line in cpuinfo.splitlines() if line.startswith("flags")),
                 set())
    return {"cpu": model, "cores": os.cpu_count(), "avx512": "avx512f" in flags if flags else None,
            "avx512_bf16": "avx512_bf16" in flags if flags else None}


def cpu_line(desc: dict | None = None) -> str:
    """``cpu_description`` in words: "Intel(R) Xeon(R) Processor, 2 cores, AVX-512"."""
    d = desc or cpu_description()
    simd = {True: "AVX-512", False: "no AVX-512", None: "AVX-512 unknown"}[d["avx512"]]
    return f"{d['cpu']}, {d['cores']} cores, {simd}"


def describe_devices() -> str:
    """What TensorFlow computes on, e.g. "GPU 0: NVIDIA H100 80GB HBM3 (CUDA)", "GPU 0: Apple Metal
    (tensorflow-metal)" or "CPU only: 2 cores"."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU only: {os.cpu_count()} cores (no GPU visible to TensorFlow)"
    lines = []
    for i, gpu in enumerate(gpus):
        details = tf.config.experimental.get_device_details(gpu)
        if platform.system() == "Darwin":
            kind = "Apple Metal (tensorflow-metal)"
        else:
            cc = details.get("compute_capability")
            kind = "CUDA" + (f", compute capability {cc[0]}.{cc[1]}" if cc else "")
        lines.append(f"GPU {i}: {details.get('device_name', gpu.name)} ({kind})")
    return "\n".join(lines)


def cluster_from_env(env=None) -> dict | None:
    """The multi-worker cluster of ``TF_CONFIG`` (TensorFlow's own variable, set on every worker) as
    {"workers": n, "task": (type, index), "chief": bool}, or None when unset or a single worker. The chief is
    the "chief" task, or worker 0 when the cluster has none (TensorFlow's convention)."""
    import json
    raw = (os.environ if env is None else env).get("TF_CONFIG")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
        cluster, task = cfg["cluster"], cfg["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON with 'cluster' and 'task' ({exc}); see "
                         "https://www.tensorflow.org/guide/distributed_training#setting_up_the_tf_config_"
                         "environment_variable") from exc
    n = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))
    if n <= 1:
        return None
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return {"workers": n, "task": (kind, index), "chief": chief}


def multi_worker_strategy():
    """``tf.distribute.MultiWorkerMirroredStrategy`` when TF_CONFIG describes several workers, else None. Must
    run before any other TensorFlow op (collectives are configured at start-up): the CLI calls it first."""
    if cluster_from_env() is None:
        return None
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    fix_keras_multi_worker_fit()
    return strategy


def fix_keras_multi_worker_fit():
    """Two fixes that make Keras 3's ``model.fit`` run under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585,
    tensorflow/tensorflow#72388; still broken in Keras 3.15 with TensorFlow 2.21):

    1. the symbolic build before the first step hands the whole (x, y) batch to ``strategy.reduce``, which the
       collective strategy cannot convert ("Attempt to convert a value (PerReplica…)"); only shapes and dtypes are
       needed there, so the build gets this worker's local batch;
    2. the step's logs are averaged over workers with ``reduce(MEAN, axis=0)``, which fails on the scalar loss and
       metrics ("Invalid reduction dimension 0"); scalars are averaged with ``axis=None``.

    Called only when a multi-worker strategy is built; a no-op when Keras's internals have moved (the failure it
    fixes would then show, or be fixed upstream). Tested by two workers on 127.0.0.1 (tests/test_multiworker.py)."""
    try:
        import keras.src.backend.tensorflow.trainer as tft
        trainer, reduce_per_replica = tft.TensorFlowTrainer, tft.reduce_per_replica
        is_multi_worker = tft._collective_all_reduce_multi_worker
    except (ImportError, AttributeError):
        return
    if getattr(reduce_per_replica, "_xai_cxr_fixed", False):
        return
    import tensorflow as tf
    symbolic_build = trainer._maybe_symbolic_build

    def local(strategy, v):
        return strategy.experimental_local_results(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None or not is_multi_worker(self._distribute_strategy):
            return symbolic_build(self, iterator, data_batch)
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(lambda v: local(self._distribute_strategy, v), next(it))
            break
        with self._distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_scalars_fixed(values, strategy, reduction="auto"):
        if reduction not in ("auto", "mean") or not is_multi_worker(strategy):
            return reduce_per_replica(values, strategy, reduction)

        def one(v):
            if local(strategy, v).shape.rank == 0:
                return strategy.reduce("MEAN", v, axis=None)
            return reduce_per_replica(v, strategy, reduction)
        return tf.nest.map_structure(one, values)

    reduce_scalars_fixed._xai_cxr_fixed = True
    trainer._maybe_symbolic_build = maybe_symbolic_build
    tft.reduce_per_replica = reduce_scalars_fixed


def limit_malloc_arenas(n: int = 2) -> bool:
    """Cap glibc's malloc arenas at ``n``, as ``MALLOC_ARENA_MAX=n`` would, for long-running servers: with many
    request threads glibc gives threads their own arenas and the server's RSS creeps up without a leak
    (benchmarks/api_soak.py, 4,000 requests: +22 MB per 1,000 requests in the second half by default, +0.5 with
    2 arenas). A user's own MALLOC_ARENA_MAX wins; a no-op off glibc. True when applied."""
    import ctypes
    import sys
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:                                    # not glibc (e.g. musl)
        return False
    m_arena_max = -8                                   # <malloc.h>
    return bool(libc.mallopt(m_arena_max, int(n)))


@contextmanager
def full_precision():
    """Models built inside compute in float32 (Keras's global dtype policy, restored after). A saved model is read
    this way by every reader — evaluate, the predictor, the app, the API — and the steps fitted on its outputs after
    training (temperature, detector, error level) run this way too, so that they see the numbers the readers will:
    a detector fitted on bfloat16 features told float32 features of the same films apart (ROC-AUC 0.96)."""
    import keras
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)
