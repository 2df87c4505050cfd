"""Fronts: a preference-conditioned model evaluated along a grid of rays.

The result is an Arrow table, one row per ray: ``ray_1..ray_T`` then
``acc_1..acc_T`` and ``loss_1..loss_T`` (1-based task numbers, as in the
papers), written as Parquet next to a PNG plot of the front.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from pareto_ray.metrics import hypervolume, nondominated_count, spearman
from pareto_ray.models import PreferenceModel
from pareto_ray.preferences import validate_preference
from pareto_ray.splits import Split


@torch.no_grad()
def evaluate_front(model: PreferenceModel, split: Split, rays: torch.Tensor, batch_size: int = 1024,
                   device: torch.device | str = "cpu", allow_pseudo: bool = False) -> pa.Table:
    """Accuracy and mean cross-entropy of every task under every ray.

    Rays must lie on the simplex unless ``allow_pseudo``: then any finite λ,
    e.g. the pseudopreferences (1, −1) or (0, 0) of PaLoRA §6.2, is evaluated.
    """
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
    m, t = rays.shape
    correct = torch.zeros(m, t, dtype=torch.float64)
    loss_sum = torch.zeros(m, t, dtype=torch.float64)
    for start in range(0, len(split), batch_size):
        x = split.inputs(device, slice(start, start + batch_size))
        y = split.labels[start:start + batch_size].to(device)
        outs = model(x, rays)  # per task [M, N, C]
        for task, logits in enumerate(outs):
            target = y[:, task].expand(m, -1)
            correct[:, task] += (logits.argmax(-1) == target).sum(1).double().cpu()
            ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
            loss_sum[:, task] += ce.view(m, -1).sum(1).double().cpu()
    model.train(was_training)
    n = len(split)
    cols = {f"ray_{i + 1}": rays[:, i].cpu().numpy() for i in range(t)}
    cols |= {f"acc_{i + 1}": (correct[:, i] / n).numpy() for i in range(t)}
    cols |= {f"loss_{i + 1}": (loss_sum[:, i] / n).numpy() for i in range(t)}
    return pa.table(cols)


def front_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rays, accuracies, losses) as ``[K, T]`` arrays."""
    t = sum(1 for name in table.column_names if name.startswith("ray_"))

    def block(prefix: str) -> np.ndarray:
        return np.stack([table.column(f"{prefix}_{i + 1}").to_numpy() for i in range(t)], axis=1)

    return block("ray"), block("acc"), block("loss")


def front_metrics(table: pa.Table, loss_reference: float = 2.0) -> dict[str, float]:
    """HV of accuracies (reference 0) and of losses, non-dominated count, Spearman ρ."""
    rays, acc, loss = front_arrays(table)
    rho = spearman(rays, acc)
    finite = [r for r in rho if np.isfinite(r)]
    out = {
        "hv": hypervolume(acc, 0.0, maximize=True),
        "loss_hv": hypervolume(loss, loss_reference, maximize=False),
        "nondominated": float(nondominated_count(acc, maximize=True)),
        "spearman": float(np.mean(finite)) if finite else float("nan"),
    }
    for i in range(acc.shape[1]):
        out[f"acc_{i + 1}_max"] = float(acc[:, i].max())
    return out


def write_front(table: pa.Table, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_front(path: str | Path) -> pa.Table:
    return pq.read_table(path)


def plot_front(table: pa.Table, path: str | Path, title: str = "") -> Path:
    """PNG of the front: 2 tasks as points joined in ray order, 3+ as a 3-D scatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rays, acc, _ = front_arrays(table)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if acc.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(5, 4.5))
        ax.plot(acc[:, 0], acc[:, 1], "-", color="0.6", zorder=1)
        sc = ax.scatter(acc[:, 0], acc[:, 1], c=rays[:, 0], cmap="viridis", vmin=0, vmax=1, zorder=2)
        fig.colorbar(sc, ax=ax, label="λ₁")
        ax.set_xlabel("task 1 accuracy")
        ax.set_ylabel("task 2 accuracy")
    else:
        fig = plt.figure(figsize=(6, 5))
        ax = fig.add_subplot(projection="3d")
        sc = ax.scatter(acc[:, 0], acc[:, 1], acc[:, 2], c=rays[:, 0], cmap="viridis", vmin=0, vmax=1)
        fig.colorbar(sc, ax=ax, label="λ₁", shrink=0.7)
        ax.set_xlabel("task 1 acc")
        ax.set_ylabel("task 2 acc")
        ax.set_zlabel("task 3 acc")
    ax.set_title(textwrap.fill(title or "Pareto front", 40))  # long run names: wrapped, not clipped at the edges
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
