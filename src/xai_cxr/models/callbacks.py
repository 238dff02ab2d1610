"""The training callbacks: an atomic best-weights checkpoint, the per-epoch training state that makes resume
exact, a wall-clock budget that stops at an epoch boundary, and a NaN guard that says what to try. Imported by
``train.train_two_stage`` (Keras is imported here)."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import keras
import numpy as np

from ..config import atomic_path, write_json_atomic


def write_state(obj: dict, path: Path) -> None:
    """Training state as JSON with the SHA-256 of its content, written atomically (temp file + rename)."""
    body = json.dumps(obj, sort_keys=True)
    write_json_atomic({"sha256": hashlib.sha256(body.encode()).hexdigest(), "state": obj}, path)


def read_state(path: Path) -> dict:
    """A state file written by ``write_state``, its checksum verified; a clear error names the file and the fix."""
    try:
        saved = json.loads(Path(path).read_text())
        body = json.dumps(saved["state"], sort_keys=True)
        ok = hashlib.sha256(body.encode()).hexdigest() == saved["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}): the training state is damaged; "
                         f"start without --resume (or delete {Path(path).parent})") from exc
    if not ok:
        raise ValueError(f"{path} fails its checksum: the training state is damaged; start without --resume "
                         f"(or delete {Path(path).parent})")
    return saved["state"]


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Save weights when ``monitor`` improves: to a temp file first, then rename, so an interrupted
    save never leaves a corrupt checkpoint behind. The best value survives a resume via ``state``."""

    def __init__(self, path, state: Path, monitor="val_loss", resume=False, save_model=None):
        super().__init__()
        self.path, self.state, self.monitor = Path(path), Path(state), monitor
        self.save_model = save_model        # the full model, when a sub-model sharing its layers is fitted
        self.best, self.best_epoch = float("inf"), None
        if resume and self.state.exists():
            saved = read_state(self.state)
            self.best, self.best_epoch = saved["best"], saved["best_epoch"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value < self.best:
            return
        try:
            with atomic_path(self.path) as tmp:
                (self.save_model or self.model).save_weights(tmp)
        except OSError as exc:                  # e.g. the disk filled up half-way: the previous best stays
            raise OSError(exc.errno, f"could not save the checkpoint {self.path} ({exc.strerror or exc}); the "
                                     f"previous best weights (epoch {self.best_epoch and self.best_epoch + 1}) are "
                                     "intact. Free disk space and rerun with --resume") from exc
        self.best, self.best_epoch = float(value), epoch
        write_state({"best": self.best, "best_epoch": epoch}, self.state)

class TrainingState(keras.callbacks.Callback):
    """Per-epoch logs plus EarlyStopping / ReduceLROnPlateau counters (``reduce_lr`` None under a cosine
    schedule), written atomically after every epoch and restored on resume (after those callbacks have
    reset themselves in on_train_begin)."""

    def __init__(self, path: Path, early_stopping, reduce_lr, resume=False):
        super().__init__()
        self.path, self.es, self.rl = Path(path), early_stopping, reduce_lr
        self.epochs = []
        self.saved = read_state(self.path) if resume and self.path.exists() else None
        if self.saved:
            print(f"resume: {self.path.name} (checksum ok): {len(self.saved['epochs'])} finished epoch(s) restored, "
                  f"early stopping at {self.saved['es_wait']} epoch(s) without improvement")

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
        write_state({"epochs": self.epochs, "es_wait": self.es.wait, "es_best": float(self.es.best), **rl}, self.path)

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


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch for a fit that is otherwise silent: ``what``, the epoch, its loss and the time left at
    the mean epoch so far."""

    def __init__(self, what: str, epochs: int):
        super().__init__()
        self.what, self.epochs = what, int(epochs)

    def on_train_begin(self, logs=None):
        self._t0 = now()

    def on_epoch_end(self, epoch, logs=None):
        spent = now() - self._t0
        left = spent / (epoch + 1) * (self.epochs - epoch - 1)
        print(f"{self.what}: epoch {epoch + 1}/{self.epochs}, loss {(logs or {}).get('loss', float('nan')):.4f}, "
              f"{spent:.0f} s, ~{left:.0f} s left", flush=True)
