"""LORPMAN — Low-Rank Pareto Manifold Learning (Chen & Kwok, 2024, Algorithm 1).

θ(α)^l = θ₀^l + s Σ_i α_i B_i^l A_i^l on the shared bottom (``LowRankPreferenceLayer``
with scale s), b rays α ~ Dir(p) per batch, loss
Σ_j α_jᵀ L(θ(α_j)) + λ_p R_p + λ_o R_o with PaMaL's multi-forward
regularization R_p and the orthogonal regularization R_o (eq. 7–8) of the
normalized flattened B_i A_i.  After the freeze epoch only the low-rank
matrices train (θ₀ and the heads keep their values).

Defaults are the MultiMNIST settings (Section 4.2, App. D.3): r = 8,
λ_o = 1, λ_p = 0, b = 4, p = 1; s ∈ {1, 2, 4, 6} and the freeze epoch ∈
{4, 6, 8} of 10 were tuned there — here s = 1 and the freeze at 80%.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from pareto_ray.layers import LowRankPreferenceLayer, default_targets, inject
from pareto_ray.methods.base import Freezer, Method, MethodConfig
from pareto_ray.methods.pamal import multi_forward_regularization
from pareto_ray.models import AdaptedModel, MultiTaskNet, PreferenceModel
from pareto_ray.preferences import RayGenerator


class LORPMANConfig(MethodConfig):
    name: Literal["lorpman"] = "lorpman"
    rank: int = Field(default=8, ge=1, le=256, description="rank r of every B_i A_i")
    scale: float = Field(default=1.0, gt=0, description="scaling s of the low-rank part")
    rays_per_step: int = Field(default=4, ge=1, le=64, description="window b: rays α ~ Dir(p) per batch")
    concentration: float = Field(default=1.0, gt=0, description="Dirichlet concentration p")
    multi_forward: float = Field(default=0.0, ge=0, description="λ_p, weight of the multi-forward regularization")
    orthogonal: float = Field(default=1.0, ge=0, description="λ_o, weight of the orthogonal regularization")
    freeze_after: float | None = Field(
        default=0.8, ge=0, le=1, description="fraction of training after which only the low-rank matrices train "
                                             "(freeze epoch / epochs); null: never freeze")
    adapt_heads: bool = Field(default=False, description="also adapt the task heads (the paper adapts the shared bottom)")
    target_modules: list[str] | None = Field(
        default=None, description="module names/regexes to adapt; default every Conv2d/Linear of the encoder")


def orthogonal_regularization(layers: list[LowRankPreferenceLayer], subset: torch.Tensor | None = None) -> torch.Tensor:
    """R_o = mean over layers of ‖ŴᵀŴ − I‖², Ŵ's columns the normalized flattened B_i A_i (tasks in ``subset``)."""
    total = None
    for layer in layers:
        a, b = layer.lora_A, layer.lora_B
        if subset is not None:
            a, b = a[subset], b[subset]
        w = F.normalize(torch.einsum("tor,tri->toi", b, a).flatten(1), dim=1)
        gram = w @ w.T
        term = (gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)).pow(2).sum()
        total = term if total is None else total + term
    return total / len(layers)


class LORPMAN(Method):
    name = "lorpman"
    cfg: LORPMANConfig

    def __init__(self, cfg: LORPMANConfig, num_tasks: int):
        super().__init__(cfg, num_tasks)
        self.rays = RayGenerator()
        self.freezer = Freezer(cfg.freeze_after)

    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        names = default_targets(net, self.cfg.target_modules, self.cfg.adapt_heads)
        layers = inject(net, names, lambda m: LowRankPreferenceLayer(m, self.num_tasks, self.cfg.rank, self.cfg.scale))
        model = AdaptedModel(net, layers)
        low_rank = {id(p) for layer in layers for p in (layer.lora_A, layer.lora_B)}
        self.freezer.frozen = [p for p in model.parameters() if id(p) not in low_rank]
        return model

    def train_rays(self, progress: float) -> torch.Tensor:
        self.freezer.progress = progress
        return self.rays.dirichlet(self.cfg.rays_per_step, self.num_tasks, self.cfg.concentration)

    def loss(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor:
        total = (rays * task_losses).sum()
        if self.cfg.multi_forward > 0:
            total = total + self.cfg.multi_forward * multi_forward_regularization(task_losses, rays)
        if self.cfg.orthogonal > 0 and self.num_tasks > 1:
            subset = None
            if self.num_tasks > 3:  # stochastic approximation: a random 3-task subset per step
                subset = torch.randperm(self.num_tasks, generator=self.rays.generator)[:3]
            total = total + self.cfg.orthogonal * orthogonal_regularization(model.preference_layers(), subset)
        return total

    def backward(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor:
        loss = super().backward(task_losses, rays, model)
        self.freezer.apply()
        return loss
