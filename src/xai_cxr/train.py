"""Two-stage training (the seed's protocol): stage 1 trains the head on a frozen backbone, stage 2
unfreezes the backbone from ``block5_conv1`` on at a small learning rate with gradient clipping.

Each stage gets fresh EarlyStopping / ReduceLROnPlateau / checkpoint callbacks; after each stage the
model holds that stage's best weights (lowest validation loss), which are also on disk.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .config import StageConfig, TrainConfig
from .models import set_trainable

log = logging.getLogger(__name__)


def _atomic_checkpoint_cls():
    import keras

    class AtomicBestCheckpoint(keras.callbacks.Callback):
        """Save weights when ``monitor`` improves: to a temp file first, then rename, so an interrupted
        save never leaves a corrupt checkpoint behind."""

        def __init__(self, path, monitor="val_loss"):
            super().__init__()
            self.path, self.monitor, self.best = Path(path), monitor, float("inf")
            self.best_epoch = None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(self.monitor)
            if value is None or not value < self.best:
                return
            self.best, self.best_epoch = float(value), epoch
            tmp = self.path.with_name(self.path.name.replace(".weights.h5", ".tmp.weights.h5"))
            self.model.save_weights(tmp)
            os.replace(tmp, self.path)

    return AtomicBestCheckpoint


def compile_for_stage(model, stage: StageConfig, cfg: TrainConfig) -> None:
    import keras
    opt = keras.optimizers.Adam(learning_rate=stage.learning_rate, clipnorm=stage.clipnorm)
    model.compile(optimizer=opt,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                  metrics=["accuracy", keras.metrics.AUC(name="auc")])


def stages_for(cfg: TrainConfig, finetune_from: str | None) -> list[tuple[str, StageConfig]]:
    """The stages to run. A backbone without pretrained weights (``finetune_from`` None) trains whole in
    one stage: freezing random features teaches nothing."""
    if finetune_from is None:
        from dataclasses import replace
        return [("stage1", replace(cfg.stage1, train_backbone=True))]
    from dataclasses import replace
    s2 = cfg.stage2 if cfg.stage2.unfreeze_from else replace(cfg.stage2, unfreeze_from=finetune_from)
    return [("stage1", cfg.stage1), ("stage2", s2)]


def train_two_stage(model, train_ds, val_ds, cfg: TrainConfig, out_dir: str | Path,
                    class_weight: dict[int, float] | None = None, finetune_from: str | None = "block5_conv1"):
    """Train ``model`` in place; returns the history {stage: {metric: [per-epoch values]}}.

    Best weights of the last stage are at ``out_dir/model.weights.h5``; ``history.json`` beside them.
    """
    import keras
    keras.utils.set_random_seed(cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "model.weights.h5"
    Checkpoint = _atomic_checkpoint_cls()
    history: dict[str, dict[str, list[float]]] = {}
    for name, stage in stages_for(cfg, finetune_from):
        if stage.epochs <= 0:
            continue
        set_trainable(model, train_backbone=stage.train_backbone, unfreeze_from=stage.unfreeze_from)
        compile_for_stage(model, stage, cfg)
        n_train = sum(w.shape.num_elements() for w in model.trainable_weights)
        log.info("%s: %d epochs, lr %g, %d trainable parameters", name, stage.epochs, stage.learning_rate, n_train)
        print(f"[{name}] lr={stage.learning_rate:g} clipnorm={stage.clipnorm} epochs<={stage.epochs} "
              f"trainable params={n_train:,}")
        ckpt = Checkpoint(ckpt_path)
        callbacks = [
            ckpt,
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=cfg.reduce_lr_factor,
                                              patience=cfg.reduce_lr_patience, min_lr=cfg.min_lr),
            keras.callbacks.TerminateOnNaN(),
        ]
        h = model.fit(train_ds, validation_data=val_ds, epochs=stage.epochs, class_weight=class_weight,
                      callbacks=callbacks, verbose=cfg.verbose, shuffle=False)
        history[name] = {k: [float(v) for v in vals] for k, vals in h.history.items()}
        if ckpt.best_epoch is not None:
            model.load_weights(ckpt_path)
            print(f"[{name}] best epoch {ckpt.best_epoch + 1} (val_loss {ckpt.best:.4f}) → {ckpt_path}")
    tmp = out_dir / "history.json.tmp"
    tmp.write_text(json.dumps(history, indent=2))
    os.replace(tmp, out_dir / "history.json")
    return history


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
