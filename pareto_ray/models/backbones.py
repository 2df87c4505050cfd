"""Named backbones: a shared encoder plus one head per task, built from the config's ``model:`` section."""

from __future__ import annotations

from typing import Any

from torch import nn

from pareto_ray.models.preference import MultiTaskNet


def lenet(num_tasks: int, num_classes: int = 10) -> MultiTaskNet:
    """PaMaL's MultiMNIST LeNet (shared bottom + one MLP head per task), 1×28×28 input."""
    encoder = nn.Sequential(
        nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(320, 50), nn.ReLU(),
    )
    heads = [nn.Sequential(nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, num_classes)) for _ in range(num_tasks)]
    return MultiTaskNet(encoder, heads)


def mlp(num_tasks: int, num_classes: int = 10, in_features: int = 784, hidden: int = 100) -> MultiTaskNet:
    """A two-layer MLP encoder on flattened inputs, with LeNet-style heads."""
    encoder = nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
    )
    heads = [nn.Sequential(nn.Linear(hidden, 50), nn.ReLU(), nn.Linear(50, num_classes)) for _ in range(num_tasks)]
    return MultiTaskNet(encoder, heads)


BACKBONES = {"lenet": lenet, "mlp": mlp}


def build_backbone(model_cfg: Any, num_tasks: int, num_classes: int = 10) -> MultiTaskNet:
    """The backbone ``model_cfg.backbone`` names (``model_cfg``: the config's ``model:`` section)."""
    kwargs = {"hidden": model_cfg.hidden} if model_cfg.backbone == "mlp" else {}
    return BACKBONES[model_cfg.backbone](num_tasks, num_classes, **kwargs)
