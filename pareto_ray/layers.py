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

import copy
import math
import re
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

ADAPTABLE = (nn.Linear, nn.Conv2d)


class LowRankPreferenceLayer(nn.Module):
    """W(λ) = W + s · Σ_t λ_t B_t A_t  (PaLoRA eq. 2 with s = α / r; LORPMAN eq. 6 with its s).

    A linear layer with an m×n weight gets ``lora_A [T, r, n]`` (kaiming-uniform) and ``lora_B [T, m, r]``
    (zeros), so training starts exactly at the base network, and gains T·r·(m+n) parameters.

    A convolution's adapters take one of two shapes (``conv_style``):

    * ``"kernel"`` (LoRA's own, Hu et al. 2022, as the PaLoRA and LORPMAN papers use it): ΔW_t = B_t A_t
      reshaped to the kernel, with ``A [T, r·kh, in·kw]`` and ``B [T, out·kh, r·kh]``; the per-sample path
      runs the T task kernels as one convolution with T·out channels and mixes them by λ;
    * ``"channel"``: A acts as a convolution with ``r`` output channels (``[T, r, in·kh·kw]``) and B as a
      1×1 convolution (``[T, out, r]``) — fewer parameters, and a per-sample path that costs one
      convolution with T·r channels (the cheaper choice where many λ share a batch).

    For 1×1 kernels the two coincide.
    """

    def __init__(self, base_layer: nn.Linear | nn.Conv2d, num_tasks: int, rank: int, scale: float,
                 conv_style: str = "kernel"):
        super().__init__()
        if not isinstance(base_layer, ADAPTABLE):
            raise TypeError(f"can only adapt nn.Linear or nn.Conv2d, got {type(base_layer).__name__}")
        if isinstance(base_layer, nn.Conv2d) and base_layer.groups != 1:
            raise ValueError("grouped convolutions are not supported by LowRankPreferenceLayer")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if conv_style not in ("kernel", "channel"):
            raise ValueError(f"conv_style must be 'kernel' or 'channel', got {conv_style!r}")
        self.base_layer = base_layer
        self.num_tasks = num_tasks
        self.rank = rank
        self.scale = scale
        w = base_layer.weight
        out_features, fan_in = w.shape[0], w[0].numel()
        kh, kw = (w.shape[2], w.shape[3]) if isinstance(base_layer, nn.Conv2d) else (1, 1)
        self.kernel_style = conv_style == "kernel" and kh * kw > 1
        if self.kernel_style:
            a_shape, b_shape = (rank * kh, w.shape[1] * kw), (out_features * kh, rank * kh)
        else:
            a_shape, b_shape = (rank, fan_in), (out_features, rank)
        self.lora_A = nn.Parameter(torch.empty(num_tasks, *a_shape, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(num_tasks, *b_shape, device=w.device, dtype=w.dtype))
        for t in range(num_tasks):
            nn.init.kaiming_uniform_(self.lora_A[t], a=math.sqrt(5))
        self.preference: torch.Tensor | None = None

    @property
    def is_conv(self) -> bool:
        return isinstance(self.base_layer, nn.Conv2d)

    def task_deltas(self) -> torch.Tensor:
        """ΔW_t = s · B_t A_t for every task, ``[T, *weight.shape]``."""
        delta = torch.einsum("tor,tri->toi", self.lora_B, self.lora_A)
        return self.scale * delta.view(self.num_tasks, *self.base_layer.weight.shape)

    def _b_side_by_side(self, pref: torch.Tensor | None = None) -> torch.Tensor:
        """``[B_1 … B_T]`` side by side (``[rows, T·r']``), each ``B_t`` times ``λ_t`` when ``pref`` is given.

        Sliced and concatenated rather than permuted: B's gradient then comes back with B's own strides (a
        permute's backward hands DDP a gradient whose strides differ from its bucket's, and it warns every step).
        """
        parts = self.lora_B.unbind(0)
        if pref is not None:
            parts = [b * w for b, w in zip(parts, pref.to(self.lora_B.dtype))]
        return torch.cat(parts, dim=1)

    def _rank_factors(self, pref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ΔW(λ) = s · b a as one rank-T·r product: b = [λ_1 B_1 … λ_T B_T] (``[rows, T·r']``), a = [A_1; …; A_T]."""
        return self._b_side_by_side(pref), self.lora_A.reshape(self.lora_B.shape[0] * self.lora_B.shape[2], -1)

    def delta_weight(self, pref: torch.Tensor) -> torch.Tensor:
        """ΔW(λ) for one ``[T]`` preference, shaped like the base weight."""
        b, a = self._rank_factors(pref)
        return (self.scale * (b @ a)).view_as(self.base_layer.weight)

    def merged_weight(self, pref: torch.Tensor) -> torch.Tensor:
        """W + ΔW(λ) in one pass over W (one GEMM of rank T·r added onto it), not a T-fold einsum then an add."""
        b, a = self._rank_factors(pref)
        w = self.base_layer.weight
        return torch.addmm(w.reshape(b.shape[0], a.shape[1]), b, a, alpha=self.scale).view_as(w)

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
        return self._per_sample_forward(x, pref)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        conv = self.base_layer
        if conv.padding_mode != "zeros":
            return conv._conv_forward(x, weight, None)
        return F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation)

    def _stacked(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The base weight with the T·r down-projections A stacked under it as extra output rows/channels
        (``[out + T·r, *weight.shape[1:]]``) and the bias padded with zeros: x·[W; A] gives the base op and
        x·A in one convolution/matmul.

        Without autograd (serving) the stacked tensors are cached and rebuilt only when a parameter is
        replaced or changed in place; with autograd they are built per call, so gradients reach W and A.
        """
        base, a = self.base_layer, self.lora_A
        bias = base.bias
        tracked = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (base.weight, bias, a))
        key = None
        if not tracked:
            key = tuple((t.data_ptr(), t._version) if t is not None else None for t in (base.weight, bias, a))
            cached = getattr(self, "_stacked_cache", None)
            if cached is not None and cached[0] == key:
                return cached[1], cached[2]
        tr = self.num_tasks * self.rank
        weight = torch.cat([base.weight, a.reshape(tr, *base.weight.shape[1:])])
        if bias is not None:
            bias = torch.cat([bias, bias.new_zeros(tr)])
        if key is not None:
            self._stacked_cache = (key, weight, bias)
        return weight, bias

    def _per_sample_forward(self, x: torch.Tensor, pref: torch.Tensor) -> torch.Tensor:
        if pref.shape[0] != x.shape[0]:
            raise ValueError(f"per-sample preferences [{pref.shape[0]}, T] do not match batch size {x.shape[0]}")
        T, r = self.num_tasks, self.rank
        pref = pref.to(x.dtype)
        if self.kernel_style:
            deltas = self.task_deltas()  # [T, out, in, kh, kw]: one convolution with T·out channels
            y = self._conv(x, deltas.flatten(0, 1)).unflatten(1, (T, -1))
            return self.base_layer(x) + torch.einsum("nt,ntohw->nohw", pref, y)
        # One rank-T·r product, the physical limit: x·[W; A] in one convolution/matmul (the base op and the T·r
        # down-projections together), then per sample the up-projection B_n = s·[B_1 … B_T]·diag(λ_n ⊗ 1_r)
        # ([out, T·r], tiny) added onto the base output by one batched matmul (baddbmm).  Measured on ResNet-18
        # (benchmarks/serve_paths.py): stacking A under W costs less than a separate T·r-channel convolution, and
        # folding λ into B_n saves the pass over x·A that scaling it would take.
        out = self.lora_B.shape[1]
        b = self.scale * self._b_side_by_side()  # [out, T·r]
        b_n = b * pref.repeat_interleave(r, dim=1)[:, None, :]  # [n, out, T·r]
        weight, bias = self._stacked()
        if self.is_conv:
            y = self.base_layer._conv_forward(x, weight, bias)  # [n, out + T·r, h, w]
            n, _, h, w = y.shape
            base, xa = y[:, :out].reshape(n, out, h * w), y[:, out:].reshape(n, T * r, h * w)
            return torch.baddbmm(base, b_n, xa).view(n, out, h, w)  # a new, contiguous output: faster downstream
        y = F.linear(x, weight, bias)  # [n, ..., out + T·r]
        base, xa = y[..., :out], y[..., out:]
        lead = x.shape[:-1]
        base, xa = base.reshape(x.shape[0], -1, out), xa.reshape(x.shape[0], -1, T * r)
        mixed = torch.baddbmm(base, xa, b_n.transpose(1, 2))
        return mixed.view(*lead, out)

    def extra_repr(self) -> str:
        style = ", conv_style=kernel" if self.kernel_style else ""
        return f"tasks={self.num_tasks}, rank={self.rank}, scale={self.scale:g}{style}"


def find_targets(model: nn.Module, target_modules: Iterable[str] | None = None,
                 types: tuple[type[nn.Module], ...] = ADAPTABLE) -> list[str]:
    """Names of the modules of ``types`` to adapt (``nn.Linear``/``nn.Conv2d`` by default), plus every
    ``nn.MultiheadAttention`` (whose projections are adapted through ``AdaptedAttention``; its ``out_proj``
    is not a target of its own).

    ``target_modules=None`` selects all of them; otherwise each entry is a regular expression matched
    (fully) against module names, or a plain name matched as a suffix, in the spirit of PEFT's
    ``target_modules``.  A named module of another type is an error that names it.
    """
    modules = dict(model.named_modules())
    inside_attention = {f"{n}.{c}" for n, m in modules.items() if isinstance(m, nn.MultiheadAttention)
                        for c, _ in m.named_modules() if c}
    kinds = (*types, nn.MultiheadAttention)
    names = [n for n, m in modules.items() if isinstance(m, kinds) and n not in inside_attention]
    if target_modules is None:
        return names
    patterns = list(target_modules)

    def matches(n: str) -> bool:
        return any(re.fullmatch(p, n) or n == p or n.endswith("." + p) for p in patterns)

    wrong = [f"{n} ({type(m).__name__})" for n, m in modules.items()
             if n and matches(n) and n not in names and not isinstance(m, nn.Dropout | nn.Identity)
             and not any(isinstance(c, kinds) for c in m.modules())]
    if wrong:
        supported = ", ".join(t.__name__ for t in kinds)
        raise TypeError(f"target_modules {patterns} name modules that cannot be adapted: {', '.join(wrong)}; "
                        f"adaptable are {supported} (name them, or the blocks that hold them)")
    chosen = [n for n in names if matches(n) or any(n.startswith(p + ".") for p in patterns)]
    if not chosen:
        kinds_text = "/".join(t.__name__ for t in kinds)
        raise ValueError(f"target_modules {patterns} matched none of the {kinds_text} modules {names}")
    return chosen


def default_targets(net: nn.Module, target_modules: Iterable[str] | None, adapt_heads: bool) -> list[str]:
    """``find_targets``, keeping only the shared encoder's modules unless ``adapt_heads`` or explicit targets are given."""
    names = find_targets(net, target_modules)
    if target_modules is None and not adapt_heads:
        names = [n for n in names if n.startswith("encoder.")]
    return names


def inject(model: nn.Module, names: Iterable[str], make_layer) -> list[nn.Module]:
    """Replace each named module of ``model`` by ``make_layer(module)`` (an attention module by an
    ``AdaptedAttention`` whose projections are ``make_layer``'s); return the new layers."""
    layers = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        module = getattr(parent, child)
        try:
            layer = AdaptedAttention(module, make_layer) if isinstance(module, nn.MultiheadAttention) else make_layer(module)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"cannot adapt {name} ({type(module).__name__}): {exc}") from None
        setattr(parent, child, layer)
        layers.append(layer)
    return layers


class AdaptedAttention(nn.Module):
    """An ``nn.MultiheadAttention`` whose input and output projections are preference layers.

    ``nn.MultiheadAttention.forward`` reads its packed ``in_proj_weight`` and ``out_proj.weight`` directly,
    so adapting its ``out_proj`` alone would be silently bypassed.  This module takes the attention apart:
    ``in_proj`` (E → 3E, the packed q/k/v projection) and ``out_proj`` (E → E) become ``make_layer`` of
    linear layers holding the attention's own parameters, and the attention itself runs here
    (``scaled_dot_product_attention``), so one λ per sample works as in any other preference layer.
    Attention weights are not returned (``need_weights`` gives None).  Self- and cross-attention,
    ``attn_mask``, ``key_padding_mask``, ``is_causal`` and ``batch_first`` are supported; separate q/k/v
    dimensions, ``bias_kv`` and ``add_zero_attn`` are not.
    """

    def __init__(self, attention: nn.MultiheadAttention, make_layer):
        super().__init__()
        if not attention._qkv_same_embed_dim or attention.bias_k is not None or attention.add_zero_attn:
            raise ValueError("only attention with equal q/k/v dimensions, no bias_kv and no add_zero_attn "
                             "can be adapted")
        e = attention.embed_dim
        packed = nn.Linear(e, 3 * e, bias=attention.in_proj_bias is not None)
        packed.weight = attention.in_proj_weight
        if attention.in_proj_bias is not None:
            packed.bias = attention.in_proj_bias
        out = nn.Linear(e, e, bias=attention.out_proj.bias is not None)
        out.weight = attention.out_proj.weight
        if attention.out_proj.bias is not None:
            out.bias = attention.out_proj.bias
        self.in_proj = make_layer(packed)
        self.out_proj = make_layer(out)
        self.embed_dim, self.num_heads = e, attention.num_heads
        self.dropout, self.batch_first = attention.dropout, attention.batch_first

    @property
    def inner(self) -> list[nn.Module]:
        return [self.in_proj, self.out_proj]

    # the owning model sets λ (or generated tensors) on a preference layer: pass them to the projections
    @property
    def preference(self) -> torch.Tensor | None:
        return self.in_proj.preference

    @preference.setter
    def preference(self, pref: torch.Tensor | None) -> None:
        for layer in self.inner:
            layer.preference = pref

    def head_sizes(self) -> list[int]:
        return [n for layer in self.inner for n in layer.head_sizes()]

    def head_init(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [init for layer in self.inner for init in layer.head_init()]

    def set_generated(self, flats: list[torch.Tensor] | None) -> None:
        if flats is None:
            for layer in self.inner:
                layer.set_generated(None)
            return
        split = len(self.in_proj.head_sizes())
        self.in_proj.set_generated(flats[:split])
        self.out_proj.set_generated(flats[split:])

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = (t.unsqueeze(0 if self.batch_first else 1) for t in (query, key, value))
        if not self.batch_first:  # the projections' per-sample path wants the batch first
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        e, h = self.embed_dim, self.num_heads
        if query is key and key is value:
            q, k, v = self.in_proj(query).split(e, dim=-1)
        else:  # cross-attention: each input through its third of the packed projection
            q = self.in_proj(query)[..., :e]
            k = self.in_proj(key)[..., e:2 * e]
            v = self.in_proj(value)[..., 2 * e:]
        n, lq, lk = q.shape[0], q.shape[1], k.shape[1]
        q, k, v = (t.reshape(n, -1, h, e // h).transpose(1, 2) for t in (q, k, v))
        mask = _attention_mask(attn_mask, key_padding_mask, n, h, lq, lk, q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=is_causal and mask is None)
        y = self.out_proj(y.transpose(1, 2).reshape(n, lq, e))
        if not self.batch_first:
            y = y.transpose(0, 1)
        if not batched:
            y = y.squeeze(0 if self.batch_first else 1)
        return y, None

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"


def expand_attention(layers: Iterable[nn.Module]) -> list[nn.Module]:
    """The layers with every ``AdaptedAttention`` replaced by its two projections."""
    return [inner for layer in layers for inner in (layer.inner if isinstance(layer, AdaptedAttention) else [layer])]


def _attention_mask(attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, n: int, h: int, lq: int,
                    lk: int, dtype: torch.dtype) -> torch.Tensor | None:
    """One additive float mask ``[N, H, Lq, Lk]`` (or None) from ``nn.MultiheadAttention``'s two masks."""
    def additive(mask: torch.Tensor) -> torch.Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
        return mask.to(dtype)

    out = None
    if attn_mask is not None:
        m = additive(attn_mask)
        out = m.view(n, h, lq, lk) if m.dim() == 3 else m.view(1, 1, lq, lk)
    if key_padding_mask is not None:
        pad = additive(key_padding_mask).view(n, 1, 1, lk)
        out = pad if out is None else out + pad
    return None if out is None else out.expand(n, h, lq, lk)


# --- layers whose weights are a full ensemble, generated, or take λ as input ---------------------------------

ENSEMBLE_ADAPTABLE = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)


def _as_rows(pref: torch.Tensor, n: int) -> torch.Tensor:
    """``[N, T]`` preferences from a ``[T]`` one (expanded) or an ``[N, T]`` one (checked)."""
    if pref.dim() == 1:
        return pref.unsqueeze(0).expand(n, -1)
    if pref.shape[0] != n:
        raise ValueError(f"per-sample preferences [{pref.shape[0]}, T] do not match batch size {n}")
    return pref


def _require_preference(pref: torch.Tensor | None) -> torch.Tensor:
    if pref is None:
        raise RuntimeError("no preference set: call the model with rays (model(x, rays)), "
                           "not the adapted network directly")
    return pref


def _check_conv(layer: nn.Module) -> None:
    if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"):
        raise ValueError("only ungrouped, zero-padded convolutions can be adapted here")


def _grouped_conv(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Sample n convolved with ``weight[n]`` ([N, out, in, kh, kw]) as one grouped convolution."""
    n = x.shape[0]
    y = F.conv2d(x.reshape(1, -1, *x.shape[2:]), weight.reshape(-1, *weight.shape[2:]),
                 None if bias is None else bias.reshape(-1), conv.stride, conv.padding, conv.dilation, groups=n)
    return y.view(n, -1, *y.shape[2:])


class EnsemblePreferenceLayer(nn.Module):
    """PaMaL's layer: T independently initialized full copies, θ(λ) = Σ_t λ_t θ_t.

    Wraps an ``nn.Linear``, ``nn.Conv2d`` or BatchNorm.  Member 0 starts from
    the base layer's weights, the others from a fresh ``reset_parameters()``.
    For BatchNorm only the affine parameters are mixed; the running statistics
    stay those of the (shared) base layer, which normalizes without affine.
    The merged path mixes the weights once; the per-sample path runs the T
    members as one wider op and mixes their outputs per sample (the same
    function: every op here is linear in its weights).

    ``lr_multiplier`` = T: PaMaL trains the ensemble at T× the learning rate,
    since a step scales each member's gradient by λ_t (≈ 1/T in expectation).
    """

    def __init__(self, base_layer: nn.Module, num_tasks: int):
        super().__init__()
        if not isinstance(base_layer, ENSEMBLE_ADAPTABLE):
            raise TypeError(f"can only ensemble Linear, Conv2d or BatchNorm layers, got {type(base_layer).__name__}")
        _check_conv(base_layer)
        self.num_tasks = num_tasks
        self.lr_multiplier = float(num_tasks)
        self.is_norm = isinstance(base_layer, nn.modules.batchnorm._BatchNorm)
        if self.is_norm and not base_layer.affine:
            raise ValueError("a BatchNorm without affine parameters has nothing to ensemble")
        members = [base_layer] + [copy.deepcopy(base_layer) for _ in range(num_tasks - 1)]
        for member in members[1:]:
            member.reset_parameters()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in members]))
        has_bias = base_layer.bias is not None
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in members])) if has_bias else None
        base_layer.weight = None  # the base keeps its config (and BatchNorm statistics), not its weights
        base_layer.bias = None
        self.base_layer = base_layer
        self.preference: torch.Tensor | None = None

    def mixed(self, pref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(Σ λ_t W_t, Σ λ_t b_t) for a ``[T]`` preference."""
        pref = pref.to(self.weight.dtype)
        weight = torch.einsum("t,t...->...", pref, self.weight)
        bias = None if self.bias is None else pref @ self.bias
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pref = _require_preference(self.preference)
        base = self.base_layer
        if self.is_norm:  # normalize with the shared statistics, then the mixed affine map
            rows = _as_rows(pref, x.shape[0]).to(x.dtype)
            gamma = rows @ self.weight
            beta = rows @ self.bias
            shape = (x.shape[0], -1) + (1,) * (x.dim() - 2)
            return base(x) * gamma.view(shape) + beta.view(shape)
        if pref.dim() == 1:
            weight, bias = self.mixed(pref)
            if isinstance(base, nn.Conv2d):
                return base._conv_forward(x, weight, bias)
            return F.linear(x, weight, bias)
        rows = _as_rows(pref, x.shape[0]).to(x.dtype)
        t = self.num_tasks
        flat_bias = None if self.bias is None else self.bias.reshape(-1)
        if isinstance(base, nn.Conv2d):
            y = base._conv_forward(x, self.weight.reshape(-1, *self.weight.shape[2:]), flat_bias)
            y = y.view(x.shape[0], t, -1, *y.shape[2:])
            return torch.einsum("nt,nt...->n...", rows, y)
        y = F.linear(x, self.weight.reshape(-1, self.weight.shape[-1]), flat_bias)
        y = y.view(*y.shape[:-1], t, -1)
        return torch.einsum("nt,n...to->n...o", rows, y)

    def extra_repr(self) -> str:
        return f"members={self.num_tasks}"


def target_shapes(layer: nn.Linear | nn.Conv2d) -> dict[str, tuple[int, ...]]:
    """The tensors a hypernetwork generates for a layer: its weight and (if any) bias."""
    shapes = {"weight": tuple(layer.weight.shape)}
    if layer.bias is not None:
        shapes["bias"] = tuple(layer.bias.shape)
    return shapes


class GeneratedLayer(nn.Module):
    """A layer whose weight and bias are produced by a hypernetwork (PHN).

    The base layer keeps only its configuration; its parameters are dropped.
    The owning model sets ``layer.generated`` to ``{"weight": W, "bias": b}``
    with unbatched shapes (one λ for the batch) or a leading sample dimension
    (one λ per sample: a batched matmul, or a grouped convolution).
    """

    def __init__(self, base_layer: nn.Linear | nn.Conv2d):
        super().__init__()
        if not isinstance(base_layer, ADAPTABLE):
            raise TypeError(f"can only generate nn.Linear or nn.Conv2d, got {type(base_layer).__name__}")
        _check_conv(base_layer)
        self.shapes = target_shapes(base_layer)
        #: the base layer's own (default-initialized) tensors: the hypernetwork starts from them
        self.initial = [base_layer.weight.detach().flatten().clone()] + (
            [base_layer.bias.detach().flatten().clone()] if base_layer.bias is not None else [])
        base_layer.weight = None
        base_layer.bias = None
        self.base_layer = base_layer
        self.generated: dict[str, torch.Tensor] | None = None

    def head_sizes(self) -> list[int]:
        """Sizes of the flat tensors a hypernetwork emits for this layer (weight, then bias)."""
        return [math.prod(shape) for shape in self.shapes.values()]

    def head_init(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per head (bias, row scale) for the hypernetwork: start at the layer's own initialization,
        with the λ-dependent part scaled down to 0.1 of a default linear head."""
        return [(init, torch.full_like(init, 0.1)) for init in self.initial]

    def set_generated(self, flats: list[torch.Tensor] | None) -> None:
        """Install the hypernetwork's outputs (``[n]`` each, or ``[N, n]`` per sample); None clears."""
        if flats is None:
            self.generated = None
            return
        lead = flats[0].shape[:-1]
        self.generated = {k: f.reshape(*lead, *shape) for (k, shape), f in zip(self.shapes.items(), flats)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.generated is None:
            raise RuntimeError("no generated weights: call the model with rays (model(x, rays))")
        weight, bias = self.generated["weight"], self.generated.get("bias")
        per_sample = weight.dim() > len(self.shapes["weight"])
        conv = isinstance(self.base_layer, nn.Conv2d)
        if not per_sample:
            return self.base_layer._conv_forward(x, weight, bias) if conv else F.linear(x, weight, bias)
        if weight.shape[0] != x.shape[0]:
            raise ValueError(f"generated weights for {weight.shape[0]} samples, batch has {x.shape[0]}")
        if conv:
            return _grouped_conv(self.base_layer, x, weight, bias)
        y = torch.einsum("n...i,noi->n...o", x, weight)
        return y if bias is None else y + bias.view(bias.shape[0], *([1] * (x.dim() - 2)), -1)


class GeneratedLoRALayer(nn.Module):
    """W(λ) = W + s · B(λ) A(λ): one LoRA pair per layer generated from λ (PHN-LoRA).

    The owning model sets ``layer.lora`` to ``(A, B)`` with A ``[r, fan_in]``
    and B ``[out, r]`` (one λ: merged weights) or ``[N, r, fan_in]`` and
    ``[N, out, r]`` (one λ per sample: batched matmuls / grouped convolution
    next to the base op).  For a convolution A acts as a convolution with r
    output channels and B as a 1×1 convolution, as in ``LowRankPreferenceLayer``.
    """

    def __init__(self, base_layer: nn.Linear | nn.Conv2d, rank: int, scale: float):
        super().__init__()
        if not isinstance(base_layer, ADAPTABLE):
            raise TypeError(f"can only adapt nn.Linear or nn.Conv2d, got {type(base_layer).__name__}")
        _check_conv(base_layer)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.base_layer = base_layer
        self.rank = rank
        self.scale = scale
        self.out_features = base_layer.weight.shape[0]
        self.fan_in = base_layer.weight[0].numel()
        self.lora: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def lora_numel(self) -> int:
        """Numbers a hypernetwork head emits for this layer: r·(fan_in + out)."""
        return self.rank * (self.fan_in + self.out_features)

    def split(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) from a head's flat output ``[..., r·(fan_in + out)]``."""
        a, b = flat.split([self.rank * self.fan_in, self.rank * self.out_features], dim=-1)
        lead = flat.shape[:-1]
        return a.reshape(*lead, self.rank, self.fan_in), b.reshape(*lead, self.out_features, self.rank)

    def head_sizes(self) -> list[int]:
        return [self.lora_numel]

    def head_init(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(bias, row scale) of the head: A starts kaiming-uniform as in LoRA, B at zero (rows and
        bias), so θ(λ) = θ₀ for every λ at initialization and the B rows learn first."""
        a = torch.empty(self.rank, self.fan_in)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        bias = torch.cat([a.flatten(), torch.zeros(self.rank * self.out_features)])
        scale = torch.cat([torch.full((a.numel(),), 0.1), torch.zeros(self.rank * self.out_features)])
        return [(bias, scale)]

    def set_generated(self, flats: list[torch.Tensor] | None) -> None:
        """Install the generated (A, B) from the head's flat output (``[n]`` or ``[N, n]``); None clears."""
        self.lora = None if flats is None else self.split(flats[0])

    def delta_weight(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.scale * (b @ a)).view_as(self.base_layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lora is None:
            raise RuntimeError("no generated LoRA: call the model with rays (model(x, rays))")
        a, b = self.lora
        base = self.base_layer
        conv = isinstance(base, nn.Conv2d)
        if a.dim() == 2:
            weight = base.weight + self.delta_weight(a, b)
            return base._conv_forward(x, weight, base.bias) if conv else F.linear(x, weight, base.bias)
        if a.shape[0] != x.shape[0]:
            raise ValueError(f"generated LoRA for {a.shape[0]} samples, batch has {x.shape[0]}")
        if conv:
            xa = _grouped_conv(base, x, a.view(a.shape[0], self.rank, *base.weight.shape[1:]), None)
            return base(x) + self.scale * torch.einsum("nrhw,nor->nohw", xa, b)
        xa = torch.einsum("n...i,nri->n...r", x, a)
        return base(x) + self.scale * torch.einsum("n...r,nor->n...o", xa, b)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale:g}"


class PreferenceInputLayer(nn.Module):
    """COSMOS: λ enters as extra input — T constant channels of an image
    convolution, or T extra features of a linear layer.

    The λ inputs get their own weights ``pref_weight`` ([out, T, kh, kw] or
    [out, T]), so the layer computes base(x) on ``[x, λ]`` concatenated.
    """

    def __init__(self, base_layer: nn.Linear | nn.Conv2d, num_tasks: int):
        super().__init__()
        if not isinstance(base_layer, ADAPTABLE):
            raise TypeError(f"can only extend nn.Linear or nn.Conv2d, got {type(base_layer).__name__}")
        _check_conv(base_layer)
        self.base_layer = base_layer
        self.num_tasks = num_tasks
        w = base_layer.weight
        self.pref_weight = nn.Parameter(torch.empty(w.shape[0], num_tasks, *w.shape[2:], device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.pref_weight, a=math.sqrt(5))
        self.preference: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _as_rows(_require_preference(self.preference), x.shape[0]).to(x.dtype)
        base = self.base_layer
        weight = torch.cat([base.weight, self.pref_weight], dim=1)
        if isinstance(base, nn.Conv2d):
            channels = rows[:, :, None, None].expand(-1, -1, *x.shape[2:])
            return base._conv_forward(torch.cat([x, channels], dim=1), weight, base.bias)
        feats = rows.view(rows.shape[0], *([1] * (x.dim() - 2)), -1).expand(*x.shape[:-1], -1)
        return F.linear(torch.cat([x, feats], dim=-1), weight, base.bias)

    def extra_repr(self) -> str:
        return f"preference_inputs={self.num_tasks}"
