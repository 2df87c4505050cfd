"""The multi-task network (a shared encoder, one head per task) and the
preference-conditioned model interface every method returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class MultiTaskNet(nn.Module):
    """``encoder`` shared by all tasks, then ``heads[t]``; returns a list of logits."""

    def __init__(self, encoder: nn.Module, heads: list[nn.Module]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleList(heads)

    @property
    def num_tasks(self) -> int:
        return len(self.heads)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.encoder(x)
        return [head(z) for head in self.heads]


class PreferenceModel(nn.Module, ABC):
    """A model whose weights are formed for a preference λ.

    ``forward(x, rays)`` evaluates the batch ``x`` under each of the M rays in
    ``rays [M, T]`` and returns, per task, logits of shape ``[M, N, C]``.
    Under DDP this one call is the whole step's forward, so several rays per
    step still mean one forward and one backward.

    * ``per_sample=False``: one forward per ray with merged weights.
    * ``per_sample=True``: the batch is repeated M times and run once, each
      copy with its ray (the per-sample path; faster where launches dominate).

    ``predict(x, prefs [N, T])`` runs each sample under its own λ.
    """

    num_tasks: int

    @abstractmethod
    def forward_ray(self, x: torch.Tensor, pref: torch.Tensor) -> list[torch.Tensor]:
        """Logits per task for the whole batch under one ``[T]`` preference."""

    @abstractmethod
    def predict(self, x: torch.Tensor, prefs: torch.Tensor) -> list[torch.Tensor]:
        """Logits per task, sample n under preference ``prefs[n]``."""

    def forward(self, x: torch.Tensor, rays: torch.Tensor, per_sample: bool = False) -> list[torch.Tensor]:
        if rays.dim() != 2 or rays.shape[1] != self.num_tasks:
            raise ValueError(f"rays must have shape [M, {self.num_tasks}], got {tuple(rays.shape)}")
        m, n = rays.shape[0], x.shape[0]
        if per_sample and m > 1:
            xs = x.unsqueeze(0).expand(m, *x.shape).reshape(m * n, *x.shape[1:])
            outs = self.predict(xs, rays.repeat_interleave(n, dim=0))
            return [o.view(m, n, *o.shape[1:]) for o in outs]
        per_ray = [self.forward_ray(x, ray) for ray in rays]
        return [torch.stack(task_outs) for task_outs in zip(*per_ray)]


class FixedModel(PreferenceModel):
    """A plain multi-task network that ignores λ (linear scalarization, MTL)."""

    def __init__(self, net: MultiTaskNet):
        super().__init__()
        self.net = net
        self.num_tasks = net.num_tasks

    def forward_ray(self, x: torch.Tensor, pref: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)

    def predict(self, x: torch.Tensor, prefs: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)


class AdaptedModel(PreferenceModel):
    """A network whose chosen layers were replaced by preference layers that
    read ``layer.preference``; this class sets it around each forward."""

    def __init__(self, net: MultiTaskNet, layers: list[nn.Module]):
        super().__init__()
        self.net = net
        self.num_tasks = net.num_tasks
        self._layer_names = [name for name, m in net.named_modules() if any(m is layer for layer in layers)]

    def preference_layers(self) -> list[nn.Module]:
        return [self.net.get_submodule(name) for name in self._layer_names]

    def _run(self, x: torch.Tensor, pref: torch.Tensor) -> list[torch.Tensor]:
        layers = self.preference_layers()
        for layer in layers:
            layer.preference = pref
        try:
            return self.net(x)
        finally:
            for layer in layers:
                layer.preference = None

    def forward_ray(self, x: torch.Tensor, pref: torch.Tensor) -> list[torch.Tensor]:
        return self._run(x, pref)

    def predict(self, x: torch.Tensor, prefs: torch.Tensor) -> list[torch.Tensor]:
        return self._run(x, prefs)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
