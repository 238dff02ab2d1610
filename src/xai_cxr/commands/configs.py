"""From flags to configs, in one table: each training flag names the config field it sets. A flag the user gave
replaces that field; a flag left unset keeps the value of the recipe (``--config``) or of the configs' defaults,
so ``xai-cxr train --config cxr-res --limit 500`` is the recipe with one change."""
from __future__ import annotations

import sys
from dataclasses import replace

from ..config import AUGMENT_PRESETS, CamConfig, DataConfig, ModelConfig, TrainConfig
from ..tasks import TASKS


def _augment(value: str):
    return None if value == "none" else AUGMENT_PRESETS[value]


def _age(value: str):
    from ..data.population import parse_range
    return parse_range(value)


# flag dest → (config, field path[, conversion]). "stage1.epochs" is a field of a nested config.
FLAG_FIELDS: dict[str, tuple] = {
    "image_size": ("data", "image_size"), "batch_size": ("data", "batch_size"), "limit": ("data", "limit"),
    "validation": ("data", "validation"), "clahe": ("data", "clahe"), "geometry": ("data", "geometry"),
    "image_store": ("data", "image_store"), "task": ("data", "task"), "labels_csv": ("data", "labels_csv"),
    "color": ("data", "color"), "augment": ("data", "augment", _augment),
    "population_age": ("data", "population_age", _age),
    "backbone": ("model", "backbone"), "weights": ("model", "weights"),
    "epochs1": ("train", "stage1.epochs"), "epochs2": ("train", "stage2.epochs"),
    "lr": ("train", "stage1.learning_rate"), "deterministic": ("train", "deterministic"),
    "budget_minutes": ("train", "budget_minutes"), "optimizer": ("train", "optimizer"),
    "weight_decay": ("train", "weight_decay"), "schedule": ("train", "schedule"), "ema": ("train", "ema_momentum"),
    "keep": ("train", "keep"), "operating_point": ("train", "operating_point"),
    "error_level": ("train", "error_level"),
    "loss": ("train", "multilabel_loss"), "focal_gamma": ("train", "focal_gamma"),
    "focal_alpha": ("train", "focal_alpha"), "cache_dir": ("train", "feature_cache_dir"),
    "no_feature_cache": ("train", "feature_cache", lambda v: not v),
}


def _set(config, path: str, value):
    head, _, rest = path.partition(".")
    return replace(config, **{head: _set(getattr(config, head), rest, value) if rest else value})


def class_names_from_args(args, task_name: str) -> tuple[str, ...] | None:
    """--classes (folder names; 'auto' = the sub-folders of train/) where the task reads class folders
    (``Task.classes_from``: "folders") or a CSV's columns ("columns"); None when not given."""
    from ..data import detect_classes
    task = TASKS[task_name]
    if not args.classes:
        return None
    if task.classes_from == "fixed":
        raise ValueError(f"--classes does not apply to --task {task_name} (its classes are {task.class_names})")
    if args.classes == "auto" and task.classes_from == "folders":
        return detect_classes(args.data_dir)
    return tuple(c.strip() for c in args.classes.split(",") if c.strip())


def base_configs(args):
    """The starting point: the recipe of ``--config`` (a name of the package's recipes or a JSON file), else the
    configs' defaults."""
    if getattr(args, "config", None):
        from ..recipes import load_recipe
        data, model, train, _ = load_recipe(args.config)
        return data, model, train
    return DataConfig(), ModelConfig(), TrainConfig()


def configs_from_args(args, data: DataConfig, model: ModelConfig, train: TrainConfig):
    """The run's configs: ``data``, ``model``, ``train`` with every flag the user set applied (``FLAG_FIELDS``),
    the data folder, the random seed (split and training), the download switch, and the CamConfig."""
    from ..data import find_data_root
    from ..data.population import default_population
    root, note = find_data_root(args.data_dir or data.root)
    if note:
        print("note:", note)
    args.data_dir = str(root)
    configs = {"data": replace(data, root=str(root), seed=args.seed), "model": model,
               "train": replace(train, seed=args.seed, verbose=1 if sys.stdout.isatty() else 2)}   # bars on a tty
    for dest, (which, path, *convert) in FLAG_FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            configs[which] = _set(configs[which], path, convert[0](value) if convert else value)
    data = configs["data"]
    classes = class_names_from_args(args, data.task)
    if classes is None and data.task != DataConfig.task and data.class_names == DataConfig.class_names:
        classes = TASKS[data.task].class_names                 # another task: its own classes
    if classes is not None:
        data = replace(data, class_names=classes)
    if getattr(args, "population_age", None) is None and data.population_age is None:
        data = replace(data, population_age=default_population(root, data.class_names))
    model = replace(configs["model"], allow_download=not args.no_download)
    return data, model, configs["train"], cam_config_from_args(args)


def cam_config_from_args(args) -> CamConfig:
    """The CAM flags (--cam, --target-layer, --top-fraction) as a CamConfig."""
    return CamConfig(method=args.cam, target_layer=args.target_layer, top_fraction=args.top_fraction)
