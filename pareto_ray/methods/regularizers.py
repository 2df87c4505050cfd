"""Regularizers of the step's loss shared by several methods.

* PaMaL's multi-forward regularization (PaMaL eq. 4; LORPMAN's λ_p term);
* LORPMAN's orthogonal regularization of the task matrices (LORPMAN eq. 7–8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pareto_ray.layers import LowRankPreferenceLayer, expand_attention


def multi_forward_regularization(task_losses: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
    """PaMaL's R = Σ_t log( 1/|E_t| Σ_{(i,j)∈E_t} exp([L_t(α_j) − L_t(α_i)]_+) ).

    E_t is the lexicographic graph of task t: the W rays sorted by α_t, one
    edge from each ray to the next (α_{i,t} < α_{j,t}), W − 1 edges.  A ray
    that weighs task t more should have the lower loss on it, so the penalty
    is the *violation* L_t(α_j) − L_t(α_i) > 0.  (The printed formula has the
    difference the other way round, which would penalize the correct order.)
    A correctly ordered window gives exactly 0.
    """
    if task_losses.shape != rays.shape:
        raise ValueError(f"task losses {tuple(task_losses.shape)} and rays {tuple(rays.shape)} differ in shape")
    if rays.shape[0] < 2:
        return task_losses.new_zeros(())
    total = task_losses.new_zeros(())
    for t in range(rays.shape[1]):
        order = torch.argsort(rays[:, t])
        low, high = order[:-1], order[1:]
        violation = torch.relu(task_losses[high, t] - task_losses[low, t])
        total = total + torch.log(torch.exp(violation).mean())
    return total


def orthogonal_regularization(layers: list[LowRankPreferenceLayer], subset: torch.Tensor | None = None) -> torch.Tensor:
    """R_o = mean over layers of ‖ŴᵀŴ − I‖², Ŵ's columns the normalized flattened B_i A_i (tasks in ``subset``)."""
    total = None
    layers = expand_attention(layers)
    for layer in layers:
        a, b = layer.lora_A, layer.lora_B
        if subset is not None:
            a, b = a[subset], b[subset]
        w = F.normalize(torch.einsum("tor,tri->toi", b, a).flatten(1), dim=1)
        gram = w @ w.T
        term = (gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)).pow(2).sum()
        total = term if total is None else total + term
    return total / len(layers)
