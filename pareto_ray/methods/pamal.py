"""PaMaL — Pareto Manifold Learning (Dimitriadis et al., 2023, Algorithm 1).

T independently initialized copies of the network form θ(α) = Σ_t α_t θ_t.
Each batch is forwarded under a window of W rays α ~ Dir(p), the loss is
Σ_w α_wᵀ L(θ(α_w)) plus λ times the multi-forward regularization, and the
ensemble trains at T× the learning rate (Section 5).  Optional balancing
(Section 4.2): *loss* balancing divides each task loss by the mean of its
last few values; *gradient* balancing scales each task's gradient on the
shared parameters to unit norm before the α-weighted sum.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import torch
from pydantic import Field

from pareto_ray.distributed import all_reduce_mean
from pareto_ray.layers import ENSEMBLE_ADAPTABLE, EnsemblePreferenceLayer, find_targets, inject
from pareto_ray.methods.base import Method, MethodConfig
from pareto_ray.methods.gradients import all_reduce_gradients, split_flat, task_gradients, trainable_parameters
from pareto_ray.methods.regularizers import multi_forward_regularization
from pareto_ray.models import AdaptedModel, MultiTaskNet, PreferenceModel
from pareto_ray.preferences import RayGenerator


class PaMaLConfig(MethodConfig):
    name: Literal["pamal"] = "pamal"
    rays_per_step: int = Field(default=4, ge=1, le=64, description="window W: rays (forwards) per batch (MultiMNIST: 4)")
    concentration: float = Field(default=1.0, gt=0, description="Dirichlet concentration p")
    regularization: float = Field(default=0.0, ge=0, description="multi-forward regularization λ (MultiMNIST: 0)")
    balancing: Literal["none", "loss", "gradient"] = Field(
        default="none", description="loss: divide by the moving mean of past losses; gradient: unit-norm task gradients")
    loss_window: int = Field(default=10, ge=1, description="steps in the loss-balancing moving mean")
    scale_lr: bool = Field(default=True, description="train the ensemble at T× the learning rate (the paper's choice)")
    target_modules: list[str] | None = Field(
        default=None, description="module names/regexes to ensemble; default every Linear/Conv2d/BatchNorm")


class PaMaL(Method):
    name = "pamal"
    cfg: PaMaLConfig

    def __init__(self, cfg: PaMaLConfig, num_tasks: int):
        super().__init__(cfg, num_tasks)
        self.rays = RayGenerator()
        self.history: deque[torch.Tensor] = deque(maxlen=cfg.loss_window)
        self._shared: list[torch.nn.Parameter] = []

    @classmethod
    def combines_gradients_for(cls, cfg: PaMaLConfig) -> bool:
        return cfg.balancing == "gradient"

    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        names = find_targets(net, self.cfg.target_modules, ENSEMBLE_ADAPTABLE)
        layers = inject(net, names, lambda m: EnsemblePreferenceLayer(m, self.num_tasks))
        if not self.cfg.scale_lr:
            for layer in layers:
                layer.lr_multiplier = 1.0
        model = AdaptedModel(net, layers)
        self._shared = list(net.encoder.parameters())
        return model

    def train_rays(self, progress: float) -> torch.Tensor:
        return self.rays.dirichlet(self.cfg.rays_per_step, self.num_tasks, self.cfg.concentration)

    def loss_weights(self, task_losses: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
        """α, or α divided by each task's moving-mean loss magnitude under loss balancing (worker-averaged, detached)."""
        if self.cfg.balancing != "loss":
            return rays
        current = all_reduce_mean(task_losses.detach().mean(0).clone())
        self.history.append(current)
        scale = torch.stack(list(self.history)).mean(0).abs().clamp_min(1e-12)  # |·|: objectives may be negative
        return rays / scale

    def extra_loss(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor | None:
        if self.cfg.regularization > 0:
            return self.cfg.regularization * multi_forward_regularization(task_losses, rays)
        return None

    def backward(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel,
                 progress: float) -> torch.Tensor:
        if self.cfg.balancing != "gradient":
            return super().backward(task_losses, rays, model, progress)
        # Gradient balancing: on the shared (encoder) parameters the α-weighted task
        # gradients are replaced by α-weighted *unit-norm* ones, using gradients
        # averaged over all workers so that every worker applies the same update.
        shared = [p for p in self._shared if p.requires_grad]
        grads = all_reduce_mean(task_gradients(task_losses, shared))  # [M, T, P]
        loss = self.loss(task_losses, rays, model)
        loss.backward()
        all_reduce_gradients(trainable_parameters(model))
        weights = rays.to(grads.dtype)[..., None]
        unit = grads / grads.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        correction = (weights * (unit - grads)).sum((0, 1))
        for p, c in zip(shared, split_flat(correction, shared)):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(c)
        return loss
