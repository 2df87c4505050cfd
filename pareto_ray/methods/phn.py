"""PHN — Pareto HyperNetwork (Navon et al., 2021).

A hypernetwork (``pareto_ray.methods.hypernetwork``) generates every
Linear/Conv2d weight and bias of the network from λ.  It is ~101× the target
network (2.79 M parameters for the 27 k-parameter MultiMNIST LeNet: the
papers' memory counter-example); ``chunk_size`` generates the target in
chunks by one shared head instead, which caps the size.

Solvers: ``ls`` (Σ λ_t L_t) or ``epo`` (Exact Pareto Optimal weights from an
LP over the task-gradient Gram matrix, ``pareto_ray.solvers.epo``).  Rays: one
λ ~ Dir(0.2) per batch, as in the original.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from pareto_ray.layers import GeneratedLayer, find_targets, inject
from pareto_ray.methods.base import Method, MethodConfig
from pareto_ray.methods.gradients import epo_backward, trainable_parameters
from pareto_ray.methods.hypernetwork import HyperModel
from pareto_ray.models import MultiTaskNet, PreferenceModel
from pareto_ray.preferences import RayGenerator


class PHNConfig(MethodConfig):
    name: Literal["phn"] = "phn"
    solver: Literal["ls", "epo"] = Field(default="ls", description="linear scalarization or Exact Pareto Optimal")
    hidden: int = Field(default=100, ge=1, description="width of the ray MLP")
    concentration: float = Field(default=0.2, gt=0, description="Dirichlet concentration of the training rays")
    rays_per_step: int = Field(default=1, ge=1, le=64, description="rays per batch")
    chunk_size: int | None = Field(default=None, ge=1, description="generate the target in chunks of this size")
    chunk_dim: int = Field(default=64, ge=1, description="chunk embedding size (with chunk_size)")
    target_modules: list[str] | None = Field(
        default=None, description="module names/regexes to generate; default every Conv2d/Linear")


class PHN(Method):
    name = "phn"
    cfg: PHNConfig

    def __init__(self, cfg: PHNConfig, num_tasks: int):
        super().__init__(cfg, num_tasks)
        self.rays = RayGenerator()

    @classmethod
    def combines_gradients_for(cls, cfg: PHNConfig) -> bool:
        return cfg.solver == "epo"

    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        names = find_targets(net, self.cfg.target_modules)
        layers = inject(net, names, GeneratedLayer)
        return HyperModel(net, layers, self.num_tasks, self.cfg.hidden, self.cfg.chunk_size, self.cfg.chunk_dim)

    def train_rays(self, progress: float) -> torch.Tensor:
        return self.rays.dirichlet(self.cfg.rays_per_step, self.num_tasks, self.cfg.concentration)

    def backward(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel,
                 progress: float) -> torch.Tensor:
        if self.cfg.solver == "ls":
            return super().backward(task_losses, rays, model, progress)
        return epo_backward(task_losses, rays, model, trainable_parameters(model))
