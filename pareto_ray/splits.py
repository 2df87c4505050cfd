"""What every dataset hands the training loop: its tasks and three splits of inputs and per-task targets (no I/O).

A ``Split`` holds its inputs in their stored form ``x [N, ...]`` (uint8 pixels,
or floats) and one target tensor per task (``[N]`` class ids or values,
``[N, d]`` vectors, ``[N, H, W]`` masks, ...).  The model sees
``(x · scale − mean) / std`` as float32, ``mean`` and ``std`` per channel
(the axis after N) or one number for all.  ``encoding`` adds to the input
spec what the stored form cannot say itself (``kind``, a tabular dataset's
``columns``: see ``pareto_ray.inputs_spec``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from pareto_ray.inputs_spec import infer_kind, normalize
from pareto_ray.tasks import Task, classification_tasks

IMAGE_SIZE = 28
NORMALIZE_MEAN, NORMALIZE_STD = 0.1307, 0.3081
Norm = float | tuple[float, ...]


@dataclass
class Split:
    x: torch.Tensor
    targets: list[torch.Tensor]
    scale: float = 1 / 255
    mean: Norm = NORMALIZE_MEAN
    std: Norm = NORMALIZE_STD
    encoding: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.targets, torch.Tensor):  # [N, T] class labels, one column per task
            self.targets = list(self.targets.unbind(1))
        self.targets = list(self.targets)
        for t, y in enumerate(self.targets):
            if y.shape[0] != self.x.shape[0]:
                raise ValueError(f"task {t + 1}'s targets hold {y.shape[0]} samples, the inputs {self.x.shape[0]}")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def images(self) -> torch.Tensor:
        """The stored inputs (an image dataset's pixels)."""
        return self.x

    @property
    def labels(self) -> torch.Tensor:
        """``[N, T]``: the per-task targets side by side (tasks with one value per sample only)."""
        return torch.stack(self.targets, dim=1)

    def inputs(self, device: torch.device | str = "cpu", index: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Float inputs (all, or ``x[index]``), scaled and normalized as the model was trained."""
        x = self.x if index is None else self.x[index]
        return normalize(x.to(device=device), self.scale, self.mean, self.std)

    def targets_at(self, index: slice | torch.Tensor, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        return [y[index].to(device) for y in self.targets]

    def take(self, index: torch.Tensor | slice) -> Split:
        """The samples at ``index``, with this split's normalization and spec."""
        return replace(self, x=self.x[index], targets=[y[index] for y in self.targets])

    def head(self, k: int | None) -> Split:
        """The first ``k`` samples (all when ``k`` is None)."""
        return self if k is None else replace(self, x=self.x[:k], targets=[y[:k] for y in self.targets])

    def input_spec(self) -> dict[str, Any]:
        """The stored inputs' kind, shape and dtype and how they are normalized (saved with a checkpoint; the
        keys are ``pareto_ray.inputs_spec.InputSpec``'s)."""
        shape, dtype = list(self.x.shape[1:]), str(self.x.dtype).removeprefix("torch.")
        extra = dict(self.encoding or {})
        kind = extra.pop("kind", None) or infer_kind(shape, dtype, "columns" in extra)
        return {"kind": kind, "shape": shape, "dtype": dtype, "scale": self.scale, "mean": self.mean, "std": self.std,
                **extra}


@dataclass
class MultiTaskDataset:
    train: Split
    val: Split
    test: Split
    tasks: list[Task] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.tasks, int):  # a number of 10-class classification tasks (the MultiMNIST family)
            self.tasks = classification_tasks(self.tasks)
        for name in ("train", "val", "test"):
            split = self.split(name)
            if len(split.targets) != len(self.tasks):
                raise ValueError(f"the {name} split has targets for {len(split.targets)} tasks, the dataset declares "
                                 f"{len(self.tasks)} ({', '.join(t.name for t in self.tasks)})")

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}: expected train, val or test")
        return getattr(self, name)

    def map(self, fn: Any) -> MultiTaskDataset:
        """The dataset with ``fn(split)`` applied to each split."""
        return replace(self, train=fn(self.train), val=fn(self.val), test=fn(self.test))
