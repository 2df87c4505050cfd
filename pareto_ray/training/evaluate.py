"""Evaluate a checkpoint's front on a split: the model and data rebuilt from the checkpoint's own config."""

from __future__ import annotations

from pathlib import Path

import torch

from pareto_ray.checkpoint import load_model
from pareto_ray.data import load_dataset
from pareto_ray.fronts import evaluate_front, front_metrics, plot_front, write_front
from pareto_ray.preferences import simplex_grid


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", output: str | Path | None = None,
                        device: torch.device | str = "cpu") -> dict:
    """Rebuild a checkpoint's model and data, evaluate its front on ``split``.

    Writes ``<split>_front.parquet`` and ``<split>_front.png`` to ``output``
    (default: ``fronts/`` beside the checkpoint) and returns the front metrics
    with the paths.  The same checkpoint always gives the same front.
    """
    model, method, cfg = load_model(checkpoint, device)
    data = load_dataset(cfg.data, train=False)  # the training split is not needed (nor read)
    rays = method.eval_rays(simplex_grid(data.num_tasks, cfg.eval.grid_points))
    table = evaluate_front(model, data.split(split), rays, cfg.train.eval_batch_size, device, tasks=data.tasks)
    out = Path(output) if output else Path(checkpoint).parent / "fronts"
    front = write_front(table, out / f"{split}_front.parquet")
    plot = plot_front(table, out / f"{split}_front.png", f"{cfg.name}: {cfg.method.name} on {cfg.data.dataset} ({split})")
    return {**front_metrics(table, cfg.eval.loss_reference), "split": split, "checkpoint": str(checkpoint),
            "front": str(front), "plot": str(plot)}
