"""Training a run's model: the concrete model config (weights fetched before any image is decoded), the saved
description (card + run configs) written before the first checkpoint, and the two-stage fit with the task's
objective and weights."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..config import CamConfig, DataConfig, ModelConfig, TrainConfig, to_json, write_json_atomic
from ..models import BACKBONES, HEAD_PREFIX, ModelCard, backbone_of, files, resolve_backbone, resolve_weights
from ..tasks import get_task
from .prepare import Prepared, datasets


def resolve_model(model_cfg: ModelConfig, data_cfg: DataConfig | None = None) -> ModelConfig:
    """The concrete model config: backbone "auto" → vgg19; with ``data_cfg``, the output sized to its classes.
    Pretrained weights are fetched *now* (downloaded like Keras when missing), so a missing file stops the run
    in seconds, before any image is decoded."""
    if data_cfg is not None:
        model_cfg = replace(model_cfg, num_classes=len(data_cfg.class_names))
    model_cfg = replace(model_cfg, backbone=resolve_backbone(model_cfg.backbone))
    resolve_weights(model_cfg.backbone, model_cfg.weights, model_cfg.allow_download)
    return model_cfg


def model_config_of(model) -> ModelConfig:
    """The ModelConfig that rebuilds ``model`` (a ``build_model`` classifier): backbone, classes, head sizes."""
    def layer(name):
        return next((l for l in model.layers if l.name == HEAD_PREFIX + name), None)
    dense, d1, d2 = layer("dense"), layer("dropout1"), layer("dropout2")
    default = ModelConfig()
    reg = getattr(dense, "kernel_regularizer", None)
    return ModelConfig(backbone=backbone_of(model), weights="none", num_classes=int(model.output_shape[-1]),
                       dense_units=int(dense.units) if dense is not None else default.dense_units,
                       dropout=(float(d1.rate),
                                float(d2.rate)) if d1 is not None and d2 is not None else default.dropout,
                       l2=float(reg.l2) if reg is not None else default.l2)


def save_description(weights_dir: str | Path, data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig,
                     cam_cfg: CamConfig = CamConfig()) -> ModelCard:
    """Write what rebuilds and uses the weights in ``weights_dir``: ``model_config.json`` (the card read by
    evaluate/explain/app/API) and ``run_config.json`` (every config of the run)."""
    card = ModelCard(model_cfg.backbone, data_cfg.image_size, tuple(data_cfg.class_names), task=data_cfg.task,
                     activation=get_task(data_cfg.task).activation, color=data_cfg.color, seed=data_cfg.seed,
                     clahe=data_cfg.clahe, geometry=data_cfg.geometry,
                     population_age=data_cfg.population_age,
                     target_layer=cam_cfg.target_layer or BACKBONES[model_cfg.backbone].target_layer,
                     dense_units=model_cfg.dense_units, dropout=tuple(model_cfg.dropout), l2=model_cfg.l2)
    card.save(weights_dir)
    write_json_atomic(json.loads(to_json(data_cfg, model_cfg, train_cfg, cam_cfg)),
                      Path(weights_dir) / files.RUN_CONFIG)
    return card


def fit(model, prep: Prepared, data_cfg: DataConfig, train_cfg: TrainConfig, weights_dir: str | Path,
        resume: bool = False, strategy=None, model_cfg: ModelConfig | None = None, cam_cfg: CamConfig = CamConfig()):
    """Two-stage training on the prepared splits with the task's objective and training weights (class weights
    from the train counts, or a multi-label task's per-label ones). Writes the model's description
    (``save_description``) before the first checkpoint, so the weights in ``weights_dir`` are never paired with
    another run's card."""
    from ..models.cache import StageFeatureCache
    from ..models.train import train_two_stage
    spec = BACKBONES[backbone_of(model)]
    Path(weights_dir).mkdir(parents=True, exist_ok=True)
    save_description(weights_dir, data_cfg, model_cfg or model_config_of(model), train_cfg, cam_cfg)
    train_ds, val_ds = datasets(prep, data_cfg, spec.preprocess)
    stage_data = None
    if train_cfg.feature_cache and data_cfg.augment is not None:
        print("note: feature cache bypassed: augmentation changes every image every epoch, so frozen "
              "features cannot be computed once")
    elif train_cfg.feature_cache:
        stage_data = StageFeatureCache(model, prep.train.images, prep.train.labels, prep.val.images,
                                       prep.val.labels, spec.preprocess, len(data_cfg.class_names),
                                       data_cfg.batch_size, data_cfg.seed,
                                       spec.finetune_from if train_cfg.stage2.epochs > 0 else None,
                                       train_cfg.feature_cache_dir)
    task = get_task(data_cfg.task)
    weights = task.training_weights(prep.train.labels, len(data_cfg.class_names))
    class_weight = weights.get("class_weight") if train_cfg.class_weighting else None
    return train_two_stage(model, train_ds, val_ds, train_cfg, weights_dir, class_weight or None,
                           spec.finetune_from, resume, stage_data, strategy, task.objective(**weights))
