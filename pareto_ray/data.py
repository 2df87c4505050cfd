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

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from pareto_ray.config import DataConfig

IMAGE_SIZE = 28
#: (canvas size, top-left corner of each digit) per number of tasks.
LAYOUTS = {2: (36, [(0, 0), (6, 6)]), 3: (42, [(0, 0), (0, 14), (14, 7)])}
NORMALIZE_MEAN, NORMALIZE_STD = 0.1307, 0.3081
CACHE_VERSION = 1

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@dataclass
class Split:
    """Composite images ``[N, 1, 28, 28]`` (uint8) and labels ``[N, T]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def inputs(self, device: torch.device | str = "cpu", index: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Float inputs (all, or ``images[index]``), normalized like MNIST."""
        images = self.images if index is None else self.images[index]
        x = images.to(device=device, dtype=torch.float32) / 255.0
        return (x - NORMALIZE_MEAN) / NORMALIZE_STD


@dataclass
class MultiTaskDataset:
    train: Split
    val: Split
    test: Split
    num_tasks: int
    num_classes: int = 10

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}: expected train, val or test")
        return getattr(self, name)


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
    from sklearn.datasets import load_digits

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
    from torchvision import datasets

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


def _cache_key(cfg: DataConfig) -> str:
    fields = cfg.model_dump(exclude={"root", "download", "cache_dir", "max_train", "max_eval"})
    fields["version"] = CACHE_VERSION
    if cfg.root is not None:
        fields["root"] = str(Path(cfg.root).resolve())
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir(cfg: DataConfig) -> Path:
    base = cfg.cache_dir or os.environ.get("PARETO_RAY_CACHE") or Path.home() / ".cache" / "pareto-ray"
    return Path(base)


def _to_table(ds: MultiTaskDataset) -> pa.Table:
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


def _from_table(table: pa.Table, num_tasks: int) -> MultiTaskDataset:
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


def load_dataset(cfg: DataConfig) -> MultiTaskDataset:
    """The dataset for ``cfg``, built once and then read from its Parquet cache.

    The cache file is written atomically, so concurrent workers on one node
    may race to build it safely.  ``max_train``/``max_eval`` trim after loading.
    """
    path = cache_dir(cfg) / f"{cfg.dataset}-t{cfg.num_tasks}-{_cache_key(cfg)}.parquet"
    if path.is_file():
        ds = _from_table(pq.read_table(path), cfg.num_tasks)
    else:
        ds = build_dataset(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        pq.write_table(_to_table(ds), tmp)
        os.replace(tmp, path)
    return _trim(ds, cfg.max_train, cfg.max_eval)


def _trim(ds: MultiTaskDataset, max_train: int | None, max_eval: int | None) -> MultiTaskDataset:
    def cut(s: Split, k: int | None) -> Split:
        return s if k is None else Split(s.images[:k], s.labels[:k])

    return MultiTaskDataset(cut(ds.train, max_train), cut(ds.val, max_eval), cut(ds.test, max_eval), ds.num_tasks)
