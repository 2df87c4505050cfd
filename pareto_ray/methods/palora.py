"""PaLoRA (Dimitriadis et al.): task LoRA adapters in every adapted layer,
W(λ) = W + (α/r) Σ_t λ_t B_t A_t, trained on M deterministic rays per step
annealed from the simplex centre towards its faces (Algorithm 1, eq. 2–3), or
— the official code's sampler for many tasks (CelebA, SARCOS) — on M
Dirichlet draws whose concentration anneals from p to 0.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from pareto_ray.layers import LowRankPreferenceLayer, default_targets, expand_attention, inject
from pareto_ray.methods.base import Method, MethodConfig
from pareto_ray.models import AdaptedModel, MultiTaskNet, PreferenceModel
from pareto_ray.preferences import RayGenerator, annealed_dirichlet, annealed_schedule


class PaLoRAConfig(MethodConfig):
    name: Literal["palora"] = "palora"
    rank: int = Field(default=1, ge=1, le=256, description="LoRA rank r")
    alpha: float = Field(default=1.0, gt=0, description="scale α; adapters are multiplied by α/r")
    rays_per_step: int = Field(default=5, ge=1, le=64, description="M rays (forwards) per step")
    temperature: float = Field(default=5.0, ge=0, description="annealing temperature Q (exponent Q·τ)")
    epsilon: float = Field(default=0.01, ge=0, lt=0.5, description="base rays kept ε from the faces")
    adapt_heads: bool = Field(default=True, description="adapt the task heads too: every Conv2d/Linear, as the paper's "
                                                       "12.5% overhead on MultiMNIST's LeNet at r = 1 implies (§5.1)")
    conv_style: Literal["kernel", "channel"] = Field(
        default="kernel", description="convolution adapters: LoRA's kernel-shaped B·A (the paper's) or an r-channel "
                                      "convolution then 1×1 (cheaper per-sample λ); see LowRankPreferenceLayer")
    target_modules: list[str] | None = Field(
        default=None, description="module names/regexes to adapt; default every Conv2d/Linear (of the encoder "
                                  "unless adapt_heads)")
    adapter_lr: float | None = Field(
        default=None, gt=0, description="learning-rate multiplier of the adapters (the paper is silent; the official "
                                        "code trains them at T× the rate, as PaMaL its members); null: 1")
    sampler: Literal["annealed", "annealed_dirichlet"] = Field(
        default="annealed", description="annealed: eq. 3's deterministic rays; annealed_dirichlet: M draws from "
                                        "Dir(p·(1 − τ) + 0.001), the official code's sampler for CelebA and SARCOS")
    concentration: float = Field(default=1.0, gt=0, description="annealed_dirichlet: p (the official code's 1)")


class PaLoRA(Method):
    name = "palora"
    cfg: PaLoRAConfig

    def __init__(self, cfg: PaLoRAConfig, num_tasks: int):
        super().__init__(cfg, num_tasks)
        self.rays = RayGenerator()

    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        names = default_targets(net, self.cfg.target_modules, self.cfg.adapt_heads)
        scale = self.cfg.alpha / self.cfg.rank
        layers = inject(net, names, lambda m: LowRankPreferenceLayer(m, self.num_tasks, self.cfg.rank, scale,
                                                                    self.cfg.conv_style))
        if self.cfg.adapter_lr is not None:
            for layer in expand_attention(layers):
                layer.lr_multiplier = self.cfg.adapter_lr  # its own parameters only: lora_A, lora_B
        return AdaptedModel(net, layers)

    def train_rays(self, progress: float) -> torch.Tensor:
        if self.cfg.sampler == "annealed_dirichlet":
            return annealed_dirichlet(self.cfg.rays_per_step, self.num_tasks, progress, self.cfg.concentration,
                                      self.rays.generator)
        return annealed_schedule(self.cfg.rays_per_step, self.num_tasks, progress,
                                 self.cfg.temperature, self.cfg.epsilon)
