"""Per-task gradients and their combinations, shared by the gradient-combining methods.

Every combination here is computed from gradients (and losses) averaged over
the DDP workers, so every replica applies the same update; the loop runs
these steps under DDP's ``no_sync`` (``Method.combines_gradients``).

* ``task_gradients``: the flat gradient of each task loss;
* ``all_reduce_gradients``: average ``.grad`` over workers in one flat all-reduce;
* ``combined_backward``: ``.grad`` = Σ_t α_t ∇L_t with α from a solver (MGDA, Pareto MTL);
* ``epo_backward``: EPO's LP weights, then one backward (PHN, PHN-LoRA with ``solver: epo``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from pareto_ray.distributed import all_reduce_mean, world_size
from pareto_ray.methods.base import MethodConfig
from pareto_ray.models import MultiTaskNet, PreferenceModel
from pareto_ray.solvers.epo import epo_weights


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def task_gradients(task_losses: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """Flattened gradient of every entry of ``task_losses [M, T]``: ``[M, T, P]`` (graph kept)."""
    rows = []
    for loss in task_losses.flatten():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)]))
    return torch.stack(rows).view(*task_losses.shape, -1)


def split_flat(flat: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """A flat vector ``[Σ numel]`` cut into views shaped like ``params`` (in order)."""
    return [part.view_as(p) for part, p in zip(flat.split([p.numel() for p in params]), params)]


def all_reduce_gradients(params: list[nn.Parameter]) -> None:
    """Average ``.grad`` over the workers in one flat all-reduce (what DDP does when it syncs)."""
    with_grad = [p for p in params if p.grad is not None]
    if world_size() == 1 or not with_grad:
        return
    flat = all_reduce_mean(torch.cat([p.grad.flatten() for p in with_grad]))
    for p, g in zip(with_grad, split_flat(flat, with_grad)):
        p.grad.copy_(g)


class MinNormConfig(MethodConfig):
    """Settings shared by the min-norm methods (MGDA, Pareto MTL)."""

    gradients: Literal["shared", "all"] = Field(
        default="shared", description="parameters whose per-task gradients enter the min-norm problem: "
                                      "the shared encoder, or every trainable parameter")
    solver_max_iter: int = Field(default=100, ge=0, le=10_000, description="iteration cap of the min-norm solver")
    solver_tol: float = Field(default=1e-10, gt=0, lt=1, description="min-norm stopping tolerance (Frank–Wolfe gap, "
                                                                   "relative to the largest squared gradient norm)")


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
    row's task gradients and losses, so the combined gradient already is the workers' average.
    Returns the weighted loss (detached).
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
        for p, g in zip(params, split_flat(alpha @ grads, params)):
            p.grad = g.clone()
        weights.append(alpha)
    return (torch.stack(weights).to(task_losses) * task_losses.detach()).sum()


def epo_task_weights(task_losses: torch.Tensor, rays: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """EPO's weights ``[M, T]`` per ray, from worker-averaged losses and task gradients (same on every worker)."""
    grads = all_reduce_mean(task_gradients(task_losses, params).double())  # [M, T, P]
    losses = all_reduce_mean(task_losses.detach().double().clone())
    gram = (grads @ grads.transpose(1, 2)).cpu().numpy()
    losses_np, rays_np = losses.cpu().numpy(), rays.detach().double().cpu().numpy()
    weights = np.stack([epo_weights(losses_np[m], gram[m], rays_np[m]) for m in range(rays_np.shape[0])])
    return torch.as_tensor(weights, dtype=task_losses.dtype, device=task_losses.device)


def epo_backward(task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel, params: list[nn.Parameter],
                 extra: torch.Tensor | None = None) -> torch.Tensor:
    """EPO step: weights from the LP on ``params``' task gradients, then one backward of Σ w·L (+ ``extra``),
    and the gradients of every trainable parameter averaged over workers by hand."""
    weights = epo_task_weights(task_losses, rays, params)
    loss = (weights * task_losses).sum()
    if extra is not None:
        loss = loss + extra
    loss.backward()
    all_reduce_gradients(trainable_parameters(model))
    return loss
