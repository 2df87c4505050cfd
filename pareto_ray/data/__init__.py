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

from types import ModuleType

from pareto_ray.config import DataConfig
from pareto_ray.data import celeba, census, cifar100, cityscapes, multimnist, nyuv2, sarcos, utkface
from pareto_ray.data.cache import cache_dir, cached, trim
from pareto_ray.data.factory import build_from_factory
from pareto_ray.splits import IMAGE_SIZE, NORMALIZE_MEAN, NORMALIZE_STD, MultiTaskDataset, Split

#: ``data.dataset`` → the module that builds and prepares it.
DATASETS: dict[str, ModuleType] = {
    name: module for module in (multimnist, census, utkface, celeba, cifar100, cityscapes, nyuv2, sarcos)
    for name in module.NAMES
}


def load_dataset(cfg: DataConfig) -> MultiTaskDataset:
    """The dataset for ``cfg``: built (or read from its Parquet cache), trimmed, prepared for the model."""
    if cfg.factory:
        def build() -> MultiTaskDataset:
            return build_from_factory(cfg)
        use_cache, prepare = cfg.cache is True, None
    else:
        module = DATASETS[cfg.dataset]

        def build() -> MultiTaskDataset:
            return module.build(cfg)
        use_cache, prepare = cfg.cache is not False, module.prepare
    ds = trim(cached(cfg, build) if use_cache else build(), cfg.max_train, cfg.max_eval)
    return prepare(ds, cfg) if prepare else ds


def input_normalization(cfg: DataConfig) -> tuple[float, float]:
    """(mean, std) of the MultiMNIST family's inputs, on pixels in [0, 1]."""
    return multimnist.normalization(cfg)


__all__ = ["DATASETS", "IMAGE_SIZE", "NORMALIZE_MEAN", "NORMALIZE_STD", "MultiTaskDataset", "Split", "cache_dir",
           "input_normalization", "load_dataset"]
