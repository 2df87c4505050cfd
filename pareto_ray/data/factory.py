"""A user's own dataset: ``data.factory: "package.module:function"`` with ``data.kwargs``.

The function is called with ``**data.kwargs`` in every process that needs the
data — each Ray Train worker, on whatever node it runs — so it should read
from where the data lives (a shared filesystem, object storage, a database)
rather than from anything on the driver.  It must be importable there: an
installed package, or a module in the job's ``--working-dir``.

It returns either a ``pareto_ray.splits.MultiTaskDataset`` or, needing no
pareto-ray import but ``Task``, a plain dict::

    {
        "tasks": [Task("cultivar", "classification", 3), Task("rich", "binary"), Task("alcohol", "regression")],
        "train": (x, [y_cultivar, y_rich, y_alcohol]),      # x [N, ...]; one target per task, N first
        "val": (x, targets), "test": (x, targets),
        "normalize": {"mean": ..., "std": ..., "scale": 1.0},  # optional: how x becomes the model's input
        "encoder": TabularEncoder(...),   # optional, tables: the columns x was encoded from (served by name)
        "input": {"kind": "tensor"},      # optional: input spec keys to override (e.g. not an image)
    }

With an ``encoder`` (``pareto_ray.inputs_spec.TabularEncoder``, fitted on the
training rows and used to encode every split: ``encoder.encode_columns``),
the checkpoint keeps the columns and the server takes rows by column name.

Arrays may be NumPy or torch; a target dict keyed by task name is accepted
too.  Tensors in memory are the protocol because they are what every loader
ends in: a ``torch.utils.data.Dataset`` would force one Python call per sample
into the training loop, and Parquet files are what the streaming path reads
(``data.cache: true`` writes yours there, once per node).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pareto_ray.config import DataConfig
from pareto_ray.factories import import_object
from pareto_ray.inputs_spec import TabularEncoder
from pareto_ray.splits import MultiTaskDataset, Split
from pareto_ray.tasks import Task


def _tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data.factory: {what} is not an array ({type(value).__name__}): {exc}") from None


def _split(name: str, value: Any, tasks: list[Task], norm: dict[str, Any],
           encoding: dict[str, Any] | None = None) -> Split:
    try:
        x, targets = value
    except (TypeError, ValueError):
        raise ValueError(f"data.factory: {name!r} must be a pair (x, targets), got {type(value).__name__}") from None
    if isinstance(targets, dict):
        missing = [t.name for t in tasks if t.name not in targets]
        if missing:
            raise ValueError(f"data.factory: {name!r} targets lack the tasks {missing}")
        targets = [targets[t.name] for t in tasks]
    targets = [_tensor(y, f"{name} targets of {t.name!r}") for y, t in zip(targets, tasks)]
    if len(targets) != len(tasks):
        raise ValueError(f"data.factory: {name!r} has {len(targets)} targets for {len(tasks)} tasks")
    return Split(_tensor(x, f"{name} inputs"), targets, **norm, encoding=encoding)


def dataset_from(result: Any, where: str) -> MultiTaskDataset:
    """The ``MultiTaskDataset`` a factory returned, or the one its dict describes."""
    if isinstance(result, MultiTaskDataset):
        return result
    if not isinstance(result, dict):
        raise ValueError(f"{where} returned a {type(result).__name__}: expected a MultiTaskDataset or a dict with "
                         f"tasks, train, val, test (see pareto_ray.data.factory)")
    missing = [k for k in ("tasks", "train", "val", "test") if k not in result]
    if missing:
        raise ValueError(f"{where} returned a dict without {', '.join(missing)}")
    tasks = list(result["tasks"])
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise ValueError(f"{where}: tasks must be a non-empty list of pareto_ray.tasks.Task")
    norm = {"scale": 1.0, "mean": 0.0, "std": 1.0} | dict(result.get("normalize") or {})
    norm = {k: tuple(v) if isinstance(v, (list, np.ndarray)) else v for k, v in norm.items()}
    encoding = _encoding(result, where)
    splits = {name: _split(name, result[name], tasks, norm, encoding) for name in ("train", "val", "test")}
    width = splits["train"].x.shape[1:]
    if encoding and "columns" in encoding and tuple(width) != (TabularEncoder.from_dict(encoding["columns"]).width,):
        raise ValueError(f"{where}: the encoder's columns give {TabularEncoder.from_dict(encoding['columns']).width} "
                         f"features, the inputs have shape {list(width)}")
    return MultiTaskDataset(tasks=tasks, **splits)


def _encoding(result: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The input spec keys a factory adds: its ``input`` dict and its ``encoder``'s columns."""
    extra = dict(result.get("input") or {})
    encoder = result.get("encoder")
    if encoder is not None:
        if isinstance(encoder, (list, tuple)):
            encoder = TabularEncoder.from_dict(encoder)
        if not isinstance(encoder, TabularEncoder):
            raise ValueError(f"{where}: encoder must be a pareto_ray.inputs_spec.TabularEncoder, got "
                             f"{type(encoder).__name__}")
        extra |= {"kind": "tabular", "columns": encoder.to_dict()}
    return extra or None


def build_from_factory(cfg: DataConfig) -> MultiTaskDataset:
    fn = import_object(cfg.factory, "data.factory")
    return dataset_from(fn(**cfg.kwargs), f"data.factory {cfg.factory!r}")
