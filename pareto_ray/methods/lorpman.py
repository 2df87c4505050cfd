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
from pydantic import Field

from pareto_ray.layers import LowRankPreferenceLayer, default_targets, expand_attention, inject
from pareto_ray.methods.base import Method, MethodConfig, past
from pareto_ray.methods.regularizers import multi_forward_regularization, orthogonal_regularization
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
    conv_style: Literal["kernel", "channel"] = Field(
        default="kernel", description="convolution adapters: LoRA's kernel-shaped B·A (the paper reshapes convolutions "
                                      "as Hu et al., §4.2) or an r-channel convolution then 1×1; see LowRankPreferenceLayer")
    target_modules: list[str] | None = Field(
        default=None, description="module names/regexes to adapt; default every Conv2d/Linear of the encoder")


class LORPMAN(Method):
    name = "lorpman"
    cfg: LORPMANConfig

    def __init__(self, cfg: LORPMANConfig, num_tasks: int):
        super().__init__(cfg, num_tasks)
        self.rays = RayGenerator()
        self.main_parameters: list[torch.nn.Parameter] = []  # θ₀ and the heads: frozen after freeze_after

    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        names = default_targets(net, self.cfg.target_modules, self.cfg.adapt_heads)
        layers = inject(net, names, lambda m: LowRankPreferenceLayer(m, self.num_tasks, self.cfg.rank, self.cfg.scale,
                                                                    self.cfg.conv_style))
        model = AdaptedModel(net, layers)
        low_rank = {id(p) for layer in expand_attention(layers) for p in (layer.lora_A, layer.lora_B)}
        self.main_parameters = [p for p in model.parameters() if id(p) not in low_rank]
        return model

    def train_rays(self, progress: float) -> torch.Tensor:
        return self.rays.dirichlet(self.cfg.rays_per_step, self.num_tasks, self.cfg.concentration)

    def extra_loss(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor | None:
        total = task_losses.new_zeros(())
        if self.cfg.multi_forward > 0:
            total = total + self.cfg.multi_forward * multi_forward_regularization(task_losses, rays)
        if self.cfg.orthogonal > 0 and self.num_tasks > 1:
            subset = None
            if self.num_tasks > 3:  # stochastic approximation: a random 3-task subset per step
                subset = torch.randperm(self.num_tasks, generator=self.rays.generator)[:3]
            total = total + self.cfg.orthogonal * orthogonal_regularization(model.preference_layers(), subset)
        return total

    def frozen_parameters(self, progress: float) -> list[torch.nn.Parameter]:
        return self.main_parameters if past(self.cfg.freeze_after, progress) else []
