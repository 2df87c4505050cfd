"""Pareto hypernetworks: a ray MLP that embeds λ and heads that emit target tensors from it (PHN, PHN-LoRA).

A ray MLP (T → hidden → hidden → hidden, ReLU) embeds λ; one linear head per
target tensor maps the embedding to that tensor.  With ``chunk_size`` the
target is instead generated in chunks by one shared head fed the ray
embedding and a learned chunk embedding (Ha et al.), which caps the size.
``HyperModel`` installs the generated tensors into the network's generated
layers (``GeneratedLayer`` / ``GeneratedLoRALayer``) around each forward.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pareto_ray.models import MultiTaskNet, PreferenceModel


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
