"""Ray Train wiring: a ``TorchTrainer`` around the shared loop.

``fit(cfg)`` is the driver: it opens (or reopens) the MLflow run, builds the
dataset cache once, runs ``train_loop_per_worker`` on ``ray.num_workers``
workers (DDP over gloo on CPU, NCCL on GPU), then evaluates the final
checkpoint on the test split, logs fronts, plot and model, and registers the
model when the config names one.  Rerunning with the same run name resumes
from the run's latest checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from pareto_ray import checkpoint as ckpt
from pareto_ray import tracking
from pareto_ray.config import Config
from pareto_ray.data import load_dataset
from pareto_ray.distributed import all_reduce_mean
from pareto_ray.evaluation import evaluate_checkpoint, evaluate_front, front_metrics, write_front
from pareto_ray.loop import build_optimizer, train_epoch
from pareto_ray.methods import build_model
from pareto_ray.preferences import simplex_grid


def init_ray(address: str | None = None) -> None:
    """Connect to ``address`` (or the job's cluster), else start a local instance."""
    if ray.is_initialized():
        return
    # Train V2 polls its controller through the dashboard; without one it logs a
    # warning every second. Keep that logger quiet when the dashboard is absent.
    logging.getLogger("ray.train.v2._internal.execution.controller.state_manager").setLevel(logging.ERROR)
    local = _local_dashboard() if address is None and not os.environ.get("RAY_ADDRESS") else {}
    ray.init(address=address, log_to_driver=True, configure_logging=True, logging_level=logging.WARNING, **local)


def _local_dashboard() -> dict[str, Any]:
    """``ray.init`` arguments for a new local instance: its dashboard on a free port, made known to its workers.

    With several local Ray instances on one machine (parallel test sessions, two runs at once), Ray's state API
    cannot tell inside a worker which instance is its own.  Train V2's placement-group cleaner uses it when a
    controller dies (as when Tune stops a trial early); failing, it leaves the run's worker CPUs reserved and
    later runs wait for them forever.  ``RAY_API_SERVER_ADDRESS`` names the right instance.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"dashboard_host": "127.0.0.1", "dashboard_port": port,
            "runtime_env": {"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}}}


def use_per_sample(cfg: Config, device: torch.device) -> bool:
    """Per-sample rays in one forward on GPU, merged weights per ray on CPU (measured faster there)."""
    if cfg.train.forward == "auto":
        return device.type == "cuda"
    return cfg.train.forward == "per_sample"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    cfg = Config.model_validate(config["cfg"])
    uri, run_id = config["tracking_uri"], config["mlflow_run_id"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)

    data = load_dataset(cfg.data)
    method, model, _ = build_model(cfg.model, cfg.method, data.num_tasks, data.num_classes)
    start_epoch = 0
    restored = ray.train.get_checkpoint()
    if restored:
        with restored.as_directory() as d:
            ckpt.load_weights(d, model)
            state = ckpt.read_state(d)
            start_epoch = state["epoch"] + 1
            if rank == 0:  # the epoch's metrics may have been lost between report and MLflow log
                if state["epoch"] not in tracking.logged_steps(uri, run_id, "val_hv"):
                    tracking.log_metrics(uri, run_id, state["metrics"], step=state["epoch"])
    ddp_model = ray.train.torch.prepare_model(model)
    optimizer = build_optimizer(ddp_model, cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    if restored:
        with restored.as_directory() as d:
            ckpt.load_optimizer(d, optimizer)
    fault = config.get("fail_at")
    if fault and fault["rank"] == rank:
        _arm_fault(optimizer, fault, start_epoch, len(data.train) // cfg.train.batch_size)

    grid = method.eval_rays(simplex_grid(data.num_tasks, cfg.eval.grid_points))
    per_sample = use_per_sample(cfg, device)
    for epoch in range(start_epoch, cfg.train.epochs):
        metrics = train_epoch(ddp_model, method, optimizer, data.train, epoch, cfg.train.epochs,
                              cfg.train.batch_size, cfg.seed, device, rank, world, per_sample)
        metrics = _mean_over_workers(metrics, device)
        metrics["epoch"] = epoch
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            continue
        table = evaluate_front(model, data.val, grid, cfg.train.eval_batch_size, device)
        metrics |= {f"val_{k}": v for k, v in front_metrics(table, cfg.eval.loss_reference).items()}
        with tempfile.TemporaryDirectory() as tmp:
            state = {"epoch": epoch, "metrics": metrics}
            ckpt.save_checkpoint(tmp, model, cfg, state, optimizer, table)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        # Log only once Ray Train has committed the checkpoint (it registers reports asynchronously): any restart
        # then resumes from this epoch or a later one, so no epoch's metrics reach MLflow twice.
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        tracking.log_metrics(uri, run_id, metrics, step=epoch)
        print(f"[{cfg.name}] epoch {epoch + 1}/{cfg.train.epochs}  train_loss {metrics['train_loss']:.4f}  "
              f"val_hv {metrics['val_hv']:.4f}  non-dominated {int(metrics['val_nondominated'])}", flush=True)


#: Test hook: ``PARETO_RAY_FAIL_AT=epoch:step:rank`` (in the driver's environment) SIGKILLs the worker of that rank
#: right after that optimizer step (epoch from 0, step from 1), once per run: a marker file in the run's storage
#: folder (local or shared filesystem) keeps the restarted worker group from failing again.
FAIL_AT_ENV = "PARETO_RAY_FAIL_AT"


def _fault_injection(cfg: Config) -> dict[str, Any] | None:
    spec = os.environ.get(FAIL_AT_ENV)
    if not spec:
        return None
    try:
        epoch, step, rank = (int(part) for part in spec.split(":"))
    except ValueError:
        raise ValueError(f"{FAIL_AT_ENV} must be epoch:step:rank (e.g. 1:3:1), got {spec!r}") from None
    marker = Path(_storage_path(cfg.ray.storage_path)) / str(cfg.name) / f".fail_at_{epoch}_{step}_{rank}"
    return {"epoch": epoch, "step": step, "rank": rank, "marker": str(marker)}


def _arm_fault(optimizer: torch.optim.Optimizer, fault: dict[str, Any], start_epoch: int, steps_per_epoch: int) -> None:
    marker = Path(fault["marker"])
    target = fault["epoch"] * steps_per_epoch + fault["step"]
    steps = start_epoch * steps_per_epoch

    def after_step(*_: Any) -> None:
        nonlocal steps
        steps += 1
        if steps == target and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            print(f"{FAIL_AT_ENV}: killing rank {fault['rank']} (pid {os.getpid()}) after epoch {fault['epoch']} "
                  f"step {fault['step']}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    if not marker.exists():
        optimizer.register_step_post_hook(after_step)


def _mean_over_workers(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    keys = sorted(metrics)
    values = all_reduce_mean(torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device))
    return dict(zip(keys, values.tolist()))


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


def build_trainer(cfg: Config, uri: str, run_id: str, callbacks: list | None = None) -> ray.train.torch.TorchTrainer:
    """The ``TorchTrainer`` for ``cfg`` (named ``cfg.name``); rank 0 logs per-epoch metrics into MLflow run ``run_id``.

    The Train run is found again by (``ray.storage_path``, ``cfg.name``): the same name resumes from its latest
    checkpoint.  ``callbacks`` are Ray Train callbacks (a Tune trial passes ``TuneReportCallback``).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "tracking_uri": uri, "mlflow_run_id": run_id,
                           "fail_at": _fault_injection(cfg)},
        scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker={"CPU": cfg.ray.cpus_per_worker}),
        run_config=RunConfig(
            name=cfg.name, storage_path=_storage_path(cfg.ray.storage_path), callbacks=callbacks,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.ray.num_to_keep, checkpoint_score_attribute="val_hv",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures)),
    )


def fit(cfg: Config, parent_run_id: str | None = None) -> FitResult:
    """Train ``cfg`` on Ray Train, then evaluate and track the final model (a child run when ``parent_run_id``).

    A discrete front (Pareto MTL's K subproblems) goes to ``pareto_ray.discrete.fit_discrete``: K such runs.
    """
    from pareto_ray.discrete import fit_discrete, is_discrete

    if is_discrete(cfg):
        return fit_discrete(cfg)
    cfg = _with_absolute_paths(cfg.model_copy(update={"name": cfg.run_name()}))
    init_ray(cfg.ray.address)
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    run_id, _ = tracking.start_run(uri, cfg.mlflow.experiment, cfg.name, cfg.flat(), parent_run_id=parent_run_id)
    load_dataset(cfg.data)  # build the Parquet cache once, before the workers need it
    trainer = build_trainer(cfg, uri, run_id)
    try:
        result = trainer.fit()
    except Exception:
        tracking.end_run(uri, run_id, "FAILED")
        raise
    if result.checkpoint is None:
        tracking.end_run(uri, run_id, "FAILED")
        raise RuntimeError(f"run {cfg.name} finished without a checkpoint (see the worker logs above)")
    return finalize(cfg, run_id, uri, result.checkpoint.path)


def _with_absolute_paths(cfg: Config) -> Config:
    """Relative data folders are relative to where the command runs, not to a worker's directory."""
    data = cfg.data
    update = {k: str(Path(v).expanduser().resolve()) for k in ("root", "cache_dir")
              if (v := getattr(data, k)) is not None and "://" not in v}
    return cfg.model_copy(update={"data": data.model_copy(update=update)}) if update else cfg


def _storage_path(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def finalize(cfg: Config, run_id: str, uri: str, checkpoint_path: str) -> FitResult:
    """Evaluate the final checkpoint on the test split; log fronts, plot and model."""
    state = ckpt.read_state(checkpoint_path)
    out = Path(checkpoint_path).parent / "fronts"
    test = evaluate_checkpoint(checkpoint_path, "test", out)
    val_front = write_front(ckpt.read_front(checkpoint_path), out / "val_front.parquet")
    test_metrics = {k: v for k, v in test.items() if isinstance(v, float)}
    tracking.log_metrics(uri, run_id, {f"test_{k}": v for k, v in test_metrics.items()}, step=state["epoch"])
    tracking.log_artifacts(uri, run_id, {"fronts": out, "model": Path(checkpoint_path)})
    if cfg.mlflow.register_model:
        tracking.register_model(uri, run_id, cfg.mlflow.register_model)
    tracking.end_run(uri, run_id)
    return FitResult(run_name=cfg.name, run_id=run_id, checkpoint=str(checkpoint_path),
                     val_hv=float(state["metrics"]["val_hv"]), test_hv=test["hv"], front=test["front"],
                     plot=test["plot"], val_front=str(val_front), metrics=state["metrics"], test_metrics=test_metrics)
