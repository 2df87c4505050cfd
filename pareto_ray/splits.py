"""What every dataset hands the training loop: three splits of inputs and per-task labels (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

IMAGE_SIZE = 28
NORMALIZE_MEAN, NORMALIZE_STD = 0.1307, 0.3081


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
