"""Ray Train for one preference-conditioned model: a ``TorchTrainer`` around the shared loop.

``fit_continuous(cfg)`` is the driver: it opens (or reopens) the MLflow run,
builds the dataset cache once, runs ``worker.train_loop_per_worker`` on
``ray.num_workers`` workers (DDP over gloo on CPU, NCCL on GPU) with
``tracking.EpochLogger`` logging each committed epoch, then evaluates the
final checkpoint on the test split, logs fronts, plot and model, and
registers the model when the config names one.  Rerunning with the same run
name resumes from the run's latest checkpoint.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchTrainer

from pareto_ray import checkpoint as ckpt
from pareto_ray import model_tracking, tracking
from pareto_ray.config import Config
from pareto_ray.data import ensure_cache, streams
from pareto_ray.fronts import write_front
from pareto_ray.progress import ProgressDisplay
from pareto_ray.runtime import ensure_resources, init_ray, resolve_paths, room_for_data, worker_resources
from pareto_ray.training.evaluate import evaluate_checkpoint
from pareto_ray.training.streaming import train_dataset
from pareto_ray.training.worker import fault_injection, train_loop_per_worker


@dataclass
class FitResult:
    run_name: str
    run_id: str
    checkpoint: str
    val_hv: float
    test_hv: float
    front: str
    plot: str
    val_front: str
    metrics: dict[str, float]
    test_metrics: dict[str, float]

    def summary(self) -> dict[str, Any]:
        return {"run_name": self.run_name, "run_id": self.run_id, "checkpoint": self.checkpoint,
                "val_hv": self.val_hv, "test_hv": self.test_hv, "front": self.front, "plot": self.plot,
                "val_front": self.val_front,
                "test": self.test_metrics}


def build_trainer(cfg: Config, uri: str, run_id: str, callbacks: list[UserCallback] | None = None,
                  verbose: bool = False) -> TorchTrainer:
    """The ``TorchTrainer`` for ``cfg`` (named ``cfg.name``; paths resolved); each epoch is logged into MLflow run ``run_id``.

    The Train run is found again by (``ray.storage_path``, ``cfg.name``): the same name resumes from its latest
    checkpoint.  ``callbacks`` run after the MLflow logger (a Tune trial passes ``TuneReportCallback``, which
    may stop the trial: every epoch Tune sees is then already in MLflow).  Ray Train logs its warnings only,
    unless ``verbose`` (then also its INFO lines: every report, checkpoint and worker-group start).
    """
    loop_config = {"cfg": cfg.model_dump(mode="json"), "fail_at": fault_injection(cfg), "verbose": verbose}
    data: dict[str, Any] = {}
    if streams(cfg.data):  # the training split from Parquet shards through Ray Data (training/streaming.py)
        dataset, rows = train_dataset(cfg.data, cfg.seed)
        loop_config["streaming"] = {"rows": rows}
        data = {"datasets": {"train": dataset}, "dataset_config": DataConfig(datasets_to_split=["train"])}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        **data,
        scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker=worker_resources(cfg.ray)),
        run_config=RunConfig(
            name=cfg.name, storage_path=cfg.ray.storage_path,
            callbacks=[tracking.EpochLogger(uri, run_id), *(callbacks or [])],
            logging_config=LoggingConfig(log_level="INFO" if verbose else "WARNING"),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.ray.num_to_keep, checkpoint_score_attribute="val_hv",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures)),
    )


def fit_continuous(cfg: Config, parent_run_id: str | None = None, progress: ProgressDisplay | None = None,
                   verbose: bool = False) -> FitResult:
    """Train ``cfg`` on Ray Train, then evaluate and track the final model (a child run when ``parent_run_id``).

    ``progress`` shows each epoch on the driver; ``verbose`` brings back Ray Train's INFO lines.  A cluster that
    cannot hold the workers fails before anything starts (``runtime.ensure_resources``).
    """
    cfg = resolve_paths(cfg.model_copy(update={"name": cfg.run_name()}))
    init_ray(cfg.ray.address, verbose=verbose)
    ensure_cache(cfg.data)  # build the Parquet cache once, before the workers need it
    if streams(cfg.data):
        cfg = cfg.model_copy(update={"ray": room_for_data(cfg.ray)})
    ensure_resources(cfg.ray)
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    run_id, _ = tracking.start_run(uri, cfg.mlflow.experiment, cfg.name, cfg.flat(), parent_run_id=parent_run_id)
    try:
        with progress.track(cfg.name, cfg.train.epochs) if progress else nullcontext() as reporter:
            result = build_trainer(cfg, uri, run_id, [reporter] if reporter else None, verbose=verbose).fit()
    except Exception:
        tracking.end_run(uri, run_id, "FAILED")
        raise
    if result.checkpoint is None:
        tracking.end_run(uri, run_id, "FAILED")
        raise RuntimeError(f"run {cfg.name} finished without a checkpoint (see the worker logs above)")
    return finalize(cfg, run_id, uri, result.checkpoint.path)


def finalize(cfg: Config, run_id: str, uri: str, checkpoint_path: str) -> FitResult:
    """Evaluate the final checkpoint on the test split; log fronts, plot and the model (an MLflow pyfunc model)."""
    state = ckpt.read_state(checkpoint_path)
    out = Path(checkpoint_path).parent / "fronts"
    test = evaluate_checkpoint(checkpoint_path, "test", out)
    val_front = write_front(ckpt.read_checkpoint_front(checkpoint_path), out / "val_front.parquet")
    test_metrics = {k: v for k, v in test.items() if isinstance(v, float)}
    tracking.log_metrics(uri, run_id, {f"test_{k}": v for k, v in test_metrics.items()}, step=state["epoch"])
    web = uri if uri.startswith(("http://", "https://")) else None  # a file or database path is not a link
    ckpt.write_run_info(checkpoint_path, {"run_id": run_id, "tracking_uri": web, "test_hv": float(test["hv"]),
                                          "val_hv": float(state["metrics"]["val_hv"])})
    tracking.log_artifacts(uri, run_id, {"fronts": out})
    model_uri = model_tracking.log_model(uri, run_id, checkpoint_path)  # an MLflow pyfunc model holding the checkpoint
    if cfg.mlflow.register_model:
        model_tracking.register_model(uri, run_id, cfg.mlflow.register_model, model_uri=model_uri)
    tracking.end_run(uri, run_id)
    return FitResult(run_name=cfg.name, run_id=run_id, checkpoint=str(checkpoint_path),
                     val_hv=float(state["metrics"]["val_hv"]), test_hv=test["hv"], front=test["front"],
                     plot=test["plot"], val_front=str(val_front), metrics=state["metrics"], test_metrics=test_metrics)
