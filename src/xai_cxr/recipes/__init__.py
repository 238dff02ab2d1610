"""Training recipes as files: each ``<name>.json`` here names the config fields that differ from the defaults of
``config.py`` ({"DataConfig": {...}, "ModelConfig": {...}, "TrainConfig": {...}, "about": "..."}).
``xai-cxr train --config NAME|PATH`` starts from one (flags given beside it override its values); the demo, the
notebook, ``benchmarks/accuracy.py`` and the docs read the same files.

- ``reference``: the reference design (two-stage VGG19 on ImageNet weights).
- ``cxr-res``: the best recipe measured without pretrained weights.
- ``demo``: what ``xai-cxr demo`` trains.
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


def demo_configs(data_root: str | Path | None = None, seed: int = 42, allow_download: bool | None = None):
    """Configs of ``xai-cxr demo`` and a note saying what was chosen. With real data in ``data_root``: the
    ``demo`` recipe (VGG19, ImageNet weights fetched like Keras, short stages) — or, when the ImageNet file is not
    on disk and downloads are off, the ``cxr-res`` recipe. Otherwise phantoms at their own size (128 px, to fit
    ≤ 10 minutes on 2 CPU cores) and VGG19 only when its ImageNet file is already on disk — else the compact
    CNN, said in the note: the demo never downloads on phantoms, and VGG19 from random weights does not learn
    in demo time."""
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
    pcfg = PhantomConfig(seed=seed)
    root = write_phantom_dataset(PHANTOM_ROOT, pcfg)
    data, model, train, _ = load_recipe("demo", root, seed)
    data = replace(data, image_size=pcfg.image_size)
    note = (f"data: {2 * pcfg.n_train} train / {2 * pcfg.n_test} test synthetic phantoms at "
            f"{pcfg.image_size}px in {root} (no chest_xray/train found; the real input size is 256px)")
    if not imagenet_available("vgg19"):
        model = replace(model, backbone="cxr-small", weights="none")
        note += (f"\nnote: VGG19's ImageNet weights are not in {keras_models_dir()}; on phantoms the demo does "
                 "not download them and uses the compact BatchNorm CNN 'cxr-small' instead (same training, "
                 "evaluation and Grad-CAM code; VGG19 from random weights does not learn in demo time)")
    return data, model, train, note
