"""A cosine learning-rate schedule whose end can be moved, and the callback that moves it to fit a wall-clock
budget: the decay reaches its floor at the last epoch that runs, however fast the machine is, so keeping the last
epoch (``--keep last``) never keeps a high-learning-rate one."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from . import callbacks


class PlannedCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Keras's ``CosineDecay(0, total - warmup, warmup_target=peak, warmup_steps=warmup)`` with its horizon
    (``total_steps``) held in a variable: after ``plan(n)`` the rate reaches 0 at step ``n`` instead. Equal to
    Keras's schedule while the plan is unchanged (tests/test_models.py checks it)."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak, self.warmup_steps, self.planned_steps = float(peak), int(warmup_steps), int(total_steps)
        self.total = keras.Variable(float(total_steps), trainable=False, dtype="float32", name="cosine_horizon")

    def plan(self, total_steps: int) -> None:
        """End the decay at ``total_steps`` (the compiled training step reads the variable: no retracing)."""
        self.planned_steps = int(total_steps)
        self.total.assign(float(total_steps))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 0))
        decay = ops.maximum(self.total - warm, 1.0)
        t = ops.minimum(ops.maximum(step - warm, 0.0), decay)
        cosine = self.peak * 0.5 * (1.0 + ops.cos(np.pi * t / decay))
        return ops.where(step < warm, self.peak * step / max(warm, 1.0), cosine)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.planned_steps}


def plan_epochs(done: int, longest_epoch_s: float, remaining_s: float, max_epochs: int) -> int:
    """Epochs a stage runs in all, after ``done`` of them, when each next one takes as long as the longest so far
    and ``remaining_s`` seconds are left: at most ``max_epochs``, at least ``done``."""
    fits = int(max(remaining_s, 0.0) // longest_epoch_s) if longest_epoch_s > 0 else max_epochs
    return max(done, min(max_epochs, done + fits))


class BudgetPlanner(keras.callbacks.Callback):
    """Fit a cosine schedule into a wall-clock budget. After every epoch, from the longest epoch so far and the
    time left before ``deadline`` (a ``callbacks.now()`` value), re-plan how many epochs the stage runs
    (``plan_epochs``), move the schedule's end there, and stop once that many have run: the learning rate
    reaches its floor at the last epoch that runs, on a fast machine or a slow one."""

    def __init__(self, deadline: float, schedule: PlannedCosine, steps_per_epoch: int, max_epochs: int):
        super().__init__()
        self.deadline, self.schedule = deadline, schedule
        self.steps, self.max_epochs = int(steps_per_epoch), int(max_epochs)
        self.longest, self.planned, self.stopped = 0.0, int(max_epochs), False

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = callbacks.now()

    def on_epoch_end(self, epoch, logs=None):
        t = callbacks.now()
        self.longest = max(self.longest, t - self._t0)
        planned = plan_epochs(epoch + 1, self.longest, self.deadline - t, self.max_epochs)
        if planned < self.planned:
            warm = self.schedule.warmup_steps // max(self.steps, 1)
            if planned <= warm:
                print(f"wall-clock budget: only {planned} epoch(s) fit, within the {warm}-epoch warm-up: the "
                      "learning rate cannot decay; give a longer --budget-minutes")
            else:
                print(f"wall-clock budget: epochs take up to {self.longest:.0f} s, so the cosine schedule now "
                      f"ends at epoch {planned} of {self.max_epochs}")
            self.planned = planned
            self.schedule.plan(planned * self.steps)
        if self.max_epochs > epoch + 1 >= self.planned:
            self.model.stop_training = self.stopped = True
