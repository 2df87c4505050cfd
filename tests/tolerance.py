"""Comparisons that hold on any BLAS.

Two float32 computations of the same value (a batched and a per-sample
matmul, one worker and two) differ by rounding that grows with the size of
the values involved, not with each entry: an entry near 0 in a tensor of
logits around 800 carries the error of the 800s.  So the allowed error is
``rtol`` times the scale of the compared tensors (their largest magnitude,
or a scale given for a group of tensors), never a fixed absolute number.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def scale_of(*tensors: torch.Tensor) -> float:
    """The largest magnitude among ``tensors`` (at least the smallest normal float32)."""
    return max([float(torch.as_tensor(t).detach().abs().max()) for t in tensors if torch.as_tensor(t).numel()]
               + [torch.finfo(torch.float32).tiny])


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, e = torch.as_tensor(actual).detach().double(), torch.as_tensor(expected).detach().double()
    assert a.shape == e.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(e.shape)}"
    return float((a - e).abs().max()) if a.numel() else 0.0


def is_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, scale: float | None = None) -> bool:
    """max |actual − expected| ≤ rtol · scale (default scale: the tensors' largest magnitude)."""
    return max_error(actual, expected) <= rtol * (scale if scale is not None else scale_of(actual, expected))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, scale: float | None = None,
                 what: object = "") -> None:
    s = scale if scale is not None else scale_of(actual, expected)
    err = max_error(actual, expected)
    assert err <= rtol * s, f"{what}: max |Δ| = {err:.3g} exceeds {rtol:g} × scale {s:.3g}"


def assert_states_close(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], rtol: float = 1e-5,
                        what: object = "") -> None:
    """Every tensor of two state dicts agrees, relative to the largest magnitude in the whole state."""
    assert actual.keys() == expected.keys(), f"{what}: keys differ"
    s = scale_of(*actual.values(), *expected.values())
    for k in actual:
        assert_close(actual[k], expected[k], rtol, s, f"{what} {k}")
