"""Datasets: each a loader for its published files plus its tasks, cached as Parquet.

``load_dataset(cfg.data)`` is the one entry point: it builds the dataset the
config names once, caches it, and trims it to ``max_train``/``max_eval``.
"""

from __future__ import annotations

from pareto_ray.config import DataConfig
from pareto_ray.data.cache import cache_dir, cached, trim
from pareto_ray.data.multimnist import build_dataset
from pareto_ray.splits import IMAGE_SIZE, NORMALIZE_MEAN, NORMALIZE_STD, MultiTaskDataset, Split


def load_dataset(cfg: DataConfig) -> MultiTaskDataset:
    """The dataset for ``cfg``, built once and then read from its Parquet cache; ``max_train``/``max_eval`` trim it."""
    return trim(cached(cfg, lambda: build_dataset(cfg)), cfg.max_train, cfg.max_eval)


__all__ = ["IMAGE_SIZE", "NORMALIZE_MEAN", "NORMALIZE_STD", "MultiTaskDataset", "Split", "cache_dir", "load_dataset"]
