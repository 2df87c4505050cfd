"""MGDA / MOO-MTL (Sener & Koltun, 2018): one model; each step descends along
the min-norm element of the convex hull of the per-task gradients, i.e. the
adaptively weighted loss Σ_i λ_i L_i with λ = argmin_{λ ∈ Δ} ‖Σ_i λ_i ∇L_i‖²
(Pareto MTL eq. 15–16).

The per-task gradients are taken on the shared parameters (the encoder, as
Sener & Koltun do) or on all of them (``gradients: all``), averaged over the
DDP workers before the weights are solved, so every replica computes the same
λ and applies the same combined gradient Σ_i λ_i ∇L_i.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from pareto_ray.distributed import all_reduce_mean
from pareto_ray.methods.base import Method, MethodConfig, task_gradients, trainable_parameters
from pareto_ray.minnorm import min_norm
from pareto_ray.models import FixedModel, MultiTaskNet, PreferenceModel


class MinNormConfig(MethodConfig):
    """Settings shared by the min-norm methods (MGDA, Pareto MTL)."""

    gradients: Literal["shared", "all"] = Field(
        default="shared", description="parameters whose per-task gradients enter the min-norm problem: "
                                      "the shared encoder, or every trainable parameter")
    solver_max_iter: int = Field(default=100, ge=0, le=10_000, description="iteration cap of the min-norm solver")
    solver_tol: float = Field(default=1e-10, gt=0, lt=1, description="min-norm stopping tolerance (Frank–Wolfe gap, "
                                                                   "relative to the largest squared gradient norm)")


class MGDAConfig(MinNormConfig):
    name: Literal["mgda"] = "mgda"


def gradient_parameters(net: nn.Module, which: str) -> list[nn.Parameter]:
    """The trainable parameters whose task gradients a min-norm method combines."""
    if which == "shared" and isinstance(net, MultiTaskNet):
        return trainable_parameters(net.encoder)
    return trainable_parameters(net)


#: (row of the step, that row's globally averaged task gradients [T, P'] on the min-norm parameters,
#: its task losses [T]) → task weights [T]
WeightFn = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def combined_backward(task_losses: torch.Tensor, nets: list[nn.Module], which: str,
                      weights_fn: WeightFn) -> torch.Tensor:
    """Set ``.grad`` to ∇ Σ_m Σ_t α_mt L_mt with α_m = ``weights_fn(m, ∇L_m, L_m)`` from worker-averaged gradients.

    Row m of ``task_losses [M, T]`` is the loss of network ``nets[m]`` (M = 1 for one model; Pareto MTL's
    joint model has one row per subproblem, each with its own network).  The T task gradients of a row are
    taken once over all its parameters; the min-norm problem sees their ``which`` part (``gradient_parameters``),
    and α combines the full gradients into ``.grad`` — no further backward.  One all-reduce carries every
    row's task gradients and losses, so the combined gradient already is the workers' average (the loop runs
    this step under DDP's ``no_sync``).  Returns the weighted loss (detached).
    """
    rows = []
    for losses, net in zip(task_losses, nets):
        first = gradient_parameters(net, which)
        chosen = set(first)
        params = first + [p for p in trainable_parameters(net) if p not in chosen]
        rows.append((params, sum(p.numel() for p in first), task_gradients(losses.unsqueeze(0), params)[0]))
    sizes = [g.numel() for _, _, g in rows]
    flat = all_reduce_mean(torch.cat([g.flatten() for _, _, g in rows] + [task_losses.detach().flatten()]))
    mean_losses = flat[sum(sizes):].view_as(task_losses)
    weights = []
    for m, ((params, n_first, _), part) in enumerate(zip(rows, flat[:sum(sizes)].split(sizes))):
        grads = part.view(task_losses.shape[1], -1)
        alpha = weights_fn(m, grads[:, :n_first], mean_losses[m]).to(grads)
        combined = alpha @ grads
        offset = 0
        for p in params:
            p.grad = combined[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        weights.append(alpha)
    return (torch.stack(weights).to(task_losses) * task_losses.detach()).sum()


class MGDA(Method):
    name = "mgda"
    preference_conditioned = False
    combines_gradients = True
    cfg: MGDAConfig

    def __init__(self, cfg: MGDAConfig, num_tasks: int):
        super().__init__(cfg, num_tasks)
        self.last_weights: torch.Tensor | None = None  # λ of the latest step (for inspection)

    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        return FixedModel(net)

    def train_rays(self, progress: float) -> torch.Tensor:
        return torch.full((1, self.num_tasks), 1.0 / self.num_tasks)

    def eval_rays(self, grid: torch.Tensor) -> torch.Tensor:
        return self.train_rays(1.0)

    def task_weights(self, row: int, grads: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        g = grads.double()
        weights = min_norm(g @ g.T, self.cfg.solver_max_iter, self.cfg.solver_tol).weights
        self.last_weights = weights
        return weights

    def backward(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor:
        return combined_backward(task_losses, [model.net], self.cfg.gradients, self.task_weights)
