"""COSMOS — Conditioned One-Shot Multi-Objective Search (Ruchte & Grabocka, 2021).

The preference is an extra input of the network's first layer: T constant
image channels for a convolution, T extra features for a linear layer
(``PreferenceInputLayer``).  The loss adds a cosine-similarity penalty that
pulls the loss vector towards the ray:  Σ_m λ_mᵀ L_m − λ_c Σ_m cos(L_m, λ_m).
Defaults as in the LORPMAN/PaMaL comparisons: λ_c = 1, λ ~ Dir(1), one ray per batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from pareto_ray.layers import PreferenceInputLayer, find_targets, inject
from pareto_ray.methods.base import Method, MethodConfig
from pareto_ray.models import AdaptedModel, MultiTaskNet, PreferenceModel
from pareto_ray.preferences import RayGenerator


class COSMOSConfig(MethodConfig):
    name: Literal["cosmos"] = "cosmos"
    cosine_weight: float = Field(default=1.0, ge=0, description="λ_c, weight of the cosine-similarity penalty")
    concentration: float = Field(default=1.0, gt=0, description="Dirichlet concentration of the training rays")
    rays_per_step: int = Field(default=1, ge=1, le=64, description="rays per batch")


class COSMOS(Method):
    name = "cosmos"
    cfg: COSMOSConfig

    def __init__(self, cfg: COSMOSConfig, num_tasks: int):
        super().__init__(cfg, num_tasks)
        self.rays = RayGenerator()

    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        first = find_targets(net.encoder)[0]
        layers = inject(net.encoder, [first], lambda m: PreferenceInputLayer(m, self.num_tasks))
        return AdaptedModel(net, layers)

    def train_rays(self, progress: float) -> torch.Tensor:
        return self.rays.dirichlet(self.cfg.rays_per_step, self.num_tasks, self.cfg.concentration)

    def extra_loss(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor | None:
        return -self.cfg.cosine_weight * F.cosine_similarity(task_losses, rays, dim=1).sum()
