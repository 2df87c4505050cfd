"""The MultiMNIST family of multi-task datasets, built deterministically and
cached as Parquet.

A composite image overlays T source digits (one label per task), pixel-wise max:

* 2 tasks: a 36×36 canvas with the digits at [0:28, 0:28] and [6:34, 6:34]
  (task 1 top-left, task 2 bottom-right), resized to 28×28 (PaMaL's MultiMNIST);
* 3 tasks: a 42×42 canvas, resized to 28×28.

Two compositions (``data.composition``):

* ``permuted`` (pareto-ray's own): each source digit is used ``copies``
  times, paired by seeded permutations; 3-task slots top-left, top-right,
  bottom-centre; resized with antialiased bilinear and rounded to uint8.
* ``paper`` (PaMaL/PaLoRA's ``multimnist.py`` and ``multimnist3digits.py``):
  indices drawn with replacement over the whole source split, distinct
  within a composite; 60,000 training composites of which 10,000 are drawn
  at random for validation, 10,000 test composites from the source test
  split; 3-task slots top-left, bottom-centre, top-right (the code's task
  order).  The uint8 canvas is cached and resized when loaded, as floats in
  [0, 1] and never rounded or clamped: 2 tasks with PIL's bicubic filter
  (through ``torch``'s antialiased bicubic, which matches PIL to ~2e-6 and is
  3× faster), 3 tasks with bilinear without antialiasing (torchvision 0.15's
  ``resize`` on a tensor, as the papers' code pins it).

Sources: torchvision's MNIST / FashionMNIST read from ``root`` (downloaded
only when asked), or scikit-learn's bundled 8×8 digits ("multidigits"),
which need no download and are the embedded default.  Multi-(Fashion+MNIST)
alternates Fashion, MNIST, Fashion over the slots.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from pareto_ray.config import DataConfig
from pareto_ray.splits import IMAGE_SIZE, NORMALIZE_MEAN, NORMALIZE_STD, MultiTaskDataset, Split
from pareto_ray.tasks import Task, classification_tasks

#: The ``data.dataset`` names this module builds.
NAMES = ("multidigits", "multimnist", "multifashion", "multi_fashion_mnist")
#: (canvas size, top-left corner of each digit) per number of tasks.
LAYOUTS = {2: (36, [(0, 0), (6, 6)]), 3: (42, [(0, 0), (0, 14), (14, 7)])}
#: The papers' code: 3 tasks in the order top-left, bottom-centre, top-right.
PAPER_LAYOUTS = {2: LAYOUTS[2], 3: (42, [(0, 0), (14, 7), (0, 14)])}
TASK_NAMES = {"permuted": {2: ["top-left", "bottom-right"], 3: ["top-left", "top-right", "bottom-centre"]},
              "paper": {2: ["top-left", "bottom-right"], 3: ["top-left", "bottom-centre", "top-right"]}}


def tasks_of(cfg: DataConfig) -> list[Task]:
    """One 10-way classification task per digit slot, named by its place on the canvas."""
    return classification_tasks(cfg.num_tasks, 10, TASK_NAMES[cfg.composition][cfg.num_tasks])

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def canvas(digits: list[torch.Tensor], layout: tuple[int, list[tuple[int, int]]]) -> torch.Tensor:
    """Overlay T equally long stacks of ``[N, 28, 28]`` uint8 digits on a canvas (pixel-wise max): ``[N, s, s]``."""
    size, corners = layout
    out = torch.zeros(digits[0].shape[0], size, size, dtype=torch.uint8)
    for d, (top, left) in zip(digits, corners):
        region = out[:, top:top + 28, left:left + 28]
        torch.maximum(region, d.reshape(-1, 28, 28), out=region)
    return out


def compose(digits: list[torch.Tensor]) -> torch.Tensor:
    """The permuted composition's composites: ``[N, 1, 28, 28]`` uint8 (antialiased bilinear, rounded)."""
    if len(digits) not in LAYOUTS:
        raise ValueError(f"composites are defined for 2 or 3 tasks, got {len(digits)}")
    resized = F.interpolate(canvas(digits, LAYOUTS[len(digits)])[:, None].float(), size=(IMAGE_SIZE, IMAGE_SIZE),
                            mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def paper_resize(canvases: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """The paper composition's inputs from uint8 canvases ``[N, 1, s, s]``: float32 ``[N, 1, 28, 28]``, not clamped.

    2 tasks: PIL's bicubic filter on the float canvas in [0, 1] (values about −0.1 … 1.1); 3 tasks: bilinear
    without antialiasing.
    """
    x = canvases.to(torch.float32) / 255.0
    if num_tasks == 2:
        return F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", antialias=True, align_corners=False)
    return F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=False, align_corners=False)


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
    from torchvision import datasets  # torchvision's import is ~3 s (its models pull in torch._dynamo)

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
    return [fashion if t % 2 == 0 else mnist for t in range(cfg.num_tasks)]


def build_dataset(cfg: DataConfig) -> MultiTaskDataset:
    """Compose the dataset from its sources (no cache); the paper composition's images are its uint8 canvases."""
    sources = _sources(cfg)
    return build_paper(cfg, sources) if cfg.composition == "paper" else build_permuted(cfg, sources)


build = build_dataset


def normalization(cfg: DataConfig) -> tuple[float, float]:
    """(mean, std) the model's inputs are normalized with, on pixels in [0, 1]."""
    return (NORMALIZE_MEAN, NORMALIZE_STD) if cfg.normalize == "mnist" else (0.0, 1.0)


def prepare(ds: MultiTaskDataset, cfg: DataConfig) -> MultiTaskDataset:
    """The paper composition's cached canvases resized; every split normalized as ``data.normalize`` says."""
    mean, std = normalization(cfg)

    def finish(s: Split) -> Split:
        if cfg.composition == "paper":
            s = replace(s, x=paper_resize(s.x, cfg.num_tasks), scale=1.0)
        return replace(s, mean=mean, std=std)

    return ds.map(finish)


def build_permuted(cfg: DataConfig, sources: list[tuple[torch.Tensor, ...]]) -> MultiTaskDataset:
    rng = np.random.default_rng(cfg.seed)
    n_train = min(src[0].shape[0] for src in sources)  # slots from different sources pair up to the shorter one
    n_test = min(src[2].shape[0] for src in sources)
    order = torch.as_tensor(rng.permutation(n_train))
    n_val = max(1, int(round(n_train * (cfg.val_fraction or 0.1))))
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

    copies = cfg.copies or 1
    train = split(lambda s: (s[0][train_idx], s[1][train_idx]), copies)
    val = split(lambda s: (s[0][val_idx], s[1][val_idx]), copies)
    test = split(lambda s: (s[2][:n_test], s[3][:n_test]), copies)
    return MultiTaskDataset(train, val, test, tasks_of(cfg))


def draw_indices(sizes: list[int], same: list[int], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` rows of one index per slot, slot t drawn uniformly (with replacement) from ``range(sizes[t])``;
    slots with the same ``same`` label (the same source) get distinct indices within a row (redrawn)."""
    idx = np.stack([rng.integers(0, n, size=count) for n in sizes], axis=1)
    while True:
        clash = np.zeros(count, dtype=bool)
        for a in range(len(sizes)):
            for b in range(a + 1, len(sizes)):
                if same[a] == same[b]:
                    clash |= idx[:, a] == idx[:, b]
        if not clash.any():
            return idx
        idx[clash] = np.stack([rng.integers(0, n, size=int(clash.sum())) for n in sizes], axis=1)


def build_paper(cfg: DataConfig, sources: list[tuple[torch.Tensor, ...]]) -> MultiTaskDataset:
    rng = np.random.default_rng(cfg.seed)
    layout = PAPER_LAYOUTS[cfg.num_tasks]
    same = [id(src) for src in sources]

    def composites(x_at: int, count: int) -> Split:
        idx = draw_indices([src[x_at].shape[0] for src in sources], same, count, rng)
        digits = [src[x_at][idx[:, t]] for t, src in enumerate(sources)]
        labels = torch.stack([src[x_at + 1][idx[:, t]] for t, src in enumerate(sources)], dim=1)
        return Split(canvas(digits, layout)[:, None], labels)

    pool = composites(0, cfg.train_count)
    order = torch.as_tensor(rng.permutation(cfg.train_count))
    val_idx, train_idx = order[:cfg.val_count], order[cfg.val_count:]
    train, val = (Split(pool.x[i], pool.labels[i]) for i in (train_idx, val_idx))
    return MultiTaskDataset(train, val, composites(2, cfg.test_count), tasks_of(cfg))
