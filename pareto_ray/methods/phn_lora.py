"""PHN-LoRA / HyperPALoRA (Bhattacharya & Bal, Section 2, Algorithm 1).

A hypernetwork (the PHN ray MLP, one linear head per adapted layer) emits a
single LoRA pair (A, B) per layer from λ: θ(λ) = θ₀ + s·B(λ)A(λ).  Each batch
is trained on b evenly spaced rays (App. D.4) with

    Σ_j w_jᵀ L(θ(r_j)) + λ_HVI·L_HVI + λ_DI·L_DI,

w_j = r_j (solver ``ls``) or EPO's weights (solver ``epo``, which can reach
non-convex parts of a front).  L_HVI is minus the hypervolume of the b loss
vectors (its gradient: each loss weighted by −∂HV/∂L); L_DI is the
contrastive diversity loss on the per-layer generated LoRA (positives: each
ray perturbed by N(0, σ²) and clamped; negatives: the other rays).  After the
freeze epoch only the hypernetwork trains.

Defaults: the MultiMNIST settings of App. D.3.1 — b = 5, λ_HVI = λ_DI = 0.1,
s = 4, r = 8 — and the freeze after 5 of 20 epochs (25%).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from pareto_ray.distributed import all_reduce_mean
from pareto_ray.layers import GeneratedLoRALayer, default_targets, inject
from pareto_ray.methods.base import Method, MethodConfig, past
from pareto_ray.methods.gradients import epo_backward, trainable_parameters
from pareto_ray.methods.hypernetwork import HyperModel
from pareto_ray.metrics import hypervolume
from pareto_ray.models import MultiTaskNet, PreferenceModel
from pareto_ray.preferences import RayGenerator, simplex_grid


def hypervolume_gradient(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """∂HV/∂points for a set of loss vectors ``[b, T]`` (minimization); dominated points get 0.

    Two objectives: exact, from the staircase HV = Σ_i (x_{i+1} − x_i)(R₂ − y_i)
    over the non-dominated points sorted by x.  More: central differences —
    the hypervolume is piecewise linear in each coordinate, so a small step
    gives the exact slope away from ties.
    """
    points = np.asarray(points, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if points.shape[1] == 2:
        return _hypervolume_gradient_2d(points, reference)
    scale = max(float(np.ptp(points)), 1e-3)
    h = 1e-6 * scale
    grad = np.zeros_like(points)
    for i in range(points.shape[0]):
        for k in range(points.shape[1]):
            up, down = points.copy(), points.copy()
            up[i, k] += h
            down[i, k] -= h
            grad[i, k] = (hypervolume(up, reference, maximize=False) - hypervolume(down, reference, maximize=False)) / (2 * h)
    return grad


def _hypervolume_gradient_2d(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    grad = np.zeros_like(points)
    inside = np.flatnonzero(np.all(points < reference, axis=1))
    order = inside[np.lexsort((points[inside, 1], points[inside, 0]))]
    front, best = [], np.inf
    for i in order:  # sweep by x: keep points that lower the best y so far
        if points[i, 1] < best:
            front.append(i)
            best = points[i, 1]
    for k, i in enumerate(front):
        x_next = points[front[k + 1], 0] if k + 1 < len(front) else reference[0]
        y_prev = points[front[k - 1], 1] if k > 0 else reference[1]
        grad[i, 0] = points[i, 1] - y_prev
        grad[i, 1] = -(x_next - points[i, 0])
    return grad


def hvi_reference(points: np.ndarray) -> np.ndarray:
    """The set's worst losses plus their spread: every non-dominated point counts, and the reference
    stays far enough that extending the extremes raises the HV (a reference hugging the worst
    point would instead pull the extreme points inwards)."""
    hi, lo = points.max(axis=0), points.min(axis=0)
    return hi + (hi - lo) + 1e-3


def hvi_loss(task_losses: torch.Tensor, reference: float | None = None) -> torch.Tensor:
    """−HV surrogate Σ_i w_i·L_i, with w_i = −∂HV/∂L_i normalized to unit length per loss vector.

    The slopes are taken on the worker-averaged losses (detached), so all
    workers agree.  The per-point normalization is HIGA-MO's dynamic weighting
    (Wang et al., 2017, used by PHN-HVI): it keeps the step along the HV
    gradient's direction but makes λ_HVI independent of the losses' scale.
    """
    points = all_reduce_mean(task_losses.detach().double().clone()).cpu().numpy()
    ref = hvi_reference(points) if reference is None else np.full(points.shape[1], reference, dtype=float)
    grad = hypervolume_gradient(points, ref)
    norm = np.linalg.norm(grad, axis=1, keepdims=True)
    weights = np.divide(-grad, norm, out=np.zeros_like(grad), where=norm > 0)
    return (torch.as_tensor(weights, dtype=task_losses.dtype, device=task_losses.device) * task_losses).sum()


def diversity_loss(anchors: list[torch.Tensor], positives: list[torch.Tensor]) -> torch.Tensor:
    """L_DI (eq. 4): per ray, Σ_l (1 − cos(Δθ^l(r), Δθ^l(r⁺)))² plus the mean over the other rays of
    Σ_l cos(Δθ^l(r), Δθ^l(r⁻))²; averaged over rays.  Inputs: per layer ``[b, n_l]``."""
    b = anchors[0].shape[0]
    pos = sum((1 - F.cosine_similarity(a, p, dim=1)).pow(2) for a, p in zip(anchors, positives))
    if b < 2:
        return pos.mean()
    off = ~torch.eye(b, dtype=torch.bool, device=anchors[0].device)
    neg = 0
    for a in anchors:
        unit = F.normalize(a, dim=1)
        neg = neg + ((unit @ unit.T).pow(2) * off).sum(1) / (b - 1)
    return (pos + neg).mean()


class PHNLoRAConfig(MethodConfig):
    name: Literal["phn_lora"] = "phn_lora"
    solver: Literal["ls", "epo"] = Field(default="ls", description="linear scalarization or Exact Pareto Optimal")
    rank: int = Field(default=8, ge=1, le=256, description="rank r of the generated LoRA")
    scale: float = Field(default=4.0, gt=0, description="scaling s of the generated update")
    rays_per_step: int = Field(default=5, ge=1, le=64, description="window b: evenly spaced rays per batch")
    hidden: int = Field(default=100, ge=1, description="width of the ray MLP")
    hvi: float = Field(default=0.1, ge=0, description="λ_HVI, weight of the hypervolume-increasing loss")
    hvi_reference: float | None = Field(
        default=None, description="loss reference point of L_HVI; null: just beyond the batch's worst losses")
    diversity: float = Field(default=0.1, ge=0, description="λ_DI, weight of the contrastive diversity loss")
    positive_sigma: float = Field(default=0.05, ge=0, description="σ of the positive-ray perturbation")
    freeze_after: float | None = Field(
        default=0.25, ge=0, le=1, description="fraction of training after which only the hypernetwork trains; "
                                              "null: never freeze")
    adapt_heads: bool = Field(default=True, description="generate LoRA for the task heads too (every target layer)")
    target_modules: list[str] | None = Field(
        default=None, description="module names/regexes to adapt; default every Conv2d/Linear")


class PHNLoRA(Method):
    name = "phn_lora"
    cfg: PHNLoRAConfig

    def __init__(self, cfg: PHNLoRAConfig, num_tasks: int):
        super().__init__(cfg, num_tasks)
        self.rays = RayGenerator()
        self.main_parameters: list[torch.nn.Parameter] = []  # θ₀ and the heads: frozen after freeze_after

    @classmethod
    def combines_gradients_for(cls, cfg: PHNLoRAConfig) -> bool:
        return cfg.solver == "epo"

    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        names = default_targets(net, self.cfg.target_modules, self.cfg.adapt_heads)
        layers = inject(net, names, lambda m: GeneratedLoRALayer(m, self.cfg.rank, self.cfg.scale))
        model = HyperModel(net, layers, self.num_tasks, self.cfg.hidden)
        self.main_parameters = list(net.parameters())  # the hypernetwork keeps training
        return model

    def train_rays(self, progress: float) -> torch.Tensor:
        return simplex_grid(self.num_tasks, self.cfg.rays_per_step)

    def extra_loss(self, task_losses: torch.Tensor, rays: torch.Tensor, model: HyperModel) -> torch.Tensor | None:
        total = task_losses.new_zeros(())
        if self.cfg.hvi > 0 and rays.shape[0] > 1:
            total = total + self.cfg.hvi * hvi_loss(task_losses, self.cfg.hvi_reference)
        if self.cfg.diversity > 0:
            noise = torch.randn(rays.shape, generator=self.rays.generator) * self.cfg.positive_sigma
            positives = (rays + noise.to(rays.device)).clamp(0, 1)
            both = model.generate(torch.cat([rays, positives]))
            b = rays.shape[0]
            anchors = [torch.cat(flats, dim=1)[:b] for flats in both]
            pos = [torch.cat(flats, dim=1)[b:] for flats in both]
            total = total + self.cfg.diversity * diversity_loss(anchors, pos)
        return total

    def frozen_parameters(self, progress: float) -> list[torch.nn.Parameter]:
        return self.main_parameters if past(self.cfg.freeze_after, progress) else []

    def backward(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel,
                 progress: float) -> torch.Tensor:
        if self.cfg.solver == "ls":
            return super().backward(task_losses, rays, model, progress)
        frozen = {id(p) for p in self.frozen_parameters(progress)}  # EPO solves on the parameters that train
        params = [p for p in trainable_parameters(model) if id(p) not in frozen]
        return epo_backward(task_losses, rays, model, params, self.extra_loss(task_losses, rays, model))
