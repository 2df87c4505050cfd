"""CIFAR-100 as 20 tasks (LORPMAN §4.3, D.6): one 5-way task per superclass, over its five fine classes.

Files: torchvision's ``CIFAR100`` layout, ``data.root/cifar-100-python/`` with
the python pickles ``meta`` (``fine_label_names``, ``coarse_label_names``),
``train`` and ``test`` (``data`` uint8 [N, 3072] as 1024 red, 1024 green, 1024
blue values row by row; ``fine_labels``; ``coarse_labels``); keys may be bytes
(``b'fine_labels'``, as Python 3 writes them) or strings (the published Python 2
pickles read with ``encoding='latin1'``, as torchvision reads them).
``data.download: true`` lets torchvision fetch and md5-check the archive.

Tasks: superclass k's task labels an image of that superclass by the rank of
its fine class among the superclass's five (Auto-λ's ``np.unique`` order, i.e.
alphabetical: LORPMAN D.6's lists); every other task's label is missing (−1).
So each image trains and scores one task, and a batch holds about 1/20 of its
samples per task — the missing-label rule of ``pareto_ray.tasks``.  The file's
coarse labels must agree with the standard fine → superclass table (checked).

Inputs: 32×32 uint8, normalized with Auto-λ's CIFAR-100 mean and std.  The
papers give no validation split: 10% of the training images, drawn with
``data.seed``, are held out (ours); test: the test file.  Auto-λ's random crop
and flip are not applied (the training loop has no augmentation).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pareto_ray.config import DataConfig
from pareto_ray.data.files import malformed_file, missing_file, require_root
from pareto_ray.splits import MultiTaskDataset, Split
from pareto_ray.tasks import Task

NAMES = ("cifar100",)
FOLDER = "cifar-100-python"
#: Superclass of each fine class, in CIFAR-100's (alphabetical) fine-label order.
FINE_TO_COARSE = (4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
                  0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4,
                  18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19,
                  5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13)
MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)  # Auto-λ's trainer_cifar.py
VAL_FRACTION = 0.1
ORIGIN = ("CIFAR-100 (Krizhevsky 2009; https://www.cs.toronto.edu/~kriz/cifar.html) in torchvision's layout: "
          "data.root/cifar-100-python/ with meta, train and test (from cifar-100-python.tar.gz); "
          "data.download=true lets torchvision fetch it")
EXPECTED = "a python pickle of a dict with data (uint8 [N, 3072]), fine_labels and coarse_labels"
EXPECTED_META = "a python pickle of a dict with fine_label_names (100) and coarse_label_names (20)"


def read_pickle(path: Path, expected: str) -> dict[str, Any]:
    """A CIFAR pickle as a dict with string keys (bytes keys and values decoded)."""
    if not path.is_file():
        raise missing_file(path, expected, ORIGIN)
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="latin1")
    except Exception as exc:  # any unpickling failure: the file is not what CIFAR ships
        raise malformed_file(path, f"not a python pickle ({type(exc).__name__}: {exc})", expected, ORIGIN) from None
    if not isinstance(raw, dict):
        raise malformed_file(path, f"holds a {type(raw).__name__}, not a dict", expected, ORIGIN)

    def text(v: Any) -> Any:
        return v.decode("latin1") if isinstance(v, bytes) else v

    return {text(k): [text(x) for x in v] if isinstance(v, list) else v for k, v in raw.items()}


def read_split(path: Path) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(images ``uint8 [N, 3, 32, 32]``, fine labels, coarse labels) of the ``train`` or ``test`` pickle."""
    entry = read_pickle(path, EXPECTED)
    missing = [k for k in ("data", "fine_labels", "coarse_labels") if k not in entry]
    if missing:
        raise malformed_file(path, f"no {', '.join(missing)} (keys: {', '.join(map(str, entry))})", EXPECTED, ORIGIN)
    data = np.asarray(entry["data"])
    fine, coarse = np.asarray(entry["fine_labels"]), np.asarray(entry["coarse_labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise malformed_file(path, f"data is {data.dtype} {list(data.shape)}", EXPECTED, ORIGIN)
    if not (len(fine) == len(coarse) == len(data)):
        raise malformed_file(path, f"{len(data)} images, {len(fine)} fine and {len(coarse)} coarse labels", EXPECTED,
                             ORIGIN)
    if len(fine) and (fine.min() < 0 or fine.max() > 99):
        raise malformed_file(path, "fine labels outside 0-99", EXPECTED, ORIGIN)
    wrong = np.flatnonzero(np.asarray(FINE_TO_COARSE)[fine] != coarse)
    if len(wrong):
        i = int(wrong[0])
        raise malformed_file(path, f"image {i}: fine class {int(fine[i])} is in superclass {FINE_TO_COARSE[fine[i]]}, "
                             f"its coarse label says {int(coarse[i])}", EXPECTED, ORIGIN)
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), fine, coarse


def tasks_of(meta: dict[str, Any], path: Path) -> list[Task]:
    fine_names, coarse_names = meta.get("fine_label_names"), meta.get("coarse_label_names")
    if not isinstance(fine_names, list) or not isinstance(coarse_names, list) or len(fine_names) != 100 \
            or len(coarse_names) != 20:
        raise malformed_file(path, "fine_label_names / coarse_label_names are not lists of 100 / 20 names",
                             EXPECTED_META, ORIGIN)
    return [Task(coarse_names[k], "classification", 5,
                 labels=tuple(fine_names[f] for f in range(100) if FINE_TO_COARSE[f] == k)) for k in range(20)]


def superclass_targets(fine: np.ndarray) -> list[torch.Tensor]:
    """One ``int8 [N]`` target per superclass: the fine class's rank within it, −1 for images of other superclasses."""
    fine_to_coarse = np.asarray(FINE_TO_COARSE)
    rank = np.zeros(100, dtype=np.int8)
    for k in range(20):
        rank[np.flatnonzero(fine_to_coarse == k)] = np.arange(5)
    coarse = fine_to_coarse[fine]
    return [torch.from_numpy(np.where(coarse == k, rank[fine], -1).astype(np.int8)) for k in range(20)]


def build(cfg: DataConfig) -> MultiTaskDataset:
    root = require_root(cfg, f"{FOLDER}/ with meta, train and test", ORIGIN)
    folder = root / FOLDER
    if not (folder / "train").is_file() and cfg.download:
        from torchvision import datasets  # imported on download only: torchvision's import is ~3 s

        for train in (True, False):
            datasets.CIFAR100(str(root), train=train, download=True)
    meta_path = folder / "meta"
    tasks = tasks_of(read_pickle(meta_path, EXPECTED_META), meta_path)
    x, fine, _ = read_split(folder / "train")
    x_test, fine_test, _ = read_split(folder / "test")
    order = torch.as_tensor(np.random.default_rng(cfg.seed).permutation(len(x)))
    n_val = max(1, int(round(len(x) * VAL_FRACTION)))
    targets = superclass_targets(fine)

    def split(index: torch.Tensor) -> Split:
        return Split(x[index], [t[index] for t in targets], scale=1 / 255, mean=MEAN, std=STD)

    test = Split(x_test, superclass_targets(fine_test), scale=1 / 255, mean=MEAN, std=STD)
    return MultiTaskDataset(split(order[n_val:]), split(order[:n_val]), test, tasks)


def prepare(ds: MultiTaskDataset, cfg: DataConfig) -> MultiTaskDataset:
    """Nothing to do: the images are cached as uint8 and normalized per channel on load."""
    return ds
