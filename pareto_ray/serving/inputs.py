"""Validation of what a request sends: the JSON body, λ and the inputs, each checked alone before it reaches a batch."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ValidationError

from pareto_ray.data import IMAGE_SIZE
from pareto_ray.preferences import validate_preference
from pareto_ray.serving.schemas import RequestError, validation_error_body

#: Every backbone reads MultiMNIST-style composites: one channel, 28×28.
INPUT_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)
PrefKey = tuple[float, ...]
Model = TypeVar("Model", bound=BaseModel)
JSON_EXPECTED = "a JSON object as documented at /docs"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RequestError(key, f"the key {key!r} appears more than once in a JSON object", "each key once", status=400)
        out[key] = value
    return out


def parse_json(body: bytes) -> Any:
    """A request body → Python values; invalid JSON and duplicate keys are a 400 ``RequestError``.

    ``NaN`` and ``Infinity`` (which Python's encoder writes) parse to floats, so the field that holds one is
    rejected by name later; a number beyond float64 parses to ``inf`` the same way.
    """
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except RequestError:
        raise
    except RecursionError:
        raise RequestError("body", "the JSON is nested too deeply", JSON_EXPECTED, status=400) from None
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError("body", f"the body is not valid JSON ({exc})", JSON_EXPECTED, status=400) from None


def parse_body(body: bytes, model: type[Model]) -> Model:
    """A request body → ``model``, or a ``RequestError`` naming the field (400 for bad JSON, 422 for the rest)."""
    value = parse_json(body)
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
        raise RequestError("body", f"the body is JSON but not an object (got {kind})", JSON_EXPECTED)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        err = validation_error_body(exc)["error"]
        raise RequestError(err["field"], err["message"], err["expected"]) from None


def check_preference(values: list[float], num_tasks: int, tolerance: float, allow_pseudo: bool = False) -> PrefKey:
    """Validate λ and return it rounded to multiples of ``tolerance``, renormalized to sum 1.

    Rejects (never normalizes) a λ whose sum is off 1 by more than ``tolerance``, exactly: the sum is taken
    in float64 and compared with ``tolerance`` alone (no relative slack).
    """
    expected = (f"{num_tasks} finite numbers summing to 1 (±{tolerance:g})"
                + ("" if allow_pseudo else ", each ≥ 0"))
    try:
        validate_preference(torch.tensor(values, dtype=torch.float64), num_tasks, allow_pseudo, atol=tolerance)
    except (ValueError, TypeError) as exc:
        raise RequestError("preference", str(exc), expected) from None
    total = math.fsum(values)
    if abs(total - 1.0) > tolerance:  # validate_preference's check is in float32 with a relative slack on top
        raise RequestError("preference", f"preference entries must sum to 1 (±{tolerance:g}), got sum {total!r}",
                           expected)
    return preference_key(np.asarray(values, dtype=np.float64), tolerance)


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
    if _holds_a_boolean(values, len(input_shape)):  # NumPy turns [true, 0.5] into [1.0, 0.5]
        raise RequestError("inputs", "inputs must be numbers, got booleans among them", expected)
    with np.errstate(over="ignore"):  # out-of-range values become inf and are rejected below
        x = torch.from_numpy(arr.astype(np.float32))
    if not torch.isfinite(x).all():
        raise RequestError("inputs", "inputs must be finite numbers (no NaN/Inf, within float32 range)", expected)
    return x


def _holds_a_boolean(values: list[Any], depth: int) -> bool:
    """Whether a regular nested list (``depth`` levels below the batch) holds a ``bool`` anywhere."""
    rows: list[Any] = list(values)
    for _ in range(depth - 1):
        rows = [inner for row in rows for inner in row]
    return any(bool in map(type, row) for row in rows)
