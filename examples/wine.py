"""Your own model and dataset on pareto-ray: three tasks of different kinds on a table, in one short file.

The data is scikit-learn's bundled wine table (178 wines, 13 measurements;
no download).  Three tasks, each of another kind:

* ``cultivar`` — which of 3 cultivars (classification),
* ``rich`` — proline above the median (binary),
* ``alcohol`` — the alcohol content in % vol (regression, Huber loss).

Proline and alcohol are held out of the inputs, so the 11 other measurements
predict all three.  The network is a small MLP whose shared ``encoder`` feeds
one head per task; every method adapts it the same way it adapts the
built-in backbones.

    pareto-ray train --config examples/wine.yaml
    pareto-ray evaluate ray_results/wine-palora/checkpoint_<...> --json
    pareto-ray serve --model ray_results/wine-palora/checkpoint_<...>

Run from the repository root (or anywhere ``examples`` is importable): Ray
ships the working directory to its workers, which import this module there.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_wine
from torch import nn

from pareto_ray.inputs_spec import TabularEncoder
from pareto_ray.tasks import Task

FEATURES = [name for name in load_wine().feature_names if name not in ("alcohol", "proline")]


def wine(seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.2) -> dict:
    """The data.factory: tasks, train/val/test splits and the encoder of the 11 input columns (each standardized
    with the training split's statistics)."""
    table = load_wine()
    columns = list(table.feature_names)
    x = table.data[:, [columns.index(f) for f in FEATURES]].astype(np.float32)
    proline, alcohol = table.data[:, columns.index("proline")], table.data[:, columns.index("alcohol")]
    order = np.random.default_rng(seed).permutation(len(x))
    n_test, n_val = round(len(x) * test_fraction), round(len(x) * val_fraction)
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    train = parts["train"]
    # the inputs' encoder, fitted on the training rows: saved in the checkpoint, so the server takes rows by name
    encoder = TabularEncoder.fit({name: x[train, j] for j, name in enumerate(FEATURES)})
    rich = (proline > np.median(proline[train])).astype(np.float32)
    a_mean, a_std = float(alcohol[train].mean()), float(alcohol[train].std())
    tasks = [
        Task("cultivar", "classification", 3, labels=tuple(table.target_names)),
        Task("rich", "binary"),
        Task("alcohol", "regression", loss="huber", target_mean=a_mean, target_std=a_std, reference=1.0),
    ]
    targets = [torch.as_tensor(table.target), torch.as_tensor(rich), torch.as_tensor((alcohol - a_mean) / a_std,
                                                                                    dtype=torch.float32)]
    encoded = {name: torch.from_numpy(encoder.encode_columns({f: x[idx, j] for j, f in enumerate(FEATURES)}))
               for name, idx in parts.items()}
    return {"tasks": tasks, "encoder": encoder,
            **{name: (encoded[name], [y[idx] for y in targets]) for name, idx in parts.items()}}


class WineNet(nn.Module):
    """The model.factory's network: a shared encoder and one linear head per task (sized by the task)."""

    def __init__(self, tasks: list[Task], input_shape: tuple[int, ...], width: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(input_shape[0], width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(width, task.head_outputs) for task in tasks)


def wine_net(tasks: list[Task], input_shape: tuple[int, ...], width: int = 32) -> WineNet:
    return WineNet(tasks, input_shape, width)
