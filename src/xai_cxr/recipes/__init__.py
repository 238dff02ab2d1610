"""Training recipes as files: each ``<name>.json`` here names the config fields that differ from the defaults of
``config.py`` ({"DataConfig": {...}, "ModelConfig": {...}, "TrainConfig": {...}, "about": "..."}).
``xai-cxr train --config NAME|PATH`` starts from one (flags given beside it override its values); the demo, the
notebook, ``benchmarks/accuracy.py`` and the docs read the same files.

- ``reference``: the reference design (two-stage VGG19 on ImageNet weights).
- ``cxr-res``: the best recipe measured without pretrained weights.
- ``demo``: what ``xai-cxr demo`` trains on real data (VGG19 on ImageNet weights, short stages).
- ``demo-phantoms``: what ``xai-cxr demo`` trains on the generated phantoms (cxr-small from scratch, sized for an
  older 2-core CPU).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..config import CONFIG_CLASSES, CamConfig, DataConfig, ModelConfig, TrainConfig, merged

RECIPES_DIR = Path(__file__).resolve().parent


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def recipe_path(recipe: str | Path) -> Path:
    """A recipe's file: a path to a JSON file, or the name of one of the package's recipes."""
    path = Path(recipe)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path} not found; the package's recipes: {recipe_names()}")
        return path
    if not (RECIPES_DIR / f"{recipe}.json").is_file():
        raise ValueError(f"unknown recipe {recipe!r}; choose from {recipe_names()} or give a .json file")
    return RECIPES_DIR / f"{recipe}.json"


def load_recipe(recipe: str | Path, root: str | Path | None = None, seed: int | None = None):
    """(DataConfig, ModelConfig, TrainConfig, CamConfig) of a recipe, with the data folder ``root`` and the random
    ``seed`` (data split and training) when given; the training population's ages from ``root`` unless the
    recipe names them."""
    path = recipe_path(recipe)
    try:
        raw = json.loads(path.read_text())
        configs = {name: merged(cls(), raw[name]) for name, cls in CONFIG_CLASSES.items() if name in raw}
    except (ValueError, TypeError) as exc:
        raise ValueError(f"recipe {path}: {exc}") from exc
    data = configs.get("DataConfig", DataConfig())
    train = configs.get("TrainConfig", TrainConfig())
    if root is not None:
        from ..data.population import default_population
        data = replace(data, root=str(root))
        if "population_age" not in raw.get("DataConfig", {}):
            data = replace(data, population_age=default_population(root, data.class_names))
    if seed is not None:
        data, train = replace(data, seed=seed), replace(train, seed=seed)
    return data, configs.get("ModelConfig", ModelConfig()), train, configs.get("CamConfig", CamConfig())


PHANTOM_ROOT = Path("phantoms") / "chest_xray"
DEMO_PHANTOMS_PER_CLASS = (150, 100)     # train, test per class: what the demo-phantoms recipe was measured on


def demo_configs(data_root: str | Path | None = None, seed: int = 42, allow_download: bool | None = None):
    """Configs of ``xai-cxr demo`` and a note saying what was chosen and why. With real data in ``data_root``: the
    ``demo`` recipe (VGG19, ImageNet weights fetched like Keras, short stages) — or, when the ImageNet file is not
    on disk and downloads are off, the ``cxr-res`` recipe. Otherwise the ``demo-phantoms`` recipe on phantoms made
    at its size (cxr-small, a fixed schedule sized to finish within 10 minutes on an older 2-core CPU); VGG19 only
    when its ImageNet file is already on disk, with the ``demo`` recipe's stages: the demo never downloads on
    phantoms, and VGG19 from random weights does not learn in demo time."""
    from ..data import find_data_root
    from ..data.phantom import PhantomConfig, write_phantom_dataset
    from ..models import download_allowed, imagenet_available, keras_models_dir
    from ..pipeline import has_split
    if data_root is not None and has_split(data_root):
        root, found = find_data_root(data_root)
        if not imagenet_available("vgg19") and not download_allowed(allow_download):
            data, model, train, _ = load_recipe("cxr-res", root, seed)
            return data, model, replace(train, verbose=2), "\n".join(filter(None, [
                f"data: {root}", found, f"note: VGG19's ImageNet weights are not in {keras_models_dir()} and "
                "downloads are off: training cxr-res from scratch (the cxr-res recipe, 30-minute budget) instead"]))
        data, model, train, _ = load_recipe("demo", root, seed)
        return data, model, train, "\n".join(filter(None, [f"data: {root}", found]))
    data, model, train, _ = load_recipe("demo-phantoms", PHANTOM_ROOT, seed)
    size, (n_train, n_test) = data.image_size, DEMO_PHANTOMS_PER_CLASS
    root = write_phantom_dataset(PHANTOM_ROOT, PhantomConfig(image_size=size, n_train=n_train, n_test=n_test,
                                                             seed=seed))
    sized = "sized to finish within 10 minutes on an older 2-core CPU; "
    if imagenet_available("vgg19"):
        _, model, vgg_train, _ = load_recipe("demo")
        train, sized = replace(vgg_train, seed=seed), ""
        why = f"VGG19's ImageNet weights are in {keras_models_dir()}: the demo fine-tunes VGG19 on them"
    else:
        why = (f"VGG19's ImageNet weights are not in {keras_models_dir()}; on phantoms the demo does not download "
               "them and trains the compact BatchNorm CNN 'cxr-small' (same training, evaluation and Grad-CAM code; "
               "VGG19 from random weights does not learn in demo time)")
    epochs = f"{train.stage1.epochs} + {train.stage2.epochs}" if model.weights == "imagenet" else train.stage1.epochs
    budget = f" unless training would pass {train.budget_minutes:g} minutes" if train.budget_minutes else ""
    note = (f"data: {2 * n_train} train / {2 * n_test} test synthetic phantoms at {size}px in {root} (no "
            f"chest_xray/train found)\nnote: {why}\nplan: {model.backbone}, {epochs} epochs "
            f"({train.schedule} schedule) — {sized}the same epochs on every machine{budget}")
    return data, model, train, note
