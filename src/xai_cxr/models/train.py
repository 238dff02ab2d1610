"""Two-stage training (the reference design's protocol): stage 1 trains the head on a frozen backbone, stage 2
unfreezes the backbone from ``block5_conv1`` on at a small learning rate with gradient clipping.

Each stage gets fresh EarlyStopping / ReduceLROnPlateau / checkpoint callbacks; after each stage the
model holds that stage's best weights (lowest validation loss), which are also on disk.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import StageConfig, TrainConfig, atomic_path, write_json_atomic
from . import files
from .classifier import set_trainable


def ensure_free_space(folder: Path, needed_bytes: int) -> None:
    """Stop before training when ``folder``'s disk cannot hold the checkpoints (better now than mid-run)."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OSError(f"only {free / 2**20:.0f} MiB free on the disk of {folder}; training needs about "
                      f"{needed_bytes / 2**20:.0f} MiB for checkpoints and resume state. Free space or choose "
                      "another --weights-dir.")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow (keras.utils.set_random_seed) and, by default, make TensorFlow
    ops deterministic, so the same seed on the same machine gives the same weights and metrics."""
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def set_precision(policy: str = "float32") -> None:
    """Keras global dtype policy for models built afterwards. mixed_float16 pays on CUDA GPUs with tensor
    cores, mixed_bfloat16 on CPUs with AVX512-BF16/AMX (benchmarks/README.md has what we measured); the
    classifier's output layer stays float32 either way."""
    import keras
    if policy not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {policy!r}")
    keras.mixed_precision.set_global_policy(policy)


def distribution_strategy(devices: list[str] | None = None):
    """``MirroredStrategy`` over ``devices``, or over all GPUs when several are visible; otherwise the
    default (single-device) strategy. Several machines: ``xai-cxr train`` builds a
    ``MultiWorkerMirroredStrategy`` itself when TF_CONFIG lists several workers (``runtime.multi_worker_strategy``)
    and passes it to ``pipeline.run(..., strategy=)``."""
    import tensorflow as tf
    if devices:
        return tf.distribute.MirroredStrategy(devices)
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def compile_for_stage(model, stage: StageConfig, cfg: TrainConfig, strategy=None, objective=None,
                      steps_per_epoch: int | None = None) -> None:
    import contextlib
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        _compile(model, stage, cfg, objective, steps_per_epoch)


def learning_rate(stage: StageConfig, cfg: TrainConfig, steps_per_epoch: int | None = None):
    """The stage's learning rate: a number (the reference design; ReduceLROnPlateau lowers it), or with
    ``schedule="cosine"`` a linear warm-up over ``warmup_epochs`` to ``stage.learning_rate``, then a cosine
    decay to 0 at the stage's last epoch (Loshchilov & Hutter 2017; Goyal et al. 2017 for the warm-up). The cosine
    schedule's horizon can be shortened while training (``PlannedCosine.plan``): a wall-clock budget does so."""
    if cfg.schedule == "plateau":
        return stage.learning_rate
    if cfg.schedule != "cosine" or not steps_per_epoch:
        raise ValueError(f"schedule {cfg.schedule!r} needs 'plateau' or 'cosine' and a known number of steps "
                         f"per epoch (got {steps_per_epoch})")
    from .schedule import PlannedCosine
    warmup = min(cfg.warmup_epochs, max(stage.epochs - 1, 0)) * steps_per_epoch
    return PlannedCosine(stage.learning_rate, warmup, stage.epochs * steps_per_epoch)


def make_optimizer(stage: StageConfig, cfg: TrainConfig, steps_per_epoch: int | None = None):
    """Adam (the reference design) or AdamW with decoupled weight decay, with the stage's clipnorm and learning rate."""
    import keras
    lr = learning_rate(stage, cfg, steps_per_epoch)
    ema = {"use_ema": True, "ema_momentum": cfg.ema_momentum} if cfg.ema_momentum else {}
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay, clipnorm=stage.clipnorm, **ema)
    if cfg.optimizer != "adam":
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adam or adamw")
    return keras.optimizers.Adam(learning_rate=lr, clipnorm=stage.clipnorm, **ema)


def weighted_bce(pos_weight):
    """Binary cross-entropy with per-label positive weights (negatives / positives in the train split)."""
    from keras import ops
    w = ops.convert_to_tensor(np.asarray(pos_weight, np.float32))

    def loss(y_true, y_pred):
        p = ops.clip(y_pred, 1e-7, 1 - 1e-7)
        return -ops.mean(w * y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p), axis=-1)
    return loss


def categorical_objective(cfg: TrainConfig):
    """The single-label objective (softmax tasks): categorical cross-entropy with label smoothing, accuracy and
    AUC. An objective is a callable ``TrainConfig -> (loss, metrics)``, called inside the strategy's scope;
    a task supplies its own (``tasks.Task.objective``)."""
    import keras
    return (keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
            ["accuracy", keras.metrics.AUC(name="auc")])


def _compile(model, stage: StageConfig, cfg: TrainConfig, objective=None, steps_per_epoch: int | None = None) -> None:
    """The optimizer + the task's objective (default: ``categorical_objective``)."""
    loss, metrics = (objective or categorical_objective)(cfg)
    model.compile(optimizer=make_optimizer(stage, cfg, steps_per_epoch), loss=loss, metrics=metrics)


def stages_for(cfg: TrainConfig, finetune_from: str | None) -> list[tuple[str, StageConfig]]:
    """The stages to run. A backbone without pretrained weights (``finetune_from`` None) trains whole in
    one stage: freezing random features teaches nothing."""
    if finetune_from is None:
        return [("stage1", replace(cfg.stage1, train_backbone=True))]
    s2 = cfg.stage2 if cfg.stage2.unfreeze_from else replace(cfg.stage2, unfreeze_from=finetune_from)
    return [("stage1", cfg.stage1), ("stage2", s2)]


def train_two_stage(model, train_ds, val_ds, cfg: TrainConfig, out_dir: str | Path,
                    class_weight: dict[int, float] | None = None, finetune_from: str | None = "block5_conv1",
                    resume: bool = False, stage_data=None, strategy=None, objective=None):
    """Train ``model`` in place; returns the history {stage: {metric: [per-epoch values]}}.

    Best weights of the last stage are at ``out_dir/model.weights.h5``; ``history.json`` beside them.
    Training state goes to ``out_dir/train_state/`` after every epoch; ``resume=True`` continues a killed
    run from its last finished epoch of the right stage (weights, optimizer, learning rate, callbacks).
    ``stage_data(stage)`` may return (model to fit, train ds, val ds) for a stage — a sub-model sharing
    ``model``'s layers on cached features (see ``cache.py``) — or None for the plain path.
    ``strategy``: the ``tf.distribute`` strategy ``model`` was built under (optimizers are made in its scope).
    ``objective``: the task's loss and metrics (``tasks.Task.objective``); None = categorical cross-entropy.
    """
    seed_everything(cfg.seed, cfg.deterministic)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_dir = out_dir / "train_state"
    if not resume and state_dir.exists():
        shutil.rmtree(state_dir)                  # a fresh run never picks up an old run's state
    state_dir.mkdir(exist_ok=True)
    # best weights + end-of-stage weights + two backups with Adam's two moments, float32, plus slack
    ensure_free_space(out_dir, 4 * model.count_params() * 8 + 50 * 2**20)
    ckpt_path = out_dir / files.WEIGHTS
    from . import callbacks
    from .callbacks import read_state, write_state
    deadline = None if cfg.budget_minutes is None else callbacks.now() + 60 * cfg.budget_minutes
    history: dict[str, dict[str, list[float]]] = {}
    for name, stage in stages_for(cfg, finetune_from):
        if stage.epochs <= 0:
            continue
        if history and deadline is not None and callbacks.now() >= deadline:     # the first stage always runs
            print(f"[{name}] skipped: the {cfg.budget_minutes:g}-minute training budget is spent")
            break
        done = state_dir / f"{name}.done.json"
        if resume and done.exists():
            history[name] = read_state(done)["history"]
            model.load_weights(state_dir / f"{name}.weights.h5")
            print(f"[{name}] finished in an earlier run; continuing after it")
            continue
        set_trainable(model, train_backbone=stage.train_backbone, unfreeze_from=stage.unfreeze_from)
        cached = stage_data(stage) if stage_data else None
        fit_model, fit_train, fit_val = cached or (model, train_ds, val_ds)
        compile_for_stage(fit_model, stage, cfg, strategy, objective, _steps(fit_train))
        history[name] = _fit_stage(model, fit_model, fit_train, fit_val, name, stage, cfg, state_dir, ckpt_path,
                                   class_weight, resume, deadline)
        with atomic_path(state_dir / f"{name}.weights.h5") as tmp:
            model.save_weights(tmp)
        write_state({"history": history[name]}, done)
    write_json_atomic(history, out_dir / files.HISTORY)
    return history


def _steps(dataset) -> int | None:
    """Batches per epoch of a finite tf.data dataset (None when unknown)."""
    n = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else -1
    return n if n > 0 else None


def _fit_stage(model, fit_model, train_ds, val_ds, name: str, stage: StageConfig, cfg: TrainConfig,
               state_dir: Path, ckpt_path: Path, class_weight, resume: bool,
               deadline: float | None = None) -> dict[str, list[float]]:
    """One stage's ``fit`` with fresh callbacks (best checkpoint, early stopping, LR schedule, NaN guard,
    resumable state, the wall-clock budget); leaves ``model`` at the stage's best epoch and returns the
    stage's history."""
    import keras

    from .callbacks import AtomicBestCheckpoint, NaNGuard, TrainingState, WallClockBudget
    n_train = sum(w.shape.num_elements() for w in fit_model.trainable_weights)
    print(f"[{name}] lr={stage.learning_rate:g} clipnorm={stage.clipnorm} epochs<={stage.epochs} "
          f"trainable params={n_train:,}")
    ckpt = AtomicBestCheckpoint(ckpt_path, state_dir / f"{name}.best.json", resume=resume, save_model=model)
    # a cosine schedule runs to its end (its low-learning-rate epochs are the point); early stopping would cut it
    patience = cfg.early_stopping_patience if cfg.schedule == "plateau" else stage.epochs
    es = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)
    rl = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=cfg.reduce_lr_factor,
                                           patience=cfg.reduce_lr_patience, min_lr=cfg.min_lr)
    plateau = [rl] if cfg.schedule == "plateau" else []        # a cosine schedule owns the learning rate
    state = TrainingState(state_dir / f"{name}.state.json", es, plateau[0] if plateau else None, resume=resume)
    # BackupAndRestore restores weights, optimizer state (incl. learning rate) and the epoch after a kill
    backup = keras.callbacks.BackupAndRestore(state_dir / name, double_checkpoint=True, delete_checkpoint=False)
    schedule = getattr(fit_model.optimizer, "_learning_rate", None)
    if deadline is None:
        budget = []
    elif hasattr(schedule, "plan"):     # a cosine schedule: its end is moved to the last epoch that fits
        from .schedule import BudgetPlanner
        budget = [BudgetPlanner(deadline, schedule, _steps(train_ds) or 1, stage.epochs)]
    else:
        budget = [WallClockBudget(deadline)]
    # with an EMA the averaged weights are swapped in for validation and at each epoch's end, so the checkpoint
    # after it keeps the average; the backup before it keeps the live weights
    ema = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if cfg.ema_momentum else []
    fit_model.fit(train_ds, validation_data=val_ds, epochs=stage.epochs, class_weight=class_weight,
                  callbacks=[backup, *ema, ckpt, es, *plateau, NaNGuard(), state, *budget], verbose=cfg.verbose,
                  shuffle=False)
    if cfg.keep == "last":              # the live weights of the final epoch replace the best epoch's file
        with atomic_path(ckpt_path) as tmp:
            model.save_weights(tmp)
        best = f"; the best holdout epoch was {ckpt.best_epoch + 1}" if ckpt.best_epoch is not None else ""
        print(f"[{name}] kept the last epoch ({len(state.history().get('loss', []))}){best} → {ckpt_path}")
    elif ckpt.best_epoch is not None:
        model.load_weights(ckpt_path)
        print(f"[{name}] best epoch {ckpt.best_epoch + 1} (val_loss {ckpt.best:.4f}) → {ckpt_path}")
    return state.history()


def plot_history(history: dict):
    """Loss and accuracy per epoch over both stages, with the stage boundary marked."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        offset = 0
        for stage, h in history.items():
            epochs = range(offset + 1, offset + len(h.get(metric, [])) + 1)
            ax.plot(epochs, h.get(metric, []), "o-", label=f"{stage} train")
            ax.plot(epochs, h.get("val_" + metric, []), "s--", label=f"{stage} val")
            offset += len(h.get(metric, []))
            ax.axvline(offset + 0.5, color="gray", lw=0.5)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
