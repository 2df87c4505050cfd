"""Datasets: each a loader for its published files plus its tasks, cached as Parquet.

``load_dataset(cfg.data)`` is the one entry point: it builds the dataset the
config names (or calls ``data.factory``), caches it, trims it to
``max_train``/``max_eval`` and lets the dataset's module prepare the inputs
(``prepare``: e.g. the MultiMNIST paper composition's resize and normalization).
A dataset module exposes ``build(cfg) -> MultiTaskDataset`` and
``prepare(ds, cfg) -> MultiTaskDataset``; ``DATASETS`` names them.  The seed
papers' benchmarks (Census, UTKFace, CelebA, CIFAR-100, CityScapes, NYUv2,
SARCOS) each have a module reading their published files; ``docs/datasets.md``
gives each one's layout, tasks and paper setting.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.parquet as pq

from pareto_ray.config import DataConfig
from pareto_ray.data import celeba, census, cifar100, cityscapes, multimnist, nyuv2, sarcos, utkface
from pareto_ray.data.cache import cache_dir, cache_path, cached, from_table, table_meta, trim, write_train_shards
from pareto_ray.data.factory import build_from_factory
from pareto_ray.splits import IMAGE_SIZE, NORMALIZE_MEAN, NORMALIZE_STD, MultiTaskDataset, Split

#: ``data.dataset`` → the module that builds and prepares it.
DATASETS: dict[str, ModuleType] = {
    name: module for module in (multimnist, census, utkface, celeba, cifar100, cityscapes, nyuv2, sarcos)
    for name in module.NAMES
}


def _source(cfg: DataConfig) -> tuple[Callable[[], MultiTaskDataset], bool, Callable | None]:
    """(build, whether it is cached, the dataset module's ``prepare`` or None)."""
    if cfg.factory:
        return partial(build_from_factory, cfg), cfg.cache is True, None
    module = DATASETS[cfg.dataset]
    return partial(module.build, cfg), cfg.cache is not False, module.prepare


def load_dataset(cfg: DataConfig, train: bool = True) -> MultiTaskDataset:
    """The dataset for ``cfg``: built (or read from its Parquet cache), trimmed, prepared for the model.

    ``train=False``: validation and test only, the training split empty (a streamed run's workers).
    """
    build, use_cache, prepare = _source(cfg)
    ds = trim(cached(cfg, build, train) if use_cache else build(), cfg.max_train, cfg.max_eval)
    return prepare(ds, cfg) if prepare else ds


NOT_CACHED = ("data.streaming=true reads the dataset's Parquet cache, and this dataset is not cached: set "
              "data.cache=true (a data.factory is not cached by default)")


def ensure_cache(cfg: DataConfig) -> Path | None:
    """Build ``cfg``'s Parquet cache once (nothing is read when it exists); None when the dataset is not cached."""
    build, use_cache, _ = _source(cfg)
    if not use_cache:
        return None
    if not cache_path(cfg).is_file():
        cached(cfg, build)
    return cache_path(cfg)


def streams(cfg: DataConfig) -> bool:
    """Whether training streams ``cfg``'s data (``data.streaming``; auto: a cache over ``data.stream_above_mb``).

    Builds the cache when needed.  Streaming reads the cache's shards, so an uncached dataset (a factory
    without ``data.cache``) is refused with ``data.streaming=true``.
    """
    path = ensure_cache(cfg) if cfg.streaming is not False else None
    if path is None:
        if cfg.streaming is True:
            raise ValueError(NOT_CACHED)
        return False
    if cfg.streaming == "auto":
        meta = pq.ParquetFile(path).metadata
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        return size > cfg.stream_above_mb * 2**20
    return True


def train_shards(cfg: DataConfig) -> tuple[Path, int]:
    """The training split as Parquet shards for Ray Data (the cache built first when missing); → (folder, rows)."""
    if ensure_cache(cfg) is None:
        raise ValueError(NOT_CACHED)
    return write_train_shards(cfg)


def decode_rows(table: pa.Table, cfg: DataConfig, meta: dict) -> Split:
    """Rows of the training shards (``cache.train_shards``) → the training ``Split`` as ``load_dataset`` gives it
    (the dataset's ``prepare`` applied: e.g. the MultiMNIST paper composition's resize)."""
    ds = from_table(table, meta)
    _, _, prepare = _source(cfg)
    return (prepare(ds, cfg) if prepare else ds).train


def input_normalization(cfg: DataConfig) -> tuple[float, float]:
    """(mean, std) of the MultiMNIST family's inputs, on pixels in [0, 1]."""
    return multimnist.normalization(cfg)


__all__ = ["DATASETS", "IMAGE_SIZE", "NORMALIZE_MEAN", "NORMALIZE_STD", "MultiTaskDataset", "Split", "cache_dir",
           "decode_rows", "ensure_cache", "input_normalization", "load_dataset", "streams", "table_meta",
           "train_shards"]
