"""Every CLI flag does what it says: one small run each for `phantoms`, --limit, --validation val, --cache-dir,
--precision and --no-deterministic, checked on what the run wrote or built."""
import json

import pytest

from xai_cxr.cli import main
from xai_cxr.data.phantom import PhantomConfig, write_phantom_dataset

TINY = ["--backbone", "cxr-small", "--weights", "none", "--image-size", "32", "--epochs1", "1", "--batch-size", "4",
        "--device", "cpu"]


def test_phantoms_command_writes_the_counts_asked_for(tmp_path):
    from xai_cxr.data import scan_dataset
    assert main(["phantoms", "--out", str(tmp_path / "p"), "--image-size", "32", "--n-train", "3", "--n-test", "2",
                 "--n-val", "1"]) == 0
    counts = scan_dataset(tmp_path / "p").groupby("split").size().to_dict()
    assert counts == {"train": 6, "test": 4, "val": 2}


def test_limit_and_validation_val_reach_the_run(tmp_path, capsys):
    root = write_phantom_dataset(tmp_path / "d", PhantomConfig(image_size=32, n_train=8, n_test=3, n_val=2))
    assert main(["train", "--data-dir", str(root), "--limit", "6", "--validation", "val", *TINY,
                 "--weights-dir", str(tmp_path / "w"), "--results-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "train 6  val 4  test 6 images" in out
    run = json.loads((tmp_path / "w" / "run_config.json").read_text())
    assert run["DataConfig"]["limit"] == 6 and run["DataConfig"]["validation"] == "val"


def test_precision_and_no_deterministic_reach_keras_and_the_run(tmp_path):
    import keras
    root = write_phantom_dataset(tmp_path / "d", PhantomConfig(image_size=32, n_train=4, n_test=2))
    try:
        assert main(["train", "--data-dir", str(root), "--precision", "mixed_bfloat16", "--no-deterministic", *TINY,
                     "--weights-dir", str(tmp_path / "w"), "--results-dir", str(tmp_path / "r")]) == 0
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    run = json.loads((tmp_path / "w" / "run_config.json").read_text())
    assert run["TrainConfig"]["deterministic"] is False


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
    from xai_cxr.data import make_dataset
    from xai_cxr.evaluate import operating_threshold, predict_proba
    from xai_cxr.models import BACKBONES, load_trained_model
    from xai_cxr.models.calibration import apply_temperature, load_temperature
    from xai_cxr.pipeline import prepare_data
    root = write_phantom_dataset(tmp_path / "d", PhantomConfig(image_size=32, n_train=16, n_test=6))
    w, r = tmp_path / "w", tmp_path / "r"
    assert main(["train", "--data-dir", str(root), "--validation", "holdout:0.25", "--operating-point",
                 "sensitivity:0.9", *TINY, "--weights-dir", str(w), "--results-dir", str(r)]) == 0
    trained = json.loads((r / "metrics.json").read_text())
    model, card = load_trained_model(w)
    prep = prepare_data(DataConfig(root=str(root), image_size=32, validation="holdout:0.25"), progress=False)
    val = predict_proba(model, make_dataset(prep.val.images, None, BACKBONES[card.backbone].preprocess))
    expected = operating_threshold(prep.val.labels, apply_temperature(val, load_temperature(w))[:, 1],
                                   "sensitivity:0.9")
    assert card.threshold == pytest.approx(expected, abs=1e-6)
    assert trained["operating_point"]["threshold"] == pytest.approx(expected, abs=1e-6)
    assert set(trained["at_threshold_0.5"]) >= {"accuracy", "specificity"}
    assert main(["evaluate", "--data-dir", str(root), "--weights-dir", str(w), "--results-dir",
                 str(tmp_path / "e")]) == 0
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert again["confusion_matrix"] == trained["confusion_matrix"] and again["threshold"] == pytest.approx(expected)


def _train_configs(tmp_path, *flags):
    """The configs `xai-cxr train` would run with these flags (parsed and mapped, nothing trained)."""
    from xai_cxr.cli import build_parser
    from xai_cxr.commands import configs_from_args
    from xai_cxr.config import DataConfig, ModelConfig, TrainConfig
    args = build_parser().parse_args(["train", "--data-dir", str(tmp_path), *flags])
    return configs_from_args(args, DataConfig(), ModelConfig(), TrainConfig())


def test_train_defaults_to_squash_with_the_width_jitter_and_the_flags_change_them(tmp_path):
    from xai_cxr.config import AUGMENT_PRESETS
    data = _train_configs(tmp_path)[0]
    assert data.geometry == "squash" and data.augment == AUGMENT_PRESETS["aspect"] and data.augment.aspect == 0.3
    data = _train_configs(tmp_path, "--geometry", "pad", "--augment", "none")[0]
    assert data.geometry == "pad" and data.augment is None
    assert _train_configs(tmp_path, "--augment")[0].augment == AUGMENT_PRESETS["standard"]


def test_demo_on_phantoms_and_the_recipe_train_with_the_width_jitter(tmp_path, monkeypatch):
    from xai_cxr.config import AUGMENT_PRESETS
    from xai_cxr.pipeline import demo_configs, scratch_configs
    monkeypatch.chdir(tmp_path)
    assert demo_configs(None)[0].augment == AUGMENT_PRESETS["aspect"]
    assert scratch_configs(tmp_path)[0].augment == AUGMENT_PRESETS["aspect"]
