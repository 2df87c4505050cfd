"""Preference-conditioned layers and their injection into a network.

A preference layer *holds* its ``base_layer`` (an ``nn.Linear`` or
``nn.Conv2d``, as in PEFT) and adds task adapters.  Before a forward, the
owning model sets ``layer.preference`` to either

* a ``[T]`` tensor — one λ for the whole batch: the weights are merged,
  W(λ) = W + ΔW(λ), and the base op runs once (the *merged* path), or
* an ``[N, T]`` tensor — one λ per sample: the adapters run as batched
  matmuls / convolutions next to the base op, with no loop over samples
  (the *per-sample* path).

Both paths compute the same function; tests hold them to 1e-5.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

ADAPTABLE = (nn.Linear, nn.Conv2d)


class LowRankPreferenceLayer(nn.Module):
    """W(λ) = W + s · Σ_t λ_t B_t A_t  (PaLoRA eq. 2 with s = α / r).

    ``lora_A`` has shape ``[T, r, fan_in]`` (kaiming-uniform) and ``lora_B``
    ``[T, out, r]`` (zeros), so training starts exactly at the base network.
    For a convolution, ``fan_in = in_channels·kh·kw`` and A acts as a
    convolution with ``r`` output channels, B as a 1×1 convolution.
    A linear layer with an m×n weight gains T·r·(m+n) parameters.
    """

    def __init__(self, base_layer: nn.Linear | nn.Conv2d, num_tasks: int, rank: int, scale: float):
        super().__init__()
        if not isinstance(base_layer, ADAPTABLE):
            raise TypeError(f"can only adapt nn.Linear or nn.Conv2d, got {type(base_layer).__name__}")
        if isinstance(base_layer, nn.Conv2d) and base_layer.groups != 1:
            raise ValueError("grouped convolutions are not supported by LowRankPreferenceLayer")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.base_layer = base_layer
        self.num_tasks = num_tasks
        self.rank = rank
        self.scale = scale
        out_features = base_layer.weight.shape[0]
        fan_in = base_layer.weight[0].numel()
        w = base_layer.weight
        self.lora_A = nn.Parameter(torch.empty(num_tasks, rank, fan_in, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(num_tasks, out_features, rank, device=w.device, dtype=w.dtype))
        for t in range(num_tasks):
            nn.init.kaiming_uniform_(self.lora_A[t], a=math.sqrt(5))
        self.preference: torch.Tensor | None = None

    @property
    def is_conv(self) -> bool:
        return isinstance(self.base_layer, nn.Conv2d)

    def delta_weight(self, pref: torch.Tensor) -> torch.Tensor:
        """ΔW(λ) for one ``[T]`` preference, shaped like the base weight."""
        delta = torch.einsum("t,tor,tri->oi", pref.to(self.lora_A.dtype), self.lora_B, self.lora_A)
        return (self.scale * delta).view_as(self.base_layer.weight)

    def merged_weight(self, pref: torch.Tensor) -> torch.Tensor:
        return self.base_layer.weight + self.delta_weight(pref)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pref = self.preference
        if pref is None:
            raise RuntimeError("no preference set: call the model with rays (model(x, rays)), "
                               "not the adapted network directly")
        if pref.dim() == 1:
            weight = self.merged_weight(pref)
            if self.is_conv:
                return self.base_layer._conv_forward(x, weight, self.base_layer.bias)
            return F.linear(x, weight, self.base_layer.bias)
        return self.base_layer(x) + self._per_sample_delta(x, pref)

    def _per_sample_delta(self, x: torch.Tensor, pref: torch.Tensor) -> torch.Tensor:
        if pref.shape[0] != x.shape[0]:
            raise ValueError(f"per-sample preferences [{pref.shape[0]}, T] do not match batch size {x.shape[0]}")
        T, r = self.num_tasks, self.rank
        pref = pref.to(x.dtype)
        if self.is_conv:
            conv = self.base_layer
            a = self.lora_A.reshape(T * r, *conv.weight.shape[1:])
            xa = conv._conv_forward(x, a, None) if conv.padding_mode != "zeros" else F.conv2d(
                x, a, None, conv.stride, conv.padding, conv.dilation)
            xa = xa.unflatten(1, (T, r)) * pref[:, :, None, None, None]
            return self.scale * torch.einsum("ntrhw,tor->nohw", xa, self.lora_B)
        xa = torch.einsum("n...i,tri->n...tr", x, self.lora_A)
        xa = xa * pref.view(pref.shape[0], *([1] * (x.dim() - 2)), T, 1)
        return self.scale * torch.einsum("n...tr,tor->n...o", xa, self.lora_B)

    def extra_repr(self) -> str:
        return f"tasks={self.num_tasks}, rank={self.rank}, scale={self.scale:g}"


def find_targets(model: nn.Module, target_modules: Iterable[str] | None = None) -> list[str]:
    """Names of the modules to adapt.

    ``target_modules=None`` selects every ``nn.Linear``/``nn.Conv2d``; otherwise
    each entry is a regular expression matched (fully) against module names, or
    a plain name matched as a suffix, in the spirit of PEFT's ``target_modules``.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, ADAPTABLE)]
    if target_modules is None:
        return names
    patterns = list(target_modules)
    chosen = [n for n in names
              if any(re.fullmatch(p, n) or n == p or n.endswith("." + p) for p in patterns)]
    if not chosen:
        raise ValueError(f"target_modules {patterns} matched none of the adaptable modules {names}")
    return chosen


def inject(model: nn.Module, names: Iterable[str], make_layer) -> list[nn.Module]:
    """Replace each named module of ``model`` by ``make_layer(module)``; return the new layers."""
    layers = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = make_layer(getattr(parent, child))
        setattr(parent, child, layer)
        layers.append(layer)
    return layers
