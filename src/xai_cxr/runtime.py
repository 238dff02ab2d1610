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
