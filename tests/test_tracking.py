"""--mlflow: what is logged to a local store, and a clear message (and no other change) without mlflow."""
import sys

import pytest

from xai_cxr.config import DataConfig, TrainConfig
from xai_cxr.tracking import MISSING, flat_params, log_run, scalar_metrics


def test_flat_params_and_scalar_metrics_flatten_nested_configs_and_metrics():
    p = flat_params({"data": DataConfig(image_size=64), "train": TrainConfig()})
    assert p["data.image_size"] == "64" and p["train.stage1.learning_rate"] == str(TrainConfig().stage1.learning_rate)
    m = scalar_metrics({"accuracy": 0.9, "confusion_matrix": [[1, 2], [3, 4]], "note": "x", "ok": True,
                        "calibration": {"temperature": 1.5, "accuracy_at_coverage": {"90%": 0.95}}})
    assert m == {"accuracy": 0.9, "calibration.temperature": 1.5, "calibration.accuracy_at_coverage.90pct": 0.95}


def test_log_run_writes_params_metrics_curves_and_weights_to_a_local_store(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.weights.h5").write_bytes(b"weights")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.json").write_text("{}")
    run_id = log_run({"data": DataConfig(image_size=64)}, {"accuracy": 0.75},
                     {"stage1": {"loss": [0.9, 0.5]}}, tmp_path / "w", tmp_path / "r", tmp_path / "mlruns")
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    run = client.get_run(run_id)
    assert run.data.params["data.image_size"] == "64" and run.data.metrics["accuracy"] == 0.75
    assert [m.value for m in client.get_metric_history(run_id, "stage1.loss")] == [0.9, 0.5]
    assert {a.path for a in client.list_artifacts(run_id, "weights")} == {"weights/model.weights.h5"}


def test_without_mlflow_log_run_says_how_to_install_and_returns_none(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)             # import mlflow → ImportError
    assert log_run({}, {"accuracy": 1.0}, {}, tmp_path, tmp_path, tmp_path / "mlruns") is None
    assert capsys.readouterr().out.strip() == MISSING and not (tmp_path / "mlruns").exists()
