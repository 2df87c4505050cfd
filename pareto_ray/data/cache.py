"""Datasets built once and cached as Parquet, keyed by the config fields that change their content.

The cache file is written atomically, so concurrent workers on one node may
race to build it safely.  ``cache_root`` is the one place that says where
pareto-ray keeps derived files (the toy problems' reference fronts too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pareto_ray.config import MULTIMNIST_DATASETS, DataConfig
from pareto_ray.splits import MultiTaskDataset, Split
from pareto_ray.tasks import Task

CACHE_VERSION = 3  # 3: inputs and per-task targets as tensor columns, tasks and shapes in the metadata


def cache_root(configured: str | os.PathLike | None = None) -> Path:
    """``configured``, else ``$PARETO_RAY_CACHE``, else ``~/.cache/pareto-ray``."""
    return Path(configured or os.environ.get("PARETO_RAY_CACHE") or Path.home() / ".cache" / "pareto-ray")


def cache_dir(cfg: DataConfig) -> Path:
    return cache_root(cfg.cache_dir)


def write_atomically(table: pa.Table, path: Path) -> None:
    """Write ``table`` as Parquet at ``path`` via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def cache_key(cfg: DataConfig) -> str:
    fields = cfg.model_dump(exclude={"root", "download", "cache_dir", "max_train", "max_eval", "normalize"})  # applied on load
    fields["version"] = CACHE_VERSION
    if cfg.root is not None:
        fields["root"] = str(Path(cfg.root).resolve())
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _tensor_column(t: torch.Tensor) -> pa.Array:
    """One value per sample: a number column for ``[N]``, else fixed-size binary of each sample's bytes."""
    arr = t.detach().cpu().contiguous().numpy()
    if arr.ndim == 1:
        return pa.array(arr)
    width = int(np.prod(arr.shape[1:])) * arr.itemsize
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(arr), [None, pa.py_buffer(arr.tobytes())])


def _column_tensor(column: pa.ChunkedArray, dtype: str, shape: list[int]) -> torch.Tensor:
    column = column.combine_chunks()
    if not shape:
        return torch.from_numpy(column.to_numpy(zero_copy_only=False).astype(dtype, copy=True))
    width = column.type.byte_width
    start = column.offset * width
    flat = np.frombuffer(column.buffers()[1], dtype=np.uint8)[start:start + len(column) * width]
    return torch.from_numpy(flat.view(dtype).reshape(-1, *shape).copy())


def _spec(t: torch.Tensor) -> dict[str, object]:
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape[1:])}


def to_table(ds: MultiTaskDataset) -> pa.Table:
    """One row per sample: its split, its inputs ``x`` and one column ``y_<t>`` per task; the tasks, dtypes,
    shapes and normalization in the schema's metadata (so a reader needs nothing else)."""
    splits = [ds.split(name) for name in ("train", "val", "test")]
    names = [name for name, s in zip(("train", "val", "test"), splits) for _ in range(len(s))]
    x = torch.cat([s.x for s in splits])
    targets = [torch.cat([s.targets[t] for s in splits]) for t in range(ds.num_tasks)]
    columns = {"split": pa.array(names).dictionary_encode(), "x": _tensor_column(x)}
    columns |= {f"y_{t}": _tensor_column(y) for t, y in enumerate(targets)}
    first = ds.train
    meta = {"x": _spec(x), "targets": [_spec(y) for y in targets], "tasks": [t.to_dict() for t in ds.tasks],
            "input": {"scale": first.scale, "mean": first.mean, "std": first.std}}
    if first.encoding:  # a tabular dataset's columns, an input kind: what the stored tensor cannot say itself
        meta["input"]["encoding"] = first.encoding
    return pa.table(columns).replace_schema_metadata({"pareto_ray": json.dumps(meta)})


def from_table(table: pa.Table) -> MultiTaskDataset:
    meta = json.loads(table.schema.metadata[b"pareto_ray"])
    split_col = table.column("split").combine_chunks().dictionary_decode().to_numpy(zero_copy_only=False)
    x = _column_tensor(table.column("x"), **meta["x"])
    targets = [_column_tensor(table.column(f"y_{t}"), **spec) for t, spec in enumerate(meta["targets"])]
    norm = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["input"].items()}
    splits = {}
    for name in ("train", "val", "test"):
        mask = torch.as_tensor(split_col == name)
        splits[name] = Split(x[mask], [y[mask] for y in targets], **norm)
    return MultiTaskDataset(tasks=[Task.from_dict(t) for t in meta["tasks"]], **splits)


def cached(cfg: DataConfig, build: Callable[[], MultiTaskDataset]) -> MultiTaskDataset:
    """The dataset for ``cfg``: read from its Parquet cache, or ``build()`` once and cached."""
    if cfg.factory is not None:
        stem = "factory-" + re.sub(r"\W+", "_", cfg.factory)
    else:
        stem = f"{cfg.dataset}-t{cfg.num_tasks}" if cfg.dataset in MULTIMNIST_DATASETS else cfg.dataset
    path = cache_dir(cfg) / f"{stem}-{cache_key(cfg)}.parquet"
    if path.is_file():
        return from_table(pq.read_table(path))
    ds = build()
    write_atomically(to_table(ds), path)
    return ds


def trim(ds: MultiTaskDataset, max_train: int | None, max_eval: int | None) -> MultiTaskDataset:
    """The first ``max_train`` training and ``max_eval`` validation/test samples (None: all)."""
    return MultiTaskDataset(ds.train.head(max_train), ds.val.head(max_eval), ds.test.head(max_eval), ds.tasks)
