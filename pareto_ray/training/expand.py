"""Pareto expansion (PaLoRA §5.4, App. B.3): grow a local front around a trained point.

Start from a single-point checkpoint (e.g. linear scalarization), wrap its
network in PaLoRA adapters (B = 0, so training starts exactly at the
checkpoint), train only the adapters for a few epochs with the config's
PaLoRA schedule and learning rate, and evaluate the local front on the test
split next to the starting point.  Runs in one process with the shared loop;
the result is an ordinary checkpoint (``pareto-ray evaluate`` reads it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from pareto_ray import checkpoint as ckpt
from pareto_ray.config import Config, ConfigError
from pareto_ray.data import load_dataset
from pareto_ray.fronts import evaluate_front, front_metrics, plot_front, write_front
from pareto_ray.loop import build_optimizer, train_epoch
from pareto_ray.methods import build_method
from pareto_ray.models import PreferenceModel
from pareto_ray.preferences import simplex_grid
from pareto_ray.splits import Split
from pareto_ray.tasks import Task

#: PaLoRA §6.2's probes outside the simplex: core network alone, and each task's adapter negated.
PSEUDO_PREFERENCES_2 = [(0.0, 0.0), (1.0, -1.0), (-1.0, 1.0)]


def expand(checkpoint: str | Path, cfg: Config, output: str | Path, device: torch.device | str = "cpu",
           pseudo: bool = False) -> dict[str, Any]:
    """Expand ``checkpoint``'s single point into a local front with ``cfg`` (its method must be PaLoRA).

    Writes ``checkpoint/`` (the expanded model), ``test_front.parquet`` and
    ``test_front.png`` under ``output``; returns the expanded front's metrics,
    the starting point's and, with ``pseudo``, the pseudopreference table.
    """
    if cfg.method.name != "palora":
        raise ConfigError(f"Pareto expansion adds PaLoRA adapters: the config's method must be palora, "
                          f"got {cfg.method.name!r}")
    base, base_method, base_cfg = ckpt.load_model(checkpoint, device)
    if base_method.preference_conditioned:
        raise ConfigError(f"{checkpoint} holds a {base_cfg.method.name} front, not a single point: expand a "
                          f"single-point model (e.g. method ls)")
    if base_cfg.model != cfg.model or base_cfg.data.num_tasks != cfg.data.num_tasks:
        raise ConfigError(f"the config's model/tasks ({cfg.model}, {cfg.data.num_tasks} tasks) differ from the "
                          f"checkpoint's ({base_cfg.model}, {base_cfg.data.num_tasks} tasks)")
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.data)
    grid = simplex_grid(data.num_tasks, cfg.eval.grid_points)
    start_table = evaluate_front(base, data.test, base_method.eval_rays(grid), cfg.train.eval_batch_size, device,
                                 tasks=data.tasks)

    net = base.net
    for p in net.parameters():  # one process, no DDP: the core network is simply frozen
        p.requires_grad_(False)
    method = build_method(cfg.method, data.num_tasks)
    model = method.build_model(net).to(device)
    optimizer = build_optimizer(model, cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)  # the adapters
    started = time.perf_counter()
    history = []
    for epoch in range(cfg.train.epochs):
        metrics = train_epoch(model, method, optimizer, data.train, epoch, cfg.train.epochs, cfg.train.batch_size,
                              cfg.seed, device, tasks=data.tasks, precision=cfg.train.precision,
                              grad_accumulation=cfg.train.grad_accumulation)
        val = front_metrics(evaluate_front(model, data.val, grid, cfg.train.eval_batch_size, device, tasks=data.tasks),
                            cfg.eval.loss_reference)
        history.append({**metrics, "epoch": epoch, "val_hv": val["hv"]})
    seconds = time.perf_counter() - started

    out = Path(output)
    table = evaluate_front(model, data.test, method.eval_rays(grid), cfg.train.eval_batch_size, device, tasks=data.tasks)
    saved = ckpt.save_checkpoint(out / "checkpoint", model, cfg, {"epoch": cfg.train.epochs - 1, "metrics": history[-1],
                                                                   "expanded_from": str(checkpoint)}, optimizer, table,
                                 ckpt.DatasetSpec.of(data), ckpt.sample_set(data.test))
    front = write_front(table, out / "test_front.parquet")
    plot = plot_front(table, out / "test_front.png", f"Pareto expansion of {base_cfg.name} ({cfg.data.dataset}, test)")
    result: dict[str, Any] = {
        **front_metrics(table, cfg.eval.loss_reference),
        "start": front_metrics(start_table, cfg.eval.loss_reference),
        "checkpoint": str(saved), "front": str(front), "plot": str(plot), "seconds": seconds, "history": history,
    }
    if pseudo:
        result["pseudo"] = pseudo_table(model, data.test, cfg.train.eval_batch_size, device, data.tasks).to_pylist()
    return result


def pseudo_table(model: PreferenceModel, split: Split, batch_size: int = 1024, device: torch.device | str = "cpu",
                 tasks: list[Task] | None = None) -> pa.Table:
    """Accuracy under PaLoRA §6.2's pseudopreferences (two tasks) next to (1, 0), (0, 1), (½, ½)."""
    if model.num_tasks != 2:
        raise ValueError("the pseudopreference probe is defined for two tasks")
    rays = torch.tensor([(1.0, 0.0), (0.0, 1.0), (0.5, 0.5), *PSEUDO_PREFERENCES_2])
    return evaluate_front(model, split, rays, batch_size, device, allow_pseudo=True, tasks=tasks)
