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

from typing import Literal

import torch

from pareto_ray.methods.base import Method
from pareto_ray.methods.gradients import MinNormConfig, combined_backward
from pareto_ray.models import FixedModel, MultiTaskNet, PreferenceModel
from pareto_ray.solvers.minnorm import min_norm


class MGDAConfig(MinNormConfig):
    name: Literal["mgda"] = "mgda"


class MGDA(Method):
    name = "mgda"
    preference_conditioned = False
    cfg: MGDAConfig

    def __init__(self, cfg: MGDAConfig, num_tasks: int):
        super().__init__(cfg, num_tasks)
        self.last_weights: torch.Tensor | None = None  # λ of the latest step (for inspection)

    @classmethod
    def combines_gradients_for(cls, cfg: MGDAConfig) -> bool:
        return True

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

    def backward(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel,
                 progress: float) -> torch.Tensor:
        return combined_backward(task_losses, [model.net], self.cfg.gradients, self.task_weights)
