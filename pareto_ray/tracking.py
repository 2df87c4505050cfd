"""MLflow tracking of runs: experiments, runs found again by name, params, metrics, tags and artifacts.

One MLflow run per training run, found again by its name: a rerun with the
same run name continues the same MLflow run.  The driver owns the run
(params, artifacts, registration); per-epoch metrics are logged by
``EpochLogger``, a Ray Train callback that runs in the Train controller after
each report — after Ray Train has registered the epoch's checkpoint, so an
epoch reaches MLflow only once it can no longer be trained again.

This module imports MLflow and Ray Train only (no torch): the Train
controller unpickles ``EpochLogger`` and so imports it on every run.  The
trained model as an MLflow model (log, register, download) is in
``model_tracking``.
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
from ray.train import Checkpoint, UserCallback

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


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    MlflowClient(uri).set_terminated(run_id, status)


def log_epoch_once(uri: str, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
    """Log an epoch's metrics unless that epoch is already in the run."""
    if epoch not in logged_steps(uri, run_id, "val_hv"):
        log_metrics(uri, run_id, metrics, step=epoch)


class EpochLogger(UserCallback):
    """Logs rank 0's report of each epoch (``epoch`` and ``val_*`` included) to the MLflow run ``run_id``, once.

    Runs in the Ray Train controller after the report's checkpoint has been
    registered, so every logged epoch is at or before the checkpoint a restart
    resumes from; a restarted worker group reports its checkpoint's epoch
    again, which is logged only if the previous driver died before logging it.
    Put it before any callback that may stop the run on a report (Tune's), so
    a stopped trial's last epoch is logged.
    """

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        report = metrics[0] if metrics else {}
        if "epoch" in report and "val_hv" in report:
            log_epoch_once(self.uri, self.run_id, int(report["epoch"]), report)


def child_runs(uri: str, parent_run_id: str) -> dict[str, str]:
    """Run name → run id of the runs whose parent is ``parent_run_id``."""
    client = MlflowClient(uri)
    experiment = client.get_run(parent_run_id).info.experiment_id
    found = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return {r.data.tags.get(RUN_NAME_TAG): r.info.run_id for r in found}


def set_tag(uri: str, run_id: str, key: str, value: str) -> None:
    MlflowClient(uri).set_tag(run_id, key, value)
