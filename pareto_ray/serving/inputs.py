"""Validation of what a request sends: the body (JSON or multipart), λ and the inputs in each of their forms,
each checked alone before it reaches a batch.

Inputs become the model's float tensor here, in the ingress (so decoding overlaps the model's forward):

* ``inputs`` (nested lists) and ``npy`` (a base64 ``.npy``): the model input itself, checked for shape and finiteness;
* ``images`` (base64 PNG/JPEG) and multipart uploads: ``inputs_spec.decode_image`` (the training images'
  conversion and resize), then the training normalization; every header is read, and the pixel limits checked,
  before any image is decoded;
* ``rows`` (objects by column name): the checkpoint's ``TabularEncoder``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ValidationError

from pareto_ray.data import IMAGE_SIZE
from pareto_ray.inputs_spec import InputError, InputSpec, decode_image, image_expected, open_image, read_npy
from pareto_ray.preferences import validate_preference
from pareto_ray.serving.schemas import INPUT_FORMS, RequestError, validation_error_body

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


# ----------------------------------------------------------------------------- the other input forms

DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w=.+-]+)*;base64,", re.ASCII)


def b64decode(text: str, field: str, expected: str) -> bytes:
    """Strict base64 (a ``data:...;base64,`` prefix allowed) → bytes, or a 422 naming ``field``."""
    if not isinstance(text, str):
        raise RequestError(field, f"expected a base64 string, got {type(text).__name__}", expected)
    match = DATA_URL.match(text)
    body = text[match.end():] if match else text
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(field, f"not valid base64 ({exc})", expected) from None


def input_error(exc: InputError, field: str) -> RequestError:
    where = ".".join([field, *map(str, exc.where)])
    return RequestError(where, exc.message, exc.expected, status=exc.status)


def count_limit(n: int, max_inputs: int, field: str, expected: str) -> None:
    if n == 0:
        raise RequestError(field, "empty batch: send at least one input", expected)
    if n > max_inputs:
        raise RequestError(field, f"{n} inputs exceed the limit of {max_inputs} per request", expected)


def parse_array(arr: np.ndarray, spec_shape: tuple[int, ...], max_inputs: int, field: str = "npy") -> torch.Tensor:
    """A ``[B, *shape]`` array of model inputs → float32, checked like nested lists."""
    expected = f"a .npy array of numbers shaped [B, {', '.join(map(str, spec_shape))}], 1 ≤ B ≤ {max_inputs}"
    if arr.dtype.kind not in "iuf":
        raise RequestError(field, f"the array holds {arr.dtype} values, not numbers", expected)
    if arr.ndim == len(spec_shape):
        arr = arr[None]
    if tuple(arr.shape[1:]) != tuple(spec_shape):
        raise RequestError(field, f"got shape {list(arr.shape)}", expected)
    count_limit(arr.shape[0], max_inputs, field, expected)
    with np.errstate(over="ignore"):
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not torch.isfinite(x).all():
        raise RequestError(field, "inputs must be finite numbers (no NaN/Inf, within float32 range)", expected)
    return x


def parse_npy(text: str, spec_shape: tuple[int, ...], max_inputs: int, max_bytes: int) -> torch.Tensor:
    expected = f"a base64 .npy file of numbers shaped [B, {', '.join(map(str, spec_shape))}]"
    data = b64decode(text, "npy", expected)
    try:
        arr = read_npy(data, max_bytes)
    except InputError as exc:
        raise input_error(exc, "npy") from None
    return parse_array(arr, spec_shape, max_inputs)


def image_header(data: bytes, field: str, spec: InputSpec, max_pixels: int) -> int:
    """The pixel count an image declares, from its header alone (no decoding), or a 4xx naming ``field``."""
    expected = image_expected(spec.shape, max_pixels)
    if not data:
        raise RequestError(field, "the image is empty (0 bytes)", expected)
    try:
        with open_image(data) as img:
            return img.width * img.height
    except Image.DecompressionBombError:
        raise RequestError(field, "the image declares more pixels than the limit", expected, status=413) from None
    except Exception:  # noqa: BLE001 - PIL raises many types for bytes that are no image
        raise RequestError(field, "not a PNG or JPEG image (unreadable header)", expected) from None


def parse_images(images: list[tuple[str, bytes]], spec: InputSpec, max_inputs: int, max_pixels: int,
                 max_request_pixels: int) -> torch.Tensor:
    """``(field, bytes)`` per image → the normalized ``[B, C, H, W]`` batch.

    Every header first: the count, each image's pixels and their sum are checked before anything is decoded.
    """
    if spec.kind != "image":
        raise RequestError("images", f"this model takes {spec.kind} inputs, not images",
                           f"the forms listed in GET /v1/model input.forms ({', '.join(accepted_forms(spec))})")
    expected = image_expected(spec.shape, max_pixels)
    count_limit(len(images), max_inputs, "images", expected)
    total = 0
    for field, data in images:
        pixels = image_header(data, field, spec, max_pixels)
        if pixels > max_pixels:
            raise RequestError(field, f"the image has {pixels} pixels, over the limit of {max_pixels}", expected,
                               status=413)
        total += pixels
    if total > max_request_pixels:
        raise RequestError("images", f"the images hold {total} pixels in all, over the limit of {max_request_pixels} "
                                     f"per request", "fewer or smaller images per request", status=413)
    stored = np.empty((len(images), *spec.shape), dtype=np.uint8)
    for i, (field, data) in enumerate(images):
        try:
            stored[i] = decode_image(data, spec.shape, max_pixels, spec.resize)
        except InputError as exc:
            raise input_error(exc, field) from None
    return spec.normalize(torch.from_numpy(stored))


def parse_rows(rows: list[Any], spec: InputSpec, max_inputs: int) -> torch.Tensor:
    if spec.kind != "tabular" or spec.encoder is None:
        raise RequestError("rows", f"this model takes {spec.kind} inputs, not table rows",
                           f"the forms listed in GET /v1/model input.forms ({', '.join(accepted_forms(spec))})")
    count_limit(len(rows), max_inputs, "rows", spec.encoder.describe())
    try:
        encoded = spec.encoder.encode_rows(rows)
    except InputError as exc:
        raise input_error(exc, "rows") from None
    return spec.normalize(torch.from_numpy(encoded))


def accepted_forms(spec: InputSpec) -> list[str]:
    """The request fields a model with this input spec takes (its natural form first)."""
    natural = {"image": ["images"], "tabular": ["rows"], "tensor": []}[spec.kind]
    return [*natural, "npy", "inputs"]


def one_form(forms: list[str]) -> str:
    """The one input form of a request, or a 422 naming the extra field."""
    if not forms:
        raise RequestError("inputs", "no inputs: send one of " + ", ".join(INPUT_FORMS),
                           "exactly one of the fields " + ", ".join(INPUT_FORMS))
    if len(forms) > 1:
        raise RequestError(forms[1], f"one input form per request: got {' and '.join(forms)}",
                           "exactly one of the fields " + ", ".join(INPUT_FORMS))
    return forms[0]


# ----------------------------------------------------------------------------- multipart/form-data

MULTIPART_EXPECTED = ("multipart/form-data with a 'preference' field (a JSON array), image files in 'images' "
                      "(one part each) or one .npy file in 'npy', and optionally 'output' (a JSON object)")
MULTIPART_FIELDS = ("preference", "output", "images", "npy")


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> dict[str, list[tuple[str | None, bytes]]]:
    """A ``multipart/form-data`` body (already read whole, within ``max_body_bytes``) → field name → parts
    ``(filename, bytes)``; a malformed body is a 400, an unknown field a 422."""
    match = re.search(r'boundary=(?:"([^"]{1,70})"|([^\s;]{1,70}))', content_type)
    if not match:
        raise RequestError("Content-Type", "multipart/form-data without a boundary", MULTIPART_EXPECTED, status=400)
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise RequestError("body", "malformed multipart body (no closing boundary)", MULTIPART_EXPECTED, status=400)
    parts = chunks[1:-1]
    if len(parts) > max_parts:
        raise RequestError("body", f"{len(parts)} parts exceed the limit of {max_parts}", MULTIPART_EXPECTED)
    out: dict[str, list[tuple[str | None, bytes]]] = {}
    for part in parts:
        if not part.startswith(b"\r\n") or not part.endswith(b"\r\n"):
            raise RequestError("body", "malformed multipart part (CRLF expected around boundaries)", MULTIPART_EXPECTED,
                               status=400)
        head, sep, content = part[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise RequestError("body", "malformed multipart part (no blank line after its headers)", MULTIPART_EXPECTED,
                               status=400)
        disposition = next((line for line in head.decode("latin-1").split("\r\n")
                            if line.lower().startswith("content-disposition:")), "")
        name = re.search(r';\s*name="([^"]*)"', disposition)
        if not disposition.lower().startswith("content-disposition: form-data") or not name:
            raise RequestError("body", "a multipart part without Content-Disposition: form-data; name=...",
                               MULTIPART_EXPECTED, status=400)
        field = name.group(1)
        if field not in MULTIPART_FIELDS:
            raise RequestError(field, f"unknown multipart field {field!r}", MULTIPART_EXPECTED)
        filename = re.search(r';\s*filename="([^"]*)"', disposition)
        out.setdefault(field, []).append((filename.group(1) if filename else None, content))
    return out


def is_plain_json(body: bytes, content_type: str | None) -> bool:
    """A small JSON body that carries no image or .npy to decode (parsed on the event loop, no thread hop).

    (Here, not in ``app.py``: Ray Serve captures a deployment's globals when the class is decorated, so a
    helper defined below the deployment would be missing in the replica.)"""
    if content_type and content_type.lower().startswith("multipart/"):
        return False
    return b'"images"' not in body and b'"npy"' not in body
