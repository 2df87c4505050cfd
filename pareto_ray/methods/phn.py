"""PHN — Pareto HyperNetwork (Navon et al., 2021), and the hypernetwork
machinery PHN-LoRA shares.

A ray MLP (T → 100 → 100 → 100, ReLU) embeds λ; one linear head per target
tensor maps the embedding to that tensor, so every Linear/Conv2d weight and
bias of the network is generated from λ.  The hypernetwork is ~101× the
target network (2.79 M parameters for the 27 k-parameter MultiMNIST LeNet:
the papers' memory counter-example).  With ``chunk_size`` the target is
instead generated in chunks by one shared head fed the ray embedding and a
learned chunk embedding (Ha et al.), which caps the size.

Solvers: ``ls`` (Σ λ_t L_t) or ``epo`` (Exact Pareto Optimal weights from an
LP over the task-gradient Gram matrix, ``pareto_ray.epo``).  Rays: one
λ ~ Dir(0.2) per batch, as in the original.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from pareto_ray.distributed import all_reduce_mean
from pareto_ray.epo import epo_weights
from pareto_ray.layers import GeneratedLayer, find_targets, inject
from pareto_ray.methods.base import Method, MethodConfig, all_reduce_gradients, task_gradients
from pareto_ray.models import MultiTaskNet, PreferenceModel
from pareto_ray.preferences import RayGenerator


class HyperNetwork(nn.Module):
    """λ ``[B, T]`` → flat tensors ``[B, n_k]``, one per requested size ``n_k``."""

    def __init__(self, num_tasks: int, sizes: list[int], hidden: int = 100, chunk_size: int | None = None,
                 chunk_dim: int = 64):
        super().__init__()
        self.sizes = list(sizes)
        self.ray_mlp = nn.Sequential(nn.Linear(num_tasks, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden))
        self.chunk_size = chunk_size
        if chunk_size is None:
            self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in self.sizes)
        else:
            n_chunks = math.ceil(sum(self.sizes) / chunk_size)
            self.chunk_embeddings = nn.Parameter(torch.randn(n_chunks, chunk_dim))
            self.generator = nn.Linear(hidden + chunk_dim, chunk_size)

    def forward(self, rays: torch.Tensor) -> list[torch.Tensor]:
        emb = self.ray_mlp(rays)
        if self.chunk_size is None:
            return [head(emb) for head in self.heads]
        b, c = emb.shape[0], self.chunk_embeddings.shape[0]
        z = torch.cat([emb[:, None, :].expand(b, c, -1), self.chunk_embeddings[None].expand(b, -1, -1)], dim=-1)
        flat = self.generator(z).flatten(1)[:, :sum(self.sizes)]
        return list(flat.split(self.sizes, dim=1))


class HyperModel(PreferenceModel):
    """A network whose generated layers (``GeneratedLayer`` / ``GeneratedLoRALayer``)
    receive their tensors from ``hypernet(λ)`` around each forward."""

    def __init__(self, net: MultiTaskNet, layers: list[nn.Module], num_tasks: int, hidden: int = 100,
                 chunk_size: int | None = None, chunk_dim: int = 64):
        super().__init__()
        self.net = net
        self.num_tasks = num_tasks
        self._layer_names = [name for name, m in net.named_modules() if any(m is layer for layer in layers)]
        self._counts = [len(layer.head_sizes()) for layer in layers]
        sizes = [n for layer in layers for n in layer.head_sizes()]
        self.hypernet = HyperNetwork(num_tasks, sizes, hidden, chunk_size, chunk_dim)
        if chunk_size is None:  # start near the target's own initialization (see the layers' head_init)
            inits = [init for layer in layers for init in layer.head_init()]
            with torch.no_grad():
                for head, (bias, scale) in zip(self.hypernet.heads, inits):
                    head.bias.copy_(bias)
                    head.weight.mul_(scale[:, None])

    def generated_layers(self) -> list[nn.Module]:
        return [self.net.get_submodule(name) for name in self._layer_names]

    def generate(self, rays: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per generated layer, its flat hypernetwork outputs for ``rays [B, T]`` (each ``[B, n]``)."""
        outs = self.hypernet(rays)
        grouped, start = [], 0
        for count in self._counts:
            grouped.append(outs[start:start + count])
            start += count
        return grouped

    def _run(self, x: torch.Tensor, pref: torch.Tensor) -> list[torch.Tensor]:
        single = pref.dim() == 1
        generated = self.generate(pref.unsqueeze(0) if single else pref)
        layers = self.generated_layers()
        for layer, flats in zip(layers, generated):
            layer.set_generated([f[0] for f in flats] if single else flats)
        try:
            return self.net(x)
        finally:
            for layer in layers:
                layer.set_generated(None)

    def forward_ray(self, x: torch.Tensor, pref: torch.Tensor) -> list[torch.Tensor]:
        return self._run(x, pref)

    def predict(self, x: torch.Tensor, prefs: torch.Tensor) -> list[torch.Tensor]:
        if prefs.shape[0] != x.shape[0]:
            raise ValueError(f"per-sample preferences [{prefs.shape[0]}, T] do not match batch size {x.shape[0]}")
        return self._run(x, prefs)


def epo_task_weights(task_losses: torch.Tensor, rays: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """EPO's weights ``[M, T]`` per ray, from worker-averaged losses and task gradients (same on every worker)."""
    grads = all_reduce_mean(task_gradients(task_losses, params).double())  # [M, T, P]
    losses = all_reduce_mean(task_losses.detach().double().clone())
    gram = (grads @ grads.transpose(1, 2)).cpu().numpy()
    losses_np, rays_np = losses.cpu().numpy(), rays.detach().double().cpu().numpy()
    weights = np.stack([epo_weights(losses_np[m], gram[m], rays_np[m]) for m in range(rays_np.shape[0])])
    return torch.as_tensor(weights, dtype=task_losses.dtype, device=task_losses.device)


def solver_backward(method: Method, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel,
                    params: list[nn.Parameter]) -> torch.Tensor:
    """EPO step: weights from the LP, then one backward of Σ w·L + the method's extra terms,
    and the gradients averaged over workers by hand (the loop runs this under ``no_sync``)."""
    weights = epo_task_weights(task_losses, rays, params)
    loss = (weights * task_losses).sum() + method.extra_loss(task_losses, rays, model)
    loss.backward()
    all_reduce_gradients([p for p in model.parameters() if p.requires_grad])
    return loss


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
        self.combines_gradients = cfg.solver == "epo"

    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        names = find_targets(net, self.cfg.target_modules)
        layers = inject(net, names, GeneratedLayer)
        return HyperModel(net, layers, self.num_tasks, self.cfg.hidden, self.cfg.chunk_size, self.cfg.chunk_dim)

    def train_rays(self, progress: float) -> torch.Tensor:
        return self.rays.dirichlet(self.cfg.rays_per_step, self.num_tasks, self.cfg.concentration)

    def extra_loss(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor:
        return task_losses.new_zeros(())

    def backward(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel) -> torch.Tensor:
        if self.cfg.solver == "ls":
            return super().backward(task_losses, rays, model)
        return solver_backward(self, task_losses, rays, model, [p for p in model.parameters() if p.requires_grad])


__all__ = ["HyperModel", "HyperNetwork", "PHN", "PHNConfig", "solver_backward"]
