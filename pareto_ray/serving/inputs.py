"""Validation of what a request sends: λ and the inputs, each checked alone before it reaches a batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pareto_ray.data import IMAGE_SIZE
from pareto_ray.preferences import validate_preference
from pareto_ray.serving.schemas import RequestError

#: Every backbone reads MultiMNIST-style composites: one channel, 28×28.
INPUT_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)
PrefKey = tuple[float, ...]


def check_preference(values: list[float], num_tasks: int, tolerance: float, allow_pseudo: bool = False) -> PrefKey:
    """Validate λ and return it rounded to multiples of ``tolerance``, renormalized to sum 1.

    Rejects (never normalizes) a λ whose sum is off 1 by more than ``tolerance``.
    """
    expected = (f"{num_tasks} finite numbers summing to 1 (±{tolerance:g})"
                + ("" if allow_pseudo else ", each ≥ 0"))
    try:
        pref = validate_preference(torch.tensor(values, dtype=torch.float64), num_tasks, allow_pseudo, atol=tolerance)
    except (ValueError, TypeError) as exc:
        raise RequestError("preference", str(exc), expected) from None
    return preference_key(pref.double().numpy(), tolerance)


def preference_key(pref: np.ndarray, tolerance: float) -> PrefKey:
    """λ rounded to multiples of ``tolerance`` and renormalized: the batching and cache key."""
    q = np.round(np.asarray(pref, dtype=np.float64) / tolerance) * tolerance
    q = q / q.sum()
    return tuple(round(float(v), 12) for v in q)


def parse_inputs(values: list[Any], max_inputs: int, input_shape: tuple[int, ...] = INPUT_SHAPE) -> torch.Tensor:
    """Nested lists → a float32 ``[B, *input_shape]`` tensor, or a ``RequestError`` naming the problem."""
    expected = f"a list of 1 to {max_inputs} inputs, nested lists of numbers shaped [B, {', '.join(map(str, input_shape))}]"
    if not values:
        raise RequestError("inputs", "empty batch: send at least one input", expected)
    if len(values) > max_inputs:
        raise RequestError("inputs", f"{len(values)} inputs exceed the limit of {max_inputs} per request", expected)
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):
        raise RequestError("inputs", "ragged nested lists (rows of unequal length)", expected) from None
    if arr.dtype.kind not in "iuf":
        kind = {"b": "booleans", "U": "strings", "S": "strings", "O": "mixed or non-numeric values"}.get(arr.dtype.kind,
                                                                                                       str(arr.dtype))
        raise RequestError("inputs", f"inputs must be numbers, got {kind}", expected)
    if arr.shape[1:] != tuple(input_shape):
        raise RequestError("inputs", f"got shape {list(arr.shape)}", expected)
    with np.errstate(over="ignore"):  # out-of-range values become inf and are rejected below
        x = torch.from_numpy(arr.astype(np.float32))
    if not torch.isfinite(x).all():
        raise RequestError("inputs", "inputs must be finite numbers (no NaN/Inf, within float32 range)", expected)
    return x
