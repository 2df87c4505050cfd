"""A model's inputs, as the data stores them and as a client sends them: the one place both sides share.

A dataset stores its inputs in a *stored form* (``Split.x``: uint8 pixels,
encoded table rows, or any tensor) and the model sees
``(stored · scale − mean) / std``.  ``InputSpec`` (saved in a checkpoint's
``dataset.json`` under ``input``) says which form and how it is normalized:

| key | kinds | meaning |
|---|---|---|
| ``kind`` | all | ``image``, ``tabular`` or ``tensor`` (inferred when absent: uint8 ``[1 or 3, H, W]`` is an image) |
| ``shape``, ``dtype`` | all | one stored input (``[C, H, W]`` for images, ``[F]`` for tabular rows) |
| ``scale``, ``mean``, ``std`` | all | the normalization: one number, or one per channel |
| ``resize`` | image | PIL's filter from a raw image to ``H×W`` (``bilinear``) |
| ``columns`` | tabular | the encoder fitted at training time (``TabularEncoder.to_dict()``) |

The functions here are the only way from raw data to the stored form, used
by the datasets and by the server alike:

* ``to_stored_image`` — a PIL image → ``uint8 [C, H, W]``: converted to RGB
  (``C = 3``, alpha dropped, gray replicated) or L (``C = 1``), resized to
  ``H×W`` with PIL's bilinear filter when its size differs;
  ``load_image_file`` (a dataset's files) and ``decode_image`` (a client's
  bytes, limits checked before any pixel is decoded) both end in it;
* ``TabularEncoder`` — rows by column name → the float vector (numbers
  z-scored with the training split's mean and std, categories one-hot in the
  order fitted, booleans 0/1), fitted once and saved as plain JSON;
* ``normalize`` — stored inputs → the model's float input (``Split.inputs`` uses it).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

InputKind = Literal["image", "tabular", "tensor"]
ColumnType = Literal["number", "category", "boolean"]
Norm = float | tuple[float, ...]
#: Raw image formats accepted from clients (PIL never tries another decoder on them).
IMAGE_FORMATS = ("PNG", "JPEG")
#: Image modes with more than 8 bits per channel: PIL would clip them to 255 when converting, so they are refused.
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}


class InputError(ValueError):
    """An input that has no stored form: ``where`` locates it (``[3, "color"]``: row 3, column color), ``expected``
    says what would be accepted.  The server answers it with a 4xx naming the field."""

    def __init__(self, message: str, expected: str, where: Sequence[str | int] = (), status: int = 422):
        super().__init__(message)
        self.message, self.expected, self.where, self.status = message, expected, list(where), status


# ----------------------------------------------------------------------------- normalization

def _norm(value: Norm, x: torch.Tensor) -> torch.Tensor | float:
    if isinstance(value, (int, float)):
        return float(value)
    return torch.tensor(value, dtype=torch.float32, device=x.device).view(1, -1, *([1] * (x.dim() - 2)))


def normalize(x: torch.Tensor, scale: float, mean: Norm, std: Norm) -> torch.Tensor:
    """Stored inputs ``[N, ...]`` → the model's float32 input ``(x · scale − mean) / std`` (per channel: the axis after N)."""
    x = x.to(dtype=torch.float32) * scale
    return (x - _norm(mean, x)) / _norm(std, x)


# ----------------------------------------------------------------------------- images

def to_stored_image(img: Image.Image, shape: Sequence[int], resize: str = "bilinear") -> np.ndarray:
    """A PIL image → ``uint8 [C, H, W]`` for ``shape = [C, H, W]``: RGB (C = 3) or L (C = 1), resized to H×W.

    What every image dataset stores and what the server makes of a client's image: the same call on both sides.
    """
    c, h, w = (int(v) for v in shape)
    if c not in (1, 3):
        raise ValueError(f"images have 1 or 3 channels, the input spec says {c}")
    out = img.convert("RGB" if c == 3 else "L")
    if out.size != (w, h):
        out = out.resize((w, h), RESAMPLE[resize])
    arr = np.asarray(out, dtype=np.uint8)
    return (arr.transpose(2, 0, 1) if c == 3 else arr[None]).copy()


def load_image_file(path: str | Path, shape: Sequence[int], resize: str = "bilinear") -> np.ndarray:
    """A dataset's image file → its stored form (``to_stored_image``)."""
    with Image.open(path) as img:
        return to_stored_image(img, shape, resize)


def image_expected(shape: Sequence[int], max_pixels: int) -> str:
    c, h, w = shape
    return (f"a PNG or JPEG image, 8 bits per channel, at most {max_pixels} pixels; any size is resized to {w}×{h} "
            f"and converted to {'RGB' if c == 3 else 'grayscale'}, as the training images were")


def open_image(data: bytes) -> Image.Image:
    """PNG/JPEG bytes → a lazily decoded PIL image (its header read, no pixel yet).  PIL's own bomb warning is
    silenced: the callers check the pixel count against their limit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)


def decode_image(data: bytes, shape: Sequence[int], max_pixels: int, resize: str = "bilinear") -> np.ndarray:
    """A client's PNG/JPEG bytes → the stored form, or an ``InputError``.

    The header is read first: a format other than PNG/JPEG, a 16-bit or float image, or more than
    ``max_pixels`` pixels (a decompression bomb) is refused before any pixel is decoded; a truncated or
    corrupt image is refused when decoding.
    """
    expected = image_expected(shape, max_pixels)
    if not data:
        raise InputError("the image is empty (0 bytes)", expected)
    try:
        img = open_image(data)
    except Image.DecompressionBombError:
        raise InputError("the image declares more pixels than the limit", expected, status=413) from None
    except Exception:  # noqa: BLE001 - PIL raises many types for bytes that are no image
        raise InputError("not a PNG or JPEG image (unreadable header)", expected) from None
    with img:
        pixels = img.width * img.height
        if pixels > max_pixels:
            raise InputError(f"the image is {img.width}×{img.height} = {pixels} pixels, over the limit of {max_pixels}",
                             expected, status=413)
        if img.mode in WIDE_MODES:
            raise InputError(f"{img.format} images of mode {img.mode} (more than 8 bits per channel) are not accepted",
                             expected)
        try:
            img.load()
            return to_stored_image(img, shape, resize)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt data: OSError, SyntaxError, ValueError, ...
            raise InputError(f"the {img.format} image cannot be decoded ({exc})", expected) from None


def encode_png(stored: np.ndarray | torch.Tensor) -> bytes:
    """``uint8 [C, H, W]`` (C = 1 or 3) → PNG bytes (lossless: decoding gives the same array back)."""
    arr = np.asarray(stored, dtype=np.uint8)
    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def read_npy(data: bytes, max_bytes: int) -> np.ndarray:
    """A ``.npy`` file's bytes → its array (no pickles: object arrays are refused), or an ``InputError``."""
    expected = "a base64 .npy file of numbers (numpy.save, no object arrays)"
    if not data:
        raise InputError("the .npy data is empty", expected)
    if len(data) > max_bytes:
        raise InputError(f"{len(data)} bytes of .npy exceed {max_bytes}", expected, status=413)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - ValueError, EOFError, OSError for bytes that are no .npy
        raise InputError(f"not a readable .npy file ({exc})", expected) from None
    if not isinstance(arr, np.ndarray):
        raise InputError("a .npz archive, not a .npy array", expected)
    return arr


# ----------------------------------------------------------------------------- tabular rows

@dataclass(frozen=True)
class Column:
    """One input column of a table and how it becomes features.

    ``number``: one feature, ``(value − mean) / std``; ``nullable`` columns take ``null`` as the mean (0).
    ``category``: one feature per entry of ``categories`` (one-hot, in that order); a value outside them is refused.
    ``boolean``: one feature, 0 or 1.
    """

    name: str
    type: ColumnType
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()
    nullable: bool = False

    @property
    def width(self) -> int:
        return len(self.categories) if self.type == "category" else 1

    def features(self) -> list[str]:
        return [f"{self.name}={c}" for c in self.categories] if self.type == "category" else [self.name]

    def expected(self) -> str:
        if self.type == "number":
            return "a finite number" + (" or null" if self.nullable else "")
        if self.type == "boolean":
            return "true or false"
        shown = ", ".join(repr(c) for c in self.categories[:20]) + (", ..." if len(self.categories) > 20 else "")
        return f"one of {shown}"

    def encode(self, value: Any, out: np.ndarray, where: list[str | int]) -> None:
        """Write the features of ``value`` into ``out`` (``[width]``)."""
        if self.type == "number":
            if value is None and self.nullable:
                out[0] = 0.0
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise InputError(f"column {self.name!r} takes {self.expected()}, got {_describe(value)}", self.expected(),
                                 where)
            out[0] = (float(value) - self.mean) / self.std
        elif self.type == "boolean":
            if not isinstance(value, bool):
                raise InputError(f"column {self.name!r} takes true or false, got {_describe(value)}", self.expected(),
                                 where)
            out[0] = float(value)
        else:
            if not isinstance(value, str) and not (isinstance(value, int) and not isinstance(value, bool)):
                raise InputError(f"column {self.name!r} takes a category (a string), got {_describe(value)}",
                                 self.expected(), where)
            try:
                out[self.categories.index(str(value))] = 1.0
            except ValueError:
                raise InputError(f"column {self.name!r} has no category {str(value)!r} (unknown at training time)",
                                 self.expected(), where) from None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type == "number":
            d |= {"mean": self.mean, "std": self.std, "nullable": self.nullable}
        elif self.type == "category":
            d["categories"] = list(self.categories)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Column:
        d = dict(d)
        if "categories" in d:
            d["categories"] = tuple(str(c) for c in d["categories"])
        column = cls(**d)
        if column.type not in ("number", "category", "boolean"):
            raise ValueError(f"column {column.name!r}: unknown type {column.type!r} (number, category or boolean)")
        if column.type == "number" and not (math.isfinite(column.std) and column.std > 0):
            raise ValueError(f"column {column.name!r}: std must be a positive number, got {column.std}")
        if column.type == "category" and not column.categories:
            raise ValueError(f"column {column.name!r}: a category column needs its categories")
        return column


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return {list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class TabularEncoder:
    """Rows by column name → float32 features, column by column in order (see ``Column``).

    ``fit`` it on the training split's columns; ``encode_columns`` encodes whole columns (the dataset side),
    ``encode_rows`` JSON rows (the server side); both end in each ``Column.encode``.
    """

    columns: tuple[Column, ...] = field(default_factory=tuple)

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    def feature_names(self) -> list[str]:
        return [name for c in self.columns for name in c.features()]

    @classmethod
    def fit(cls, table: Mapping[str, Sequence[Any]], categorical: Iterable[str] = (),
            boolean: Iterable[str] = ()) -> TabularEncoder:
        """Fit on the training rows: numbers get their mean and std (NaN/None: missing, then the column is
        nullable), categories their sorted distinct values; the columns keep ``table``'s order."""
        categorical, boolean = set(categorical), set(boolean)
        unknown = (categorical | boolean) - set(table)
        if unknown:
            raise ValueError(f"TabularEncoder.fit: no column {sorted(unknown)} in the table")
        columns = []
        for name, values in table.items():
            if name in categorical:
                columns.append(Column(name, "category", categories=tuple(sorted({str(v) for v in values}))))
            elif name in boolean:
                columns.append(Column(name, "boolean"))
            else:
                x = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
                known = x[np.isfinite(x)]
                mean = float(known.mean()) if known.size else 0.0
                std = float(known.std()) if known.size else 1.0
                columns.append(Column(name, "number", mean, std if std > 0 else 1.0, nullable=known.size < x.size))
        return cls(tuple(columns))

    def encode_rows(self, rows: Sequence[Any]) -> np.ndarray:
        """JSON rows (objects by column name) → ``float32 [N, width]``; an unknown or missing column, a value of
        the wrong type or an unknown category is an ``InputError`` at ``[row, column]``."""
        names = {c.name for c in self.columns}
        out = np.zeros((len(rows), self.width), dtype=np.float32)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InputError(f"row {i} is {_describe(row)}, not an object of columns", self.describe(), [i])
            extra = [k for k in row if k not in names]
            if extra:
                raise InputError(f"unknown column {extra[0]!r} (not an input of this model)", self.describe(),
                                 [i, extra[0]])
            start = 0
            for column in self.columns:
                if column.name not in row:
                    raise InputError(f"column {column.name!r} is missing", column.expected(), [i, column.name])
                column.encode(row[column.name], out[i, start:start + column.width], [i, column.name])
                start += column.width
        return out

    def encode_columns(self, table: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Whole columns (the training side: NaN/None in a nullable number column is the mean) → ``float32 [N, width]``."""
        n = len(next(iter(table.values()))) if table else 0
        rows = [{c.name: _cell(table[c.name][i], c) for c in self.columns} for i in range(n)]
        return self.encode_rows(rows)

    def describe(self) -> str:
        return "an object with the columns " + ", ".join(f"{c.name} ({c.type})" for c in self.columns)

    def to_dict(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.columns]

    @classmethod
    def from_dict(cls, columns: Sequence[Mapping[str, Any]]) -> TabularEncoder:
        return cls(tuple(Column.from_dict(c) for c in columns))


def _cell(value: Any, column: Column) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if column.type == "number" and isinstance(value, float) and math.isnan(value):
        return None
    return value


# ----------------------------------------------------------------------------- the spec

@dataclass(frozen=True)
class InputSpec:
    """What one stored input is and how the model sees it (``dataset.json``'s ``input``; see the module docstring)."""

    kind: InputKind
    shape: tuple[int, ...]
    dtype: str = "float32"
    scale: float = 1.0
    mean: Norm = 0.0
    std: Norm = 1.0
    resize: str = "bilinear"
    encoder: TabularEncoder | None = None

    def __post_init__(self) -> None:
        if self.kind == "image" and (len(self.shape) != 3 or self.shape[0] not in (1, 3) or self.dtype != "uint8"):
            raise ValueError(f"an image input is uint8 [1 or 3, H, W], got {self.dtype} {list(self.shape)}")
        if self.kind == "tabular":
            if self.encoder is None:
                raise ValueError("a tabular input needs its columns (the encoder fitted at training time)")
            if tuple(self.shape) != (self.encoder.width,):
                raise ValueError(f"the columns encode {self.encoder.width} features, the inputs have shape "
                                 f"{list(self.shape)}")
        if self.resize not in RESAMPLE:
            raise ValueError(f"unknown resize filter {self.resize!r}; one of {', '.join(RESAMPLE)}")

    @property
    def channels(self) -> int:
        return int(self.shape[0]) if self.kind == "image" else 0

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of an image input."""
        return (int(self.shape[1]), int(self.shape[2])) if self.kind == "image" else (0, 0)

    def normalize(self, stored: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Stored inputs ``[N, *shape]`` → the model's float32 input."""
        x = torch.as_tensor(stored)
        return normalize(x, self.scale, self.mean, self.std)

    def model_range(self) -> tuple[float, float]:
        """The model inputs' range over stored values in [0, 255] (uint8) or [0, 1] (else)."""
        means = self.mean if isinstance(self.mean, (list, tuple)) else [self.mean]
        stds = self.std if isinstance(self.std, (list, tuple)) else [self.std]
        top = 255.0 * self.scale if self.dtype == "uint8" else 1.0
        lows = [(0.0 - m) / s for m, s in zip(means, stds)]
        highs = [(top - m) / s for m, s in zip(means, stds)]
        return min(lows), max(highs)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "shape": list(self.shape), "dtype": self.dtype, "scale": self.scale,
                             "mean": list(self.mean) if isinstance(self.mean, tuple) else self.mean,
                             "std": list(self.std) if isinstance(self.std, tuple) else self.std}
        if self.kind == "image":
            d["resize"] = self.resize
        if self.encoder is not None:
            d["columns"] = self.encoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputSpec:
        """The spec saved in ``dataset.json`` (older checkpoints have no ``kind``: it is inferred)."""
        shape = tuple(int(v) for v in d["shape"])
        dtype = str(d.get("dtype", "float32"))
        encoder = TabularEncoder.from_dict(d["columns"]) if d.get("columns") is not None else None
        kind = d.get("kind") or infer_kind(shape, dtype, encoder is not None)
        mean, std = d.get("mean", 0.0), d.get("std", 1.0)
        return cls(kind=kind, shape=shape, dtype=dtype, scale=float(d.get("scale", 1.0)),
                   mean=tuple(mean) if isinstance(mean, (list, tuple)) else float(mean),
                   std=tuple(std) if isinstance(std, (list, tuple)) else float(std),
                   resize=str(d.get("resize", "bilinear")), encoder=encoder)


def infer_kind(shape: Sequence[int], dtype: str, has_columns: bool = False) -> InputKind:
    """``tabular`` with columns; ``image`` for uint8 ``[1 or 3, H, W]``; else ``tensor``."""
    if has_columns:
        return "tabular"
    if dtype == "uint8" and len(shape) == 3 and shape[0] in (1, 3):
        return "image"
    return "tensor"
