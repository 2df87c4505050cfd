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
import shutil
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
    fields = cfg.model_dump(exclude={"root", "download", "cache_dir", "max_train", "max_eval", "normalize",
                                    "streaming", "stream_above_mb", "shard_rows", "shuffle_buffer"})  # applied on load
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


def table_meta(schema: pa.Schema) -> dict:
    """What ``to_table`` put in the schema's metadata: dtypes, shapes, tasks, normalization."""
    return json.loads(schema.metadata[b"pareto_ray"])


def from_table(table: pa.Table, meta: dict | None = None) -> MultiTaskDataset:
    """The dataset in ``table`` (``meta``: ``table_meta`` of the file it came from, when the table lost it)."""
    meta = meta or table_meta(table.schema)
    split_col = table.column("split").combine_chunks().dictionary_decode().to_numpy(zero_copy_only=False)
    x = _column_tensor(table.column("x"), **meta["x"])
    targets = [_column_tensor(table.column(f"y_{t}"), **spec) for t, spec in enumerate(meta["targets"])]
    norm = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["input"].items()}
    splits = {}
    for name in ("train", "val", "test"):
        mask = torch.as_tensor(split_col == name)
        splits[name] = Split(x[mask], [y[mask] for y in targets], **norm)
    return MultiTaskDataset(tasks=[Task.from_dict(t) for t in meta["tasks"]], **splits)


def cache_path(cfg: DataConfig) -> Path:
    """The Parquet file that caches ``cfg``'s dataset (it may not exist yet)."""
    if cfg.factory is not None:
        stem = "factory-" + re.sub(r"\W+", "_", cfg.factory)
    else:
        stem = f"{cfg.dataset}-t{cfg.num_tasks}" if cfg.dataset in MULTIMNIST_DATASETS else cfg.dataset
    return cache_dir(cfg) / f"{stem}-{cache_key(cfg)}.parquet"


def cached(cfg: DataConfig, build: Callable[[], MultiTaskDataset], train: bool = True) -> MultiTaskDataset:
    """The dataset for ``cfg``: read from its Parquet cache, or ``build()`` once and cached.  ``train=False``
    reads validation and test only (the training split comes back empty, its shape and spec kept)."""
    path = cache_path(cfg)
    if path.is_file():
        return from_table(pq.read_table(path, filters=None if train else [("split", "!=", "train")]))
    ds = build()
    write_atomically(to_table(ds), path)
    return ds if train else replace(ds, train=ds.train.head(0))


def write_train_shards(cfg: DataConfig) -> tuple[Path, int]:
    """The training split of ``cfg``'s cache as Parquet shards of ``data.shard_rows`` rows (its first
    ``data.max_train``), written once beside the cache (which must exist), read from it in batches (never
    whole); → (folder, rows).

    Each shard keeps the cache's columns and metadata and adds ``index``, the sample's row in the training
    split (what a test checks each epoch's samples by).
    """
    source = cache_path(cfg)
    folder = source.with_name(f"{source.stem}.train-{cfg.max_train or 'all'}-{cfg.shard_rows}")
    done = folder / "_rows"
    if done.is_file():
        return folder, int(done.read_text())
    reader = pq.ParquetFile(source)
    metadata = reader.schema_arrow.metadata
    tmp = folder.with_name(f"{folder.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir(parents=True)
    rows, pending, shard = 0, [], 0
    limit = cfg.max_train or float("inf")

    def flush() -> None:
        nonlocal pending, shard
        table = pa.Table.from_batches(pending).replace_schema_metadata(metadata)
        pq.write_table(table, tmp / f"part-{shard:05d}.parquet")
        pending, shard = [], shard + 1

    for batch in reader.iter_batches(batch_size=cfg.shard_rows):
        split = batch.column("split")
        split = split.dictionary_decode() if pa.types.is_dictionary(split.type) else split
        batch = batch.filter(pc.equal(split, "train"))
        batch = batch.slice(0, int(min(batch.num_rows, limit - rows)))
        if batch.num_rows == 0:
            continue
        index = pa.array(np.arange(rows, rows + batch.num_rows, dtype=np.int64))
        pending.append(batch.append_column("index", index))
        rows += batch.num_rows
        if sum(b.num_rows for b in pending) >= cfg.shard_rows:
            flush()
        if rows >= limit:
            break
    if pending:
        flush()
    (tmp / "_rows").write_text(str(rows))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process wrote the same shards first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, rows


def trim(ds: MultiTaskDataset, max_train: int | None, max_eval: int | None) -> MultiTaskDataset:
    """The first ``max_train`` training and ``max_eval`` validation/test samples (None: all)."""
    return MultiTaskDataset(ds.train.head(max_train), ds.val.head(max_eval), ds.test.head(max_eval), ds.tasks)
