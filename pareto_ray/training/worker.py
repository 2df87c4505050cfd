"""What runs on every Ray Train worker: the shared loop, rank 0's validation front and checkpoint, each epoch.

Each epoch every rank reports its (worker-averaged) training metrics; rank 0
adds the validation front's metrics and a checkpoint, and the workers go on
only once Ray Train has committed it, so a restart always resumes from the
last reported epoch.  A worker group that starts from a checkpoint first
reports that checkpoint's epoch again (without a checkpoint), so whoever
watches the reports — the MLflow logger, Tune — has seen it even if the
previous driver died before it could.  MLflow never appears here: the Train
controller's ``tracking.EpochLogger`` logs each report.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from pareto_ray import checkpoint as ckpt
from pareto_ray.config import Config
from pareto_ray.data import load_dataset
from pareto_ray.distributed import all_reduce_mean
from pareto_ray.fronts import evaluate_front, front_metrics
from pareto_ray.loop import build_optimizer, grad_scaler, step_learning_rate, train_epoch
from pareto_ray.methods import build_model
from pareto_ray.preferences import simplex_grid
from pareto_ray.runtime import quiet_worker_reports, storage_path
from pareto_ray.training.streaming import epoch_batches, steps_per_epoch


def use_per_sample(cfg: Config, device: torch.device) -> bool:
    """Per-sample rays in one forward on GPU, merged weights per ray on CPU (measured faster there)."""
    if cfg.train.forward == "auto":
        return device.type == "cuda"
    return cfg.train.forward == "per_sample"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    if not config.get("verbose"):
        quiet_worker_reports()
    cfg = Config.model_validate(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)

    stream = config.get("streaming")  # the training split streamed by Ray Data (training/streaming.py)
    data = load_dataset(cfg.data, train=stream is None)
    steps = (steps_per_epoch(stream["rows"], cfg.train.batch_size, world) if stream
             else len(data.train) // cfg.train.batch_size)
    method, model, _ = build_model(cfg.model, cfg.method, data.tasks, data.input_shape)
    spec = ckpt.DatasetSpec.of(data)
    samples = ckpt.sample_set(data.test)  # the explorer's "try it"
    start_epoch, restored_metrics = 0, None
    restored = ray.train.get_checkpoint()
    if restored:
        with restored.as_directory() as d:
            ckpt.load_weights(d, model)
            state = ckpt.read_state(d)
            start_epoch, restored_metrics = state["epoch"] + 1, state["metrics"]
    ddp_model = ray.train.torch.prepare_model(model)
    optimizer = build_optimizer(ddp_model, cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    if restored:
        with restored.as_directory() as d:
            ckpt.load_optimizer(d, optimizer)
    fault = config.get("fail_at")
    if fault and fault["rank"] == rank:
        arm_fault(optimizer, fault, start_epoch, steps)

    if restored_metrics is not None:  # the restored epoch again, naming its checkpoint as Tune's results do
        ray.train.report({**restored_metrics, "checkpoint_path": restored.path}, checkpoint=None)
    grid = method.eval_rays(simplex_grid(data.num_tasks, cfg.eval.grid_points))
    per_sample = use_per_sample(cfg, device)
    scaler = grad_scaler(cfg.train.precision, device)  # fp16 on CUDA; its scale restarts on resume
    for epoch in range(start_epoch, cfg.train.epochs):
        step_learning_rate(optimizer, epoch, cfg.train.lr_step, cfg.train.lr_gamma)
        streamed = None
        if stream:
            streamed = (epoch_batches(ray.train.get_dataset_shard("train"), cfg.train.batch_size, world, epoch,
                                      cfg.seed, device, data.num_tasks, cfg.data.shuffle_buffer), steps)
        metrics = train_epoch(ddp_model, method, optimizer, data.train, epoch, cfg.train.epochs,
                              cfg.train.batch_size, cfg.seed, device, rank, world, per_sample, data.tasks,
                              cfg.train.precision, cfg.train.grad_accumulation, scaler, streamed)
        metrics = _mean_over_workers(metrics, device)
        metrics["epoch"] = epoch
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            continue
        table = evaluate_front(model, data.val, grid, cfg.train.eval_batch_size, device, tasks=data.tasks)
        metrics |= {f"val_{k}": v for k, v in front_metrics(table, cfg.eval.loss_reference).items()}
        with tempfile.TemporaryDirectory() as tmp:
            state = {"epoch": epoch, "metrics": metrics}
            ckpt.save_checkpoint(tmp, model, cfg, state, optimizer, table, spec, samples)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        # Ray Train registers a reported checkpoint asynchronously: wait until it has, so that a worker killed
        # from here on restarts from this epoch, not from the one before.
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)


#: Test hook: ``PARETO_RAY_FAIL_AT=epoch:step:rank`` (in the driver's environment) SIGKILLs the worker of that rank
#: right after that optimizer step (epoch from 0, step from 1), once per run: a marker file in the run's storage
#: folder (local or shared filesystem) keeps the restarted worker group from failing again.
FAIL_AT_ENV = "PARETO_RAY_FAIL_AT"


def fault_injection(cfg: Config) -> dict[str, Any] | None:
    spec = os.environ.get(FAIL_AT_ENV)
    if not spec:
        return None
    try:
        epoch, step, rank = (int(part) for part in spec.split(":"))
    except ValueError:
        raise ValueError(f"{FAIL_AT_ENV} must be epoch:step:rank (e.g. 1:3:1), got {spec!r}") from None
    marker = Path(storage_path(cfg.ray.storage_path)) / str(cfg.name) / f".fail_at_{epoch}_{step}_{rank}"
    return {"epoch": epoch, "step": step, "rank": rank, "marker": str(marker)}


def arm_fault(optimizer: torch.optim.Optimizer, fault: dict[str, Any], start_epoch: int, steps_per_epoch: int) -> None:
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
