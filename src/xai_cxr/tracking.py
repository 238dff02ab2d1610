"""Optional MLflow tracking (``--mlflow``): configs as params, test metrics, per-epoch curves, and the weights
and figures as artifacts, in a local ``mlruns/`` store. Without mlflow the run goes on unchanged."""
from __future__ import annotations

import os
from dataclasses import asdict, is_dataclass
from pathlib import Path

MISSING = ("--mlflow: mlflow is not installed, so nothing was logged (the run itself is unchanged). "
           "Install it with: pip install 'xai-cxr[mlflow]'")


def flat_params(configs: dict) -> dict[str, str]:
    """{"data.image_size": "256", "train.stage1.lr": "0.0003", …} from config dataclasses."""
    out = {}

    def walk(prefix, value):
        if is_dataclass(value):
            value = asdict(value)
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = str(value)[:500]                # MLflow's param value limit
    walk("", configs)
    return out


def scalar_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a metrics dict (nested keys joined by '.'), lists and strings left out."""
    out = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(scalar_metrics(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key.replace("%", "pct")] = float(v)
    return out


def log_run(configs: dict, metrics: dict, history: dict, weights_dir: str | Path, results_dir: str | Path,
            store: str | Path = "mlruns", experiment: str = "xai-cxr"):
    """Log one finished run; returns the MLflow run id, or None (with a message) when mlflow is absent."""
    try:
        import mlflow
    except ImportError:
        print(MISSING)
        return None
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")        # MLflow 3 wants opting in to ./mlruns
    mlflow.set_tracking_uri(Path(store).resolve().as_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_params(flat_params(configs))
        mlflow.log_metrics(scalar_metrics(metrics))
        for stage, curves in (history or {}).items():
            for name, values in curves.items():
                for step, v in enumerate(values):
                    mlflow.log_metric(f"{stage}.{name}", float(v), step=step)
        from .models import files
        for f in (files.WEIGHTS, files.CARD, files.CALIBRATION, files.RUN_CONFIG, files.OOD, files.INPUT_CHECK):
            if (Path(weights_dir) / f).is_file():
                mlflow.log_artifact(str(Path(weights_dir) / f), "weights")
        if Path(results_dir).is_dir():
            mlflow.log_artifacts(str(results_dir), "results")
    print(f"MLflow run {run.info.run_id} logged to {Path(store).resolve()}")
    return run.info.run_id
