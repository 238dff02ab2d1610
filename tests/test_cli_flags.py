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
    assert main(args) == 0
    entries = sorted(p.parent.name for p in (tmp_path / "cache").rglob("features.npy"))
    assert entries, "no features written to --cache-dir"
    assert main(args) == 0                                   # a second run finds the same keyed entries
    assert sorted(p.parent.name for p in (tmp_path / "cache").rglob("features.npy")) == entries
