"""Fronts: a preference-conditioned model evaluated along a grid of rays.

The result is an Arrow table, one row per ray: ``ray_1..ray_T``, then every
metric of every task as ``<metric>_<t>`` (1-based task numbers, as in the
papers; ``acc_1``, ``loss_1``, ``miou_2``, ...), so each front is kept in loss
space and in metric space.  The tasks themselves travel in the table's
metadata, so a front read back from Parquet knows which metric forms it,
which way is better and its hypervolume reference.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pareto_ray.metrics import hypervolume, nondominated_count, spearman
from pareto_ray.models import PreferenceModel
from pareto_ray.preferences import validate_preference
from pareto_ray.splits import Split
from pareto_ray.tasks import Task, TaskEvaluation, classification_tasks

TASKS_KEY = b"pareto_ray.tasks"


@torch.no_grad()
def evaluate_front(model: PreferenceModel, split: Split, rays: torch.Tensor, batch_size: int = 1024,
                   device: torch.device | str = "cpu", allow_pseudo: bool = False,
                   tasks: list[Task] | None = None) -> pa.Table:
    """Every metric of every task under every ray (``tasks`` default to 10-way classification).

    Rays must lie on the simplex unless ``allow_pseudo``: then any finite λ,
    e.g. the pseudopreferences (1, −1) or (0, 0) of PaLoRA §6.2, is evaluated.
    """
    tasks = tasks or classification_tasks(model.num_tasks)
    rays = torch.as_tensor(rays, dtype=torch.float32)
    if rays.dim() != 2 or rays.shape[1] != model.num_tasks:
        raise ValueError(f"rays must have shape [M, {model.num_tasks}], got {tuple(rays.shape)}")
    if not allow_pseudo:
        validate_preference(rays, model.num_tasks)
    elif not torch.isfinite(rays).all():
        raise ValueError("pseudopreference entries must be finite numbers (no NaN/Inf)")
    was_training = model.training
    model.eval()
    rays = rays.to(device)
    scores = TaskEvaluation(tasks, rays.shape[0])
    for start in range(0, len(split), batch_size):
        index = slice(start, start + batch_size)
        scores.update(model(split.inputs(device, index), rays), split.targets_at(index, device))
    model.train(was_training)
    return front_table(rays.cpu().numpy(), scores.compute(), tasks)


def front_table(rays: np.ndarray, metrics: list[dict[str, np.ndarray]], tasks: list[Task]) -> pa.Table:
    """The front's table: ray columns, then ``<metric>_<t>`` grouped by metric, the tasks in the metadata."""
    cols = {f"ray_{i + 1}": rays[:, i] for i in range(rays.shape[1])}
    names = list(dict.fromkeys(name for task_metrics in metrics for name in task_metrics))
    for name in names:
        cols |= {f"{name}_{t + 1}": m[name] for t, m in enumerate(metrics) if name in m}
    meta = {TASKS_KEY: json.dumps([t.to_dict() for t in tasks])}
    return pa.table(cols).replace_schema_metadata(meta)


def front_tasks(table: pa.Table) -> list[Task]:
    """The tasks a front was evaluated on (a front without them: classification, the only kind before tasks)."""
    meta = table.schema.metadata or {}
    if TASKS_KEY in meta:
        return [Task.from_dict(d) for d in json.loads(meta[TASKS_KEY])]
    return classification_tasks(sum(1 for name in table.column_names if name.startswith("ray_")))


def metric_block(table: pa.Table, names: list[str]) -> np.ndarray:
    """``[K, T]``: column ``<names[t]>_<t+1>`` for each task."""
    return np.stack([table.column(f"{name}_{t + 1}").to_numpy() for t, name in enumerate(names)], axis=1)


def front_points(table: pa.Table) -> tuple[np.ndarray, np.ndarray, list[Task]]:
    """(rays ``[K, T]``, the front metric of each task ``[K, T]``, the tasks)."""
    tasks = front_tasks(table)
    rays = metric_block(table, ["ray"] * len(tasks))
    return rays, metric_block(table, [t.front_metric for t in tasks]), tasks


def front_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rays, front metrics, losses) as ``[K, T]`` arrays (for classification: accuracies)."""
    rays, points, tasks = front_points(table)
    return rays, points, metric_block(table, ["loss"] * len(tasks))


def front_metrics(table: pa.Table, loss_reference: float = 2.0) -> dict[str, float]:
    """HV of the front metrics (each task's direction and reference) and of the losses (``loss_reference``
    per task), the non-dominated count, Spearman ρ between λ_t and task t's score (oriented so that higher
    is better), and each task's best front metric (``acc_1_max``, ``loss_3_min``, ...)."""
    rays, points, tasks = front_points(table)
    higher = [t.higher_is_better for t in tasks]
    oriented = np.where(higher, points, -points)
    rho = spearman(rays, oriented)
    finite = [r for r in rho if np.isfinite(r)]
    loss = metric_block(table, ["loss"] * len(tasks))
    out = {
        "hv": hypervolume(points, [t.front_reference for t in tasks], maximize=higher),
        "loss_hv": hypervolume(loss, loss_reference, maximize=False),
        "nondominated": float(nondominated_count(points, maximize=higher)),
        "spearman": float(np.mean(finite)) if finite else float("nan"),
    }
    for i, (task, up) in enumerate(zip(tasks, higher)):
        column = points[:, i]
        out[f"{task.front_metric}_{i + 1}_{'max' if up else 'min'}"] = float(column.max() if up else column.min())
    return out


def write_front(table: pa.Table, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_front(path: str | Path) -> pa.Table:
    return pq.read_table(path)


def plot_front(table: pa.Table, path: str | Path, title: str = "") -> Path:
    """PNG of the front in metric space: 2 tasks as points joined in ray order, 3 as a 3-D scatter, more as
    parallel coordinates (one line per ray); coloured by λ₁."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rays, points, tasks = front_points(table)
    labels = [f"{t.name} {t.front_metric}" for t in tasks]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if points.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(5, 4.5))
        ax.plot(points[:, 0], points[:, 1], "-", color="0.6", zorder=1)
        sc = ax.scatter(points[:, 0], points[:, 1], c=rays[:, 0], cmap="viridis", vmin=0, vmax=1, zorder=2)
        fig.colorbar(sc, ax=ax, label="λ₁")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
    elif points.shape[1] == 3:
        fig = plt.figure(figsize=(6, 5))
        ax = fig.add_subplot(projection="3d")
        sc = ax.scatter(points[:, 0], points[:, 1], points[:, 2], c=rays[:, 0], cmap="viridis", vmin=0, vmax=1)
        fig.colorbar(sc, ax=ax, label="λ₁", shrink=0.7)
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_zlabel(labels[2])
    else:
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(tasks)), 4.5))
        cmap = plt.get_cmap("viridis")
        for row, ray in zip(points, rays):
            ax.plot(range(len(tasks)), row, "-", color=cmap(float(ray[0])), alpha=0.6, lw=1)
        ax.set_xticks(range(len(tasks)), labels, rotation=90, fontsize=7)
        fig.colorbar(plt.cm.ScalarMappable(cmap=cmap), ax=ax, label="λ₁")
    ax.set_title(textwrap.fill(title or "Pareto front", 40))  # long run names: wrapped, not clipped at the edges
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
