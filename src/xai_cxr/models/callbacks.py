"""The training callbacks: an atomic best-weights checkpoint, the per-epoch training state that makes resume
exact, a wall-clock budget that stops at an epoch boundary, and a NaN guard that says what to try. Imported by ``train.train_two_stage`` (Keras is imported here)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import keras
import numpy as np

from ..config import write_json_atomic


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Save weights when ``monitor`` improves: to a temp file first, then rename, so an interrupted
    save never leaves a corrupt checkpoint behind. The best value survives a resume via ``state``."""

    def __init__(self, path, state: Path, monitor="val_loss", resume=False, save_model=None):
        super().__init__()
        self.path, self.state, self.monitor = Path(path), Path(state), monitor
        self.save_model = save_model        # the full model, when a sub-model sharing its layers is fitted
        self.best, self.best_epoch = float("inf"), None
        if resume and self.state.exists():
            saved = json.loads(self.state.read_text())
            self.best, self.best_epoch = saved["best"], saved["best_epoch"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value < self.best:
            return
        self.best, self.best_epoch = float(value), epoch
        tmp = self.path.with_name(self.path.name.replace(".weights.h5", ".tmp.weights.h5"))
        (self.save_model or self.model).save_weights(tmp)
        os.replace(tmp, self.path)
        write_json_atomic({"best": self.best, "best_epoch": epoch}, self.state)

class TrainingState(keras.callbacks.Callback):
    """Per-epoch logs plus EarlyStopping / ReduceLROnPlateau counters (``reduce_lr`` None under a cosine
    schedule), written atomically after every epoch and restored on resume (after those callbacks have
    reset themselves in on_train_begin)."""

    def __init__(self, path: Path, early_stopping, reduce_lr, resume=False):
        super().__init__()
        self.path, self.es, self.rl = Path(path), early_stopping, reduce_lr
        self.epochs = []
        self.saved = json.loads(self.path.read_text()) if resume and self.path.exists() else None

    def on_train_begin(self, logs=None):
        if self.saved:
            self.epochs = self.saved["epochs"]
            self.es.wait, self.es.best = self.saved["es_wait"], self.saved["es_best"]
            if self.rl is not None:
                self.rl.wait, self.rl.best = self.saved["rl_wait"], self.saved["rl_best"]
                self.rl.cooldown_counter = self.saved["rl_cooldown"]

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        entry = {k: float(v) for k, v in (logs or {}).items()}
        entry["epoch_seconds"] = time.perf_counter() - getattr(self, "_t0", time.perf_counter())
        self.epochs.append(entry)
        rl = {} if self.rl is None else {"rl_wait": self.rl.wait, "rl_best": float(self.rl.best),
                                         "rl_cooldown": self.rl.cooldown_counter}
        write_json_atomic({"epochs": self.epochs, "es_wait": self.es.wait, "es_best": float(self.es.best), **rl},
                          self.path)

    def history(self):
        return {k: [e[k] for e in self.epochs if k in e] for k in (self.epochs[0] if self.epochs else {})}

def now() -> float:
    """The training clock (monotonic seconds); one function so tests can replace it."""
    return time.monotonic()


class WallClockBudget(keras.callbacks.Callback):
    """Stop after the last epoch that fits before ``deadline`` (a ``now()`` value): after each epoch, training
    stops when one more epoch as long as the longest so far would end past the deadline. The best-epoch
    checkpoint then restores the best weights, as after early stopping."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline, self.longest, self.stopped = deadline, 0.0, False

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = now()

    def on_epoch_end(self, epoch, logs=None):
        t = now()
        self.longest = max(self.longest, t - self._t0)
        if t + self.longest > self.deadline:
            self.model.stop_training = self.stopped = True
            print(f"wall-clock budget: stopping after epoch {epoch + 1} (another would end "
                  f"{t + self.longest - self.deadline:.0f} s past the budget)")


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that says what happened and what to try."""

    def on_batch_end(self, batch, logs=None):
        super().on_batch_end(batch, logs)
        if self.model.stop_training and logs and not np.isfinite(logs.get("loss", 0.0)):
            print(f"training stopped: the loss became {logs.get('loss')} at batch {batch}. Lower the "
                  "learning rate, check the input images (all-constant or corrupt), or run with --device cpu "
                  "to rule out a GPU/Metal numerical problem.")
