"""The machine TensorFlow runs on: quiet start-up and a one-line description of the devices.

Nothing here runs on import; the CLI and the notebook call these before their first TensorFlow import.
"""
from __future__ import annotations

import os
import platform


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
    return tf.distribute.MultiWorkerMirroredStrategy()
