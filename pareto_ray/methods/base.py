"""The method interface: what differs between Pareto-front methods.

The training loop is shared (``pareto_ray.loop``).  A method says

* how the network's weights are formed for λ (``build_model``),
* which rays a step trains on (``train_rays``, given training progress τ),
* which rays evaluation uses (``eval_rays``), and
* the step's loss from the ``[M, T]`` matrix of task losses, with any extra
  terms (``loss``; default Σ_m λ_mᵀ L(θ(λ_m)), the linearly scalarized sum).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from pareto_ray.models import MultiTaskNet, PreferenceModel


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class Method(ABC):
    name: ClassVar[str]
    #: False for methods whose model ignores λ (one point, not a front).
    preference_conditioned: ClassVar[bool] = True

    def __init__(self, cfg: MethodConfig, num_tasks: int):
        self.cfg = cfg
        self.num_tasks = num_tasks

    @abstractmethod
    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        """Wrap (and adapt) ``net`` so that it forms weights for λ."""

    @abstractmethod
    def train_rays(self, progress: float) -> torch.Tensor:
        """The ``[M, T]`` rays of one training step at progress τ ∈ [0, 1]."""

    def eval_rays(self, grid: torch.Tensor) -> torch.Tensor:
        """Rays the front is evaluated at (the grid, for conditioned models)."""
        return grid

    #: True for methods that combine per-task gradients themselves (gradient
    #: balancing, EPO, MGDA).  The loop then runs the step under DDP's
    #: ``no_sync`` and the method must all-reduce what it combines
    #: (``pareto_ray.distributed.all_reduce_mean``) so every worker applies the same update.
    combines_gradients: ClassVar[bool] = False

    def loss(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor:
        """Scalar loss from ``task_losses [M, T]`` (ray m's loss on task t)."""
        return (rays * task_losses).sum()

    def backward(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor:
        """Fill ``.grad`` of the trainable parameters; return the scalar loss.

        Default: one backward of ``loss``.  Gradient-combining methods override
        this (and set ``combines_gradients``).
        """
        loss = self.loss(task_losses, rays, model)
        loss.backward()
        return loss


class Freezer:
    """The freeze epoch as a fraction of training: past it, the main parameters get no update.

    Their gradients are dropped after the backward (and after any all-reduce),
    so every worker skips them alike; ``requires_grad`` is never toggled under
    DDP and the optimizer skips parameters without a gradient.
    """

    def __init__(self, after: float | None):
        self.after = after
        self.frozen: list[torch.nn.Parameter] = []
        self.progress = 0.0

    def active(self) -> bool:
        return self.after is not None and self.progress >= self.after

    def apply(self) -> None:
        if self.active():
            for p in self.frozen:
                p.grad = None


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def task_gradients(task_losses: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    """Flattened gradient of every entry of ``task_losses [M, T]``: ``[M, T, P]`` (graph kept)."""
    rows = []
    for loss in task_losses.flatten():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)]))
    return torch.stack(rows).view(*task_losses.shape, -1)


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average ``.grad`` over the workers in one flat all-reduce (what DDP does when it syncs)."""
    from pareto_ray.distributed import all_reduce_mean, world_size

    grads = [p.grad for p in params if p.grad is not None]
    if world_size() == 1 or not grads:
        return
    flat = all_reduce_mean(torch.cat([g.flatten() for g in grads]))
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
