"""The MultiMNIST family of multi-task datasets, built deterministically and
cached as Parquet.

A composite image overlays T source digits (one label per task):

* 2 tasks: a 36×36 canvas with the digits at [0:28, 0:28] and [6:34, 6:34],
  pixel-wise max, resized to 28×28 (PaMaL's MultiMNIST);
* 3 tasks: a 42×42 canvas, top-left, top-right and bottom-centre, resized.

Sources: torchvision's MNIST / FashionMNIST read from ``root`` (downloaded
only when asked), or scikit-learn's bundled 8×8 digits ("multidigits"),
which need no download and are the embedded default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torchvision import datasets

from pareto_ray.config import DataConfig
from pareto_ray.splits import IMAGE_SIZE, MultiTaskDataset, Split

#: (canvas size, top-left corner of each digit) per number of tasks.
LAYOUTS = {2: (36, [(0, 0), (6, 6)]), 3: (42, [(0, 0), (0, 14), (14, 7)])}

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def compose(digits: list[torch.Tensor]) -> torch.Tensor:
    """Overlay T equally long stacks of ``[N, 28, 28]`` uint8 digits into composites."""
    num_tasks = len(digits)
    if num_tasks not in LAYOUTS:
        raise ValueError(f"composites are defined for 2 or 3 tasks, got {num_tasks}")
    size, corners = LAYOUTS[num_tasks]
    n = digits[0].shape[0]
    canvas = torch.zeros(n, size, size, dtype=torch.uint8)
    for d, (top, left) in zip(digits, corners):
        region = canvas[:, top:top + 28, left:left + 28]
        torch.maximum(region, d, out=region)
    resized = F.interpolate(canvas[:, None].float(), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                            antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def sklearn_digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[torch.Tensor, ...]:
    """scikit-learn's bundled 1,797 digits, upscaled to MNIST's 20-px box in a 28×28 frame."""
    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] * (255.0 / 16.0)
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    x = F.pad(x, (4, 4, 4, 4)).squeeze(1).round().clamp(0, 255).to(torch.uint8)
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.as_tensor(np.random.default_rng(seed).permutation(len(y)))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def torchvision_source(name: str, root: str | None, download: bool) -> tuple[torch.Tensor, ...]:
    """Train and test images/labels of MNIST or FashionMNIST from ``root``."""
    cls = {"MNIST": datasets.MNIST, "FashionMNIST": datasets.FashionMNIST}[name]
    if root is None:
        raise FileNotFoundError(
            f"data.root is not set: {name} needs a folder holding {name}/raw/ with {', '.join(MNIST_FILES)} "
            f"(torchvision's layout). Set data.root=PATH, or data.download=true to fetch it into data.root.")
    try:
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
    except RuntimeError as exc:
        raw = Path(root) / name / "raw"
        raise FileNotFoundError(
            f"{name} not found under {raw}: expected {', '.join(MNIST_FILES)} "
            f"(IDX files, as torchvision writes them). Pass data.download=true to let torchvision download them "
            f"into data.root={root}, or point data.root at a folder that has them.") from exc
    return train.data, train.targets, test.data, test.targets


def _sources(cfg: DataConfig) -> list[tuple[torch.Tensor, ...]]:
    """One (train_x, train_y, test_x, test_y) source per digit slot."""
    if cfg.dataset == "multidigits":
        return [sklearn_digits(cfg.seed)] * cfg.num_tasks
    if cfg.dataset == "multimnist":
        return [torchvision_source("MNIST", cfg.root, cfg.download)] * cfg.num_tasks
    if cfg.dataset == "multifashion":
        return [torchvision_source("FashionMNIST", cfg.root, cfg.download)] * cfg.num_tasks
    # Multi-(Fashion+MNIST): slots alternate Fashion, MNIST, Fashion.
    fashion = torchvision_source("FashionMNIST", cfg.root, cfg.download)
    mnist = torchvision_source("MNIST", cfg.root, cfg.download)
    n_train = min(fashion[0].shape[0], mnist[0].shape[0])
    n_test = min(fashion[2].shape[0], mnist[2].shape[0])
    fashion, mnist = ((s[0][:n_train], s[1][:n_train], s[2][:n_test], s[3][:n_test]) for s in (fashion, mnist))
    return [fashion if t % 2 == 0 else mnist for t in range(cfg.num_tasks)]


def build_dataset(cfg: DataConfig) -> MultiTaskDataset:
    """Compose the dataset from its sources (no cache)."""
    sources = _sources(cfg)
    rng = np.random.default_rng(cfg.seed)
    n_train = sources[0][0].shape[0]
    order = torch.as_tensor(rng.permutation(n_train))
    n_val = max(1, int(round(n_train * cfg.val_fraction)))
    val_idx, train_idx = order[:n_val], order[n_val:]

    def split(select, copies: int) -> Split:
        parts = [select(src) for src in sources]
        n = parts[0][0].shape[0]
        first = np.tile(np.arange(n), copies)
        rng.shuffle(first)
        idx = [torch.as_tensor(first)] + [torch.as_tensor(rng.permutation(first)) for _ in parts[1:]]
        images = compose([p[0][i] for p, i in zip(parts, idx)])
        labels = torch.stack([p[1][i] for p, i in zip(parts, idx)], dim=1)
        return Split(images, labels)

    train = split(lambda s: (s[0][train_idx], s[1][train_idx]), cfg.copies)
    val = split(lambda s: (s[0][val_idx], s[1][val_idx]), cfg.copies)
    test = split(lambda s: (s[2], s[3]), cfg.copies)
    return MultiTaskDataset(train, val, test, cfg.num_tasks)
