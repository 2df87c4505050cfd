"""Training data streamed by Ray Data: the cached training split as Parquet shards, decoded in Ray Data tasks.

For data that does not fit in a worker's memory, or whose decoding should run
on CPU nodes while GPUs train (``data.streaming``; auto by the cache's size).
The driver writes the shards once (``data.cache.train_shards``) and hands
``train_dataset(cfg.data)`` to the ``TorchTrainer``: ``read_parquet`` (file
order shuffled per epoch) → ``map_batches(decode)`` (the dataset's own
``prepare`` and normalization, in Ray Data tasks on whatever CPUs the workers
leave free: ``ray.data_cpus``).  Ray Train splits the stream equally over the
workers; each worker reads its shard with ``epoch_batches``.

What this changes against the in-memory path (``loop.shard_batches``):

* each worker gets ``⌊N / W⌋`` rows per epoch (Ray Train's equal split drops
  the fewer than W rows left over) and drops its own last incomplete batch,
  so every sample is trained at most once per epoch, and all workers take
  the same number of steps;
* the order is the shuffled file order plus a local shuffle buffer per worker
  (``data.shuffle_buffer`` rows), not one seeded global permutation, so W
  workers do *not* see exactly the global batch one worker would: the
  in-memory path keeps that property (and its test); this one keeps the
  batch size and the samples per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
import torch
from ray.data.datasource import FileShuffleConfig

from pareto_ray.config import DataConfig
from pareto_ray.data import decode_rows, table_meta, train_shards


def decode(batch: pa.Table, cfg: DataConfig, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """A Ray Data batch of shard rows → float32 model inputs ``x``, targets ``y_<t>`` and each row's ``index``."""
    split = decode_rows(batch, cfg, meta)
    out = {"x": split.inputs().numpy(), "index": batch.column("index").to_numpy()}
    out |= {f"y_{t}": y.numpy() for t, y in enumerate(split.targets)}
    return out


def train_dataset(cfg: DataConfig, seed: int = 0) -> tuple[ray.data.Dataset, int]:
    """The training split as a Ray Data dataset of decoded batches, and its number of rows."""
    folder, rows = train_shards(cfg)
    meta = table_meta(pq.ParquetFile(next(folder.glob("*.parquet"))).schema_arrow)
    ds = ray.data.read_parquet(str(folder), shuffle=FileShuffleConfig(seed=seed))
    ds = ds.map_batches(decode, batch_format="pyarrow", batch_size=min(cfg.shard_rows, 1024),
                        fn_kwargs={"cfg": cfg, "meta": meta})
    return ds, rows


def steps_per_epoch(rows: int, global_batch: int, world_size: int) -> int:
    """Optimizer steps of a streamed epoch: ``⌊⌊rows / W⌋ / (B / W)⌋`` on every worker."""
    per_worker = global_batch // world_size
    steps = (rows // world_size) // per_worker
    if steps < 1:
        raise ValueError(f"only {rows} training samples for a global batch of {global_batch} over {world_size} "
                         f"workers: lower train.batch_size or raise data.max_train")
    return steps


def epoch_batches(shard: ray.data.DataIterator, global_batch: int, world_size: int, epoch: int, seed: int,
                  device: torch.device | str, num_tasks: int, shuffle_buffer: int | None = None,
                  with_index: bool = False) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    """This worker's ``(x, targets)`` batches of B/W rows for one epoch (the last incomplete one dropped),
    shuffled through a buffer seeded by (seed, epoch, rank) — or ``(x, targets, index)`` with ``with_index``."""
    per_worker = global_batch // world_size
    rank = ray.train.get_context().get_world_rank() if world_size > 1 else 0
    for batch in shard.iter_torch_batches(batch_size=per_worker, drop_last=True, device=device,
                                          local_shuffle_buffer_size=shuffle_buffer or 4 * per_worker,
                                          local_shuffle_seed=(seed * 100_003 + epoch) * 1_009 + rank):
        targets = [batch[f"y_{t}"] for t in range(num_tasks)]
        yield (batch["x"], targets, batch["index"]) if with_index else (batch["x"], targets)
