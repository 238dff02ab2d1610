"""Every CLI flag does what it says, checked where it acts: the configs ``xai-cxr train`` builds from its flags
(milliseconds, nothing trained), the recipe files and ``--config``, and — for what only a run can show — one small
training run with an operating point."""
import json

import pytest

from xai_cxr.cli import build_parser, main
from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset

TINY = ["--backbone", "cxr-small", "--weights", "none", "--image-size", "32", "--epochs1", "1", "--batch-size", "4",
        "--device", "cpu"]


def _train_configs(tmp_path, *flags):
    """The configs `xai-cxr train` would run with these flags (parsed and mapped, nothing trained)."""
    from xai_cxr.commands.configs import base_configs, configs_from_args
    args = build_parser().parse_args(["train", "--data-dir", str(tmp_path), *flags])
    return configs_from_args(args, *base_configs(args))


# flag(s) → (config index 0 data / 1 model / 2 train, field path, expected value): each value differs from the default
FLAG_CASES = [
    (["--image-size", "96"], 0, "image_size", 96),
    (["--batch-size", "7"], 0, "batch_size", 7),
    (["--limit", "11"], 0, "limit", 11),
    (["--validation", "holdout:0.2"], 0, "validation", "holdout:0.2"),
    (["--clahe"], 0, "clahe", True),
    (["--geometry", "crop"], 0, "geometry", "crop"),
    (["--image-store", "store"], 0, "image_store", "store"),
    (["--task", "subtype"], 0, "class_names", ("NORMAL", "BACTERIA", "VIRUS")),
    (["--task", "multilabel", "--labels-csv", "x.csv"], 0, "labels_csv", "x.csv"),
    (["--color"], 0, "color", True),
    (["--augment", "none"], 0, "augment", None),
    (["--population-age", "18-90"], 0, "population_age", (18.0, 90.0)),
    (["--classes", "cat,dog"], 0, "class_names", ("cat", "dog")),
    (["--seed", "5"], 0, "seed", 5),
    (["--seed", "5"], 2, "seed", 5),
    (["--backbone", "cxr-res"], 1, "backbone", "cxr-res"),
    (["--weights", "none"], 1, "weights", "none"),
    (["--epochs1", "3"], 2, "stage1.epochs", 3),
    (["--epochs2", "2"], 2, "stage2.epochs", 2),
    (["--lr", "0.002"], 2, "stage1.learning_rate", 0.002),
    (["--no-deterministic"], 2, "deterministic", False),
    (["--budget-minutes", "12"], 2, "budget_minutes", 12.0),
    (["--optimizer", "adamw"], 2, "optimizer", "adamw"),
    (["--weight-decay", "0.01"], 2, "weight_decay", 0.01),
    (["--schedule", "cosine"], 2, "schedule", "cosine"),
    (["--ema", "0.99"], 2, "ema_momentum", 0.99),
    (["--keep", "last"], 2, "keep", "last"),
    (["--operating-point", "youden"], 2, "operating_point", "youden"),
    (["--error-level", "0.1"], 2, "error_level", 0.1),
    (["--loss", "bce"], 2, "multilabel_loss", "bce"),
    (["--focal-gamma", "1.5"], 2, "focal_gamma", 1.5),
    (["--focal-alpha", "0.5"], 2, "focal_alpha", 0.5),
    (["--cache-dir", "c"], 2, "feature_cache_dir", "c"),
    (["--no-feature-cache"], 2, "feature_cache", False),
]


def _field(config, path):
    for part in path.split("."):
        config = getattr(config, part)
    return config


@pytest.mark.parametrize("flags, which, path, expected", FLAG_CASES, ids=[" ".join(c[0]) for c in FLAG_CASES])
def test_each_training_flag_sets_its_config_field(tmp_path, flags, which, path, expected):
    default = _field(_train_configs(tmp_path)[which], path)
    assert default != expected                                      # the case can fail
    assert _field(_train_configs(tmp_path, *flags)[which], path) == expected


# flags a run reads outside the three configs (where the weights go, tracking, resuming, the device...)
RUNTIME_FLAGS = {"config", "data_dir", "bbox_csv", "mlflow", "mlflow_store", "resume", "no_download", "classes",
                 "seed"}


def test_every_training_flag_is_tested_above_or_is_a_runtime_setting():
    """A new flag in the "training" group needs a case in FLAG_CASES (or a reason to be in RUNTIME_FLAGS)."""
    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" train"))
    group = next(g for g in train._action_groups if g.title == "training")
    dests = {a.dest for a in group._group_actions}
    tested = {flag.lstrip("-").replace("-", "_").removeprefix("no_") for case in FLAG_CASES for flag in case[0]
              if flag.startswith("--")}
    missing = sorted(d for d in dests - RUNTIME_FLAGS if d.removeprefix("no_") not in tested)
    assert not missing, f"training flags without a test: {missing}"


def test_train_defaults_to_squash_with_the_width_jitter_and_the_flags_change_them(tmp_path):
    from xai_cxr.config import AUGMENT_PRESETS
    data = _train_configs(tmp_path)[0]
    assert data.geometry == "squash" and data.augment == AUGMENT_PRESETS["aspect"] and data.augment.aspect == 0.3
    data = _train_configs(tmp_path, "--geometry", "pad", "--augment", "none")[0]
    assert data.geometry == "pad" and data.augment is None
    assert _train_configs(tmp_path, "--augment")[0].augment == AUGMENT_PRESETS["standard"]


def test_config_starts_from_the_recipe_file_and_given_flags_override_it(tmp_path):
    """`--config cxr-res` = the values written in src/xai_cxr/recipes/cxr-res.json (read here with json, not with
    the loader); a flag given beside it wins, a flag left out keeps the recipe's value."""
    from xai_cxr.recipes import RECIPES_DIR
    recipe = json.loads((RECIPES_DIR / "cxr-res.json").read_text())
    d, m, t, _ = _train_configs(tmp_path, "--config", "cxr-res")
    assert (d.image_size, d.validation, d.clahe, d.augment.aspect) == (
        recipe["DataConfig"]["image_size"], recipe["DataConfig"]["validation"], recipe["DataConfig"]["clahe"], 0.3)
    assert (m.backbone, m.weights) == (recipe["ModelConfig"]["backbone"], recipe["ModelConfig"]["weights"])
    assert (t.optimizer, t.schedule, t.keep, t.budget_minutes, t.stage1.epochs, t.stage1.learning_rate) == (
        "adamw", "cosine", "last", 30.0, recipe["TrainConfig"]["stage1"]["epochs"], 1e-3)
    d, m, t, _ = _train_configs(tmp_path, "--config", "cxr-res", "--image-size", "128", "--optimizer", "adam",
                                "--epochs1", "4", "--augment", "strong")
    assert (d.image_size, t.optimizer, t.stage1.epochs, d.augment.gamma) == (128, "adam", 4, 0.4)
    assert (d.clahe, t.schedule, t.stage1.learning_rate, m.backbone) == (True, "cosine", 1e-3, "cxr-res")


def test_config_accepts_a_json_file_and_names_an_unknown_field(tmp_path):
    own = tmp_path / "mine.json"
    own.write_text(json.dumps({"ModelConfig": {"backbone": "cxr-small", "weights": "none"},
                               "TrainConfig": {"stage1": {"epochs": 3}}}))
    _, m, t, _ = _train_configs(tmp_path, "--config", str(own))
    assert (m.backbone, t.stage1.epochs, t.stage1.learning_rate) == ("cxr-small", 3, 3e-4)
    own.write_text(json.dumps({"TrainConfig": {"epoch": 3}}))
    with pytest.raises(ValueError, match=r"mine.json.*TrainConfig has no field\(s\) \['epoch'\]"):
        _train_configs(tmp_path, "--config", str(own))
    with pytest.raises(ValueError, match="unknown recipe 'nope'.*cxr-res"):
        _train_configs(tmp_path, "--config", "nope")


def test_reference_recipe_is_the_reference_design():
    """The reference design as the guide states it: VGG19 on ImageNet weights, head at 3e-4 for 7 epochs, then
    block5_conv1 onwards at 1e-5 with clipnorm for up to 14, 256 px."""
    from xai_cxr.recipes import load_recipe
    data, model, train, _ = load_recipe("reference")
    assert (model.backbone, model.weights, data.image_size) == ("vgg19", "imagenet", 256)
    assert (train.stage1.epochs, train.stage1.learning_rate) == (7, 3e-4)
    assert (train.stage2.epochs, train.stage2.learning_rate, train.stage2.unfreeze_from, train.stage2.clipnorm) == (
        14, 1e-5, "block5_conv1", 1.0)


def test_precision_flag_reaches_keras_before_the_command_runs(monkeypatch):
    import keras

    import xai_cxr.commands as commands
    seen = {}
    monkeypatch.setattr(commands, "cmd_train",
                        lambda args: seen.update(policy=keras.mixed_precision.global_policy().name))
    try:
        assert main(["train", "--precision", "mixed_bfloat16", "--device", "cpu"]) == 0
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert seen["policy"] == "mixed_bfloat16"


def test_limit_and_validation_val_reach_the_decoded_splits(tmp_path):
    from xai_cxr.pipeline import prepare_data
    root = write_phantom_dataset(tmp_path / "d", PhantomConfig(image_size=32, n_train=8, n_test=3, n_val=2))
    data = _train_configs(root, "--limit", "6", "--validation", "val", "--image-size", "32")[0]
    prep = prepare_data(data, progress=False)
    assert (len(prep.train.images), len(prep.val.images), len(prep.test.images)) == (6, 4, 6)
    assert prep.val.manifest.path.str.contains("/val/").all()


def test_phantoms_command_writes_the_counts_asked_for(tmp_path):
    from xai_cxr.data import scan_dataset
    assert main(["phantoms", "--out", str(tmp_path / "p"), "--image-size", "32", "--n-train", "3", "--n-test", "2",
                 "--n-val", "1"]) == 0
    counts = scan_dataset(tmp_path / "p").groupby("split").size().to_dict()
    assert counts == {"train": 6, "test": 4, "val": 2}


@pytest.mark.slow
def test_cache_dir_keeps_frozen_features_on_disk_and_reuses_them(standin_keras_home, tmp_path, monkeypatch, capsys):
    home, _, _ = standin_keras_home
    monkeypatch.setenv("KERAS_HOME", str(home))
    root = write_phantom_dataset(tmp_path / "d", PhantomConfig(image_size=32, n_train=4, n_test=2))
    args = ["train", "--data-dir", str(root), "--image-size", "32", "--epochs1", "1", "--epochs2", "0",
            "--batch-size", "4", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
            "--weights-dir", str(tmp_path / "w"), "--results-dir", str(tmp_path / "r")]
    assert main(args) == 0                                   # the default width jitter: no frozen features to cache
    assert "feature cache bypassed" in capsys.readouterr().out and not (tmp_path / "cache").exists()
    args += ["--augment", "none"]                            # without augmentation the cache is used
    assert main(args) == 0
    entries = sorted(p.parent.name for p in (tmp_path / "cache").rglob("features.npy"))
    assert entries, "no features written to --cache-dir"
    assert main(args) == 0                                   # a second run finds the same keyed entries
    assert sorted(p.parent.name for p in (tmp_path / "cache").rglob("features.npy")) == entries


def test_operating_point_is_chosen_on_validation_stored_in_the_card_and_evaluate_agrees(tmp_path, capsys):
    """--operating-point picks the threshold on the holdout's calibrated probabilities (recomputed here from the
    saved model and temperature), the card keeps it, and `xai-cxr evaluate` at the card's threshold reproduces the
    training run's test metrics."""
    from xai_cxr.config import DataConfig
    from xai_cxr.evaluate import operating_threshold
    from xai_cxr.models import ModelFolder
    from xai_cxr.models.calibration import apply_temperature
    from xai_cxr.models.predict import predict_images
    from xai_cxr.pipeline import prepare_data
    root = write_phantom_dataset(tmp_path / "d", PhantomConfig(image_size=32, n_train=16, n_test=6))
    w, r = tmp_path / "w", tmp_path / "r"
    assert main(["train", "--data-dir", str(root), "--validation", "holdout:0.25", "--operating-point",
                 "sensitivity:0.9", *TINY, "--weights-dir", str(w), "--results-dir", str(r)]) == 0
    trained = json.loads((r / "metrics.json").read_text())
    model, card = ModelFolder(w).load()
    prep = prepare_data(DataConfig(root=str(root), image_size=32, validation="holdout:0.25"), progress=False)
    val = predict_images(model, prep.val.images)
    expected = operating_threshold(prep.val.labels, apply_temperature(val, ModelFolder(w).temperature())[:, 1],
                                   "sensitivity:0.9")
    assert card.threshold == pytest.approx(expected, abs=1e-6)
    assert trained["operating_point"]["threshold"] == pytest.approx(expected, abs=1e-6)
    assert set(trained["at_threshold_0.5"]) >= {"accuracy", "specificity"}
    assert main(["evaluate", "--data-dir", str(root), "--weights-dir", str(w), "--results-dir",
                 str(tmp_path / "e")]) == 0
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert again["confusion_matrix"] == trained["confusion_matrix"] and again["threshold"] == pytest.approx(expected)
