"""MLflow tracking: one run per training run, found again by its name.

The driver owns the run (params, artifacts, registration); rank 0 of the
Ray Train worker group logs per-epoch metrics into it with the client API.
A rerun with the same run name continues the same MLflow run.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

RUN_NAME_TAG = "pareto_ray.run_name"


def resolve_tracking_uri(configured: str | None = None) -> str:
    """Config value, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``.

    A relative sqlite path is made absolute, so Ray workers (whose working
    directory differs) write to the same database.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def _artifact_root(uri: str) -> str | None:
    """Artifacts beside a sqlite database (``mlartifacts/``), absolute."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def get_experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_root(client.tracking_uri))
    except MlflowException:  # created concurrently
        return client.get_experiment_by_name(name).experiment_id


def start_run(uri: str, experiment: str, run_name: str, params: dict[str, Any],
              parent_run_id: str | None = None) -> tuple[str, bool]:
    """The MLflow run for ``run_name`` (reused if it exists) → (run_id, resumed)."""
    client = MlflowClient(uri)
    exp_id = get_experiment_id(client, experiment)
    found = client.search_runs([exp_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        return run_id, True
    tags = {RUN_NAME_TAG: run_name}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    items = [Param(k, _param_value(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id, False


def _param_value(v: Any) -> str:
    return str(v)[:6000]


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    """Log finite numeric metrics at ``step`` (NaN/Inf are skipped)."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and math.isfinite(v)]
    if items:
        MlflowClient(uri).log_batch(run_id, metrics=items)


def logged_steps(uri: str, run_id: str, key: str) -> set[int]:
    return {m.step for m in MlflowClient(uri).get_metric_history(run_id, key)}


def log_artifacts(uri: str, run_id: str, paths: dict[str, Path]) -> None:
    """Log files or directories; keys are artifact sub-paths ('' for the root)."""
    client = MlflowClient(uri)
    for artifact_path, local in paths.items():
        if Path(local).is_dir():
            client.log_artifacts(run_id, str(local), artifact_path or None)
        else:
            client.log_artifact(run_id, str(local), artifact_path or None)


def register_model(uri: str, run_id: str, name: str, artifact_path: str = "model") -> int:
    """Register ``runs:/<run_id>/<artifact_path>`` as a new version of ``name``."""
    client = MlflowClient(uri, registry_uri=uri)
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # already registered
    source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    version = client.create_model_version(name, source, run_id=run_id)
    return int(version.version)


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    MlflowClient(uri).set_terminated(run_id, status)
