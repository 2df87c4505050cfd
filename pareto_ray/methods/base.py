"""The method interface: what differs between Pareto-front methods.

The training loop is shared (``pareto_ray.loop``).  A method says

* how the network's weights are formed for λ (``build_model``),
* which rays a step trains on (``train_rays``, given training progress τ),
* which rays evaluation uses (``eval_rays``),

and may hook into a step at these declared points, each with its default:

* ``loss_weights`` — the weight of each ray's task losses (default: the ray);
* ``extra_loss`` — extra terms of the step's loss (regularizers; default none);
* ``combines_gradients_for`` / ``backward`` — methods that combine per-task
  gradients themselves (MGDA, EPO, gradient balancing) fill ``.grad`` in
  ``backward``; for every other method the loop backpropagates ``loss``;
* ``frozen_parameters`` — parameters that get no update at this progress
  (a freeze epoch); the loop drops their gradients after ``backward``.

The step's loss is ``Σ_m w_mᵀ L(θ(λ_m)) + extra_loss`` with ``w = loss_weights``.
Training progress τ ∈ [0, 1] is passed to every hook that depends on it;
a method keeps no hidden step state for the loop.
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

    @classmethod
    def combines_gradients_for(cls, cfg: MethodConfig) -> bool:
        """Whether this method with config ``cfg`` combines per-task gradients (known before it is built)."""
        return False

    @property
    def combines_gradients(self) -> bool:
        """True when ``backward`` combines per-task gradients itself (gradient balancing, EPO, MGDA).

        The loop then runs the step under DDP's ``no_sync`` and the method must all-reduce what it
        combines (``pareto_ray.methods.gradients``) so every worker applies the same update.  Such a step
        takes no gradient accumulation (``loop.check_step``).  Subclasses override ``combines_gradients_for``.
        """
        return self.combines_gradients_for(self.cfg)

    def loss_weights(self, task_losses: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
        """Weights ``[M, T]`` of the task losses in the step's loss (default: the rays)."""
        return rays

    def extra_loss(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor | None:
        """Extra terms of the step's loss (regularizers), or None."""
        return None

    def loss(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor:
        """Scalar loss from ``task_losses [M, T]`` (ray m's loss on task t): Σ w·L + extra terms."""
        total = (self.loss_weights(task_losses, rays) * task_losses).sum()
        extra = self.extra_loss(task_losses, rays, model)
        return total if extra is None else total + extra

    def backward(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel,
                 progress: float) -> torch.Tensor:
        """Fill ``.grad`` of the trainable parameters; return the scalar loss (default: one backward of ``loss``).

        The loop calls it only when ``combines_gradients``; otherwise it backpropagates ``loss`` itself
        (divided by the accumulation steps, through fp16's GradScaler), which is what this default does.
        """
        loss = self.loss(task_losses, rays, model)
        loss.backward()
        return loss

    def frozen_parameters(self, progress: float) -> list[torch.nn.Parameter]:
        """Parameters that get no update at progress τ (their gradients are dropped after ``backward``).

        Dropping gradients (rather than toggling ``requires_grad``) keeps DDP's
        buckets intact, and every worker skips the same parameters; optimizers
        skip parameters without a gradient.
        """
        return []


def past(fraction: float | None, progress: float) -> bool:
    """Whether training progress τ has reached ``fraction`` (None: never)."""
    return fraction is not None and progress >= fraction
