"""Datasets built once and cached as Parquet, keyed by the config fields that change their content.

The cache file is written atomically, so concurrent workers on one node may
race to build it safely.  ``cache_root`` is the one place that says where
pareto-ray keeps derived files (the toy problems' reference fronts too).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pareto_ray.config import DataConfig
from pareto_ray.splits import IMAGE_SIZE, MultiTaskDataset, Split

CACHE_VERSION = 1


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
    fields = cfg.model_dump(exclude={"root", "download", "cache_dir", "max_train", "max_eval"})
    fields["version"] = CACHE_VERSION
    if cfg.root is not None:
        fields["root"] = str(Path(cfg.root).resolve())
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def to_table(ds: MultiTaskDataset) -> pa.Table:
    columns: dict[str, list] = {"split": [], "image": []}
    for t in range(ds.num_tasks):
        columns[f"label_{t}"] = []
    for name in ("train", "val", "test"):
        s = ds.split(name)
        columns["split"] += [name] * len(s)
        columns["image"] += [row.tobytes() for row in s.images.numpy().reshape(len(s), -1)]
        for t in range(ds.num_tasks):
            columns[f"label_{t}"] += s.labels[:, t].tolist()
    return pa.table({"split": pa.array(columns["split"]).dictionary_encode(),
                     "image": pa.array(columns["image"], type=pa.binary(IMAGE_SIZE * IMAGE_SIZE)),
                     **{k: pa.array(v, type=pa.int8()) for k, v in columns.items() if k.startswith("label_")}})


def from_table(table: pa.Table, num_tasks: int) -> MultiTaskDataset:
    split_col = np.asarray(table.column("split").to_pylist())
    flat = np.frombuffer(b"".join(table.column("image").to_pylist()), dtype=np.uint8)
    images = torch.from_numpy(flat.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE).copy())
    labels = torch.stack([torch.tensor(table.column(f"label_{t}").to_numpy(), dtype=torch.long)
                          for t in range(num_tasks)], dim=1)
    splits = {}
    for name in ("train", "val", "test"):
        mask = torch.as_tensor(split_col == name)
        splits[name] = Split(images[mask], labels[mask])
    return MultiTaskDataset(num_tasks=num_tasks, **splits)


def cached(cfg: DataConfig, build: Callable[[], MultiTaskDataset]) -> MultiTaskDataset:
    """The dataset for ``cfg``: read from its Parquet cache, or ``build()`` once and cached."""
    path = cache_dir(cfg) / f"{cfg.dataset}-t{cfg.num_tasks}-{cache_key(cfg)}.parquet"
    if path.is_file():
        return from_table(pq.read_table(path), cfg.num_tasks)
    ds = build()
    write_atomically(to_table(ds), path)
    return ds


def trim(ds: MultiTaskDataset, max_train: int | None, max_eval: int | None) -> MultiTaskDataset:
    """The first ``max_train`` training and ``max_eval`` validation/test samples (None: all)."""
    def cut(s: Split, k: int | None) -> Split:
        return s if k is None else Split(s.images[:k], s.labels[:k])

    return MultiTaskDataset(cut(ds.train, max_train), cut(ds.val, max_eval), cut(ds.test, max_eval), ds.num_tasks)
