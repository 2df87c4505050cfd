"""The MTAN preprocessed ``.npy`` release of CityScapes and NYUv2 (used by MTAN, LibMTL, PaMaL and PaLoRA).

Layout: ``<folder>/{train,val}/<kind>/{i}.npy`` for i = 0 … N − 1, N the number
of ``.npy`` files in ``image/``:

| kind | array | stored here as |
|---|---|---|
| ``image`` | float H×W×3 in [0, 1] (values k/255) | uint8 [3, H, W] (rounded ×255) |
| ``label``, ``label_7`` | float H×W, class ids, −1 = ignore | int8 [H, W] |
| ``depth`` | float H×W×1 (0 = invalid) | float32 [1, H, W] |
| ``normal`` | float H×W×3 unit vectors (all 0 = invalid) | float16 [3, H, W] |

Normals are kept as float16 (unit vectors to about 5·10⁻⁴, an angle error
below 0.03°) to halve NYUv2's cache; depth as float32 (CityScapes' disparities
are about 0.01).  ``data.image_size`` resizes: the image bilinear, labels,
depth and normals nearest.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pareto_ray.data.files import (
    malformed_file,
    missing_file,
    random_split_indices,
    resize_dense,
    scaled_count,
)
from pareto_ray.splits import Split

KINDS: dict[str, str] = {
    "image": "a float H×W×3 image in [0, 1]",
    "label": "a float H×W class-id map (-1 = ignore)",
    "depth": "a float H×W×1 depth map (0 = invalid)",
    "normal": "a float H×W×3 map of unit normals (all zeros = invalid)",
}


def count(folder: Path, origin: str) -> int:
    images = folder / "image"
    if not images.is_dir():
        raise missing_file(images, f"the image/ folder of the MTAN .npy release (0.npy … N-1.npy, each "
                                   f"{KINDS['image']})", origin)
    n = len(fnmatch.filter(os.listdir(images), "*.npy"))
    if n == 0:
        raise missing_file(images / "0.npy", KINDS["image"], origin)
    return n


def _load(path: Path, kind: str, origin: str) -> np.ndarray:
    expected = KINDS["label" if kind.startswith("label") else kind]
    if not path.is_file():
        raise missing_file(path, f"{expected} (MTAN's .npy release)", origin)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise malformed_file(path, f"not a .npy array ({exc})", expected, origin) from None


def _checked(a: np.ndarray, path: Path, kind: str, classes: int, origin: str) -> np.ndarray:
    """One sample ``[C, H, W]`` (C = 1 for labels and depth), or an error saying what is wrong with it."""
    expected = KINDS["label" if kind.startswith("label") else kind]
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise malformed_file(path, f"dtype {a.dtype}", expected, origin)
    if kind.startswith("label"):
        if a.ndim != 2:
            raise malformed_file(path, f"shape {list(a.shape)}", expected, origin)
        if not np.all(np.mod(a, 1) == 0) or a.min() < -1 or a.max() >= classes:
            raise malformed_file(path, f"labels in [{a.min():g}, {a.max():g}], not integers in -1…{classes - 1}",
                                 f"{expected} with {classes} classes", origin)
        return a[None]
    channels = 1 if kind == "depth" else 3
    if a.ndim == 2 and channels == 1:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] != channels:
        raise malformed_file(path, f"shape {list(a.shape)}", expected, origin)
    if kind == "image" and (a.min() < 0 or a.max() > 1):
        raise malformed_file(path, f"values in [{a.min():.3g}, {a.max():.3g}]", expected, origin)
    return np.moveaxis(a, -1, 0)


STORED = {"image": np.uint8, "label": np.int8, "depth": np.float32, "normal": np.float16}


def read_split(folder: Path, kinds: Sequence[str], classes: int, origin: str,
               size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Every sample of ``folder`` (``train/`` or ``val/``) for the given kinds (``label_7`` is returned as
    ``label``), checked against image 0's height and width, stored compactly (see the module docstring) and
    resized to ``size`` if given."""
    n = count(folder, origin)
    out: dict[str, torch.Tensor] = {}
    hw: tuple[int, int] | None = None
    for kind in kinds:
        key = "label" if kind.startswith("label") else kind
        stored: np.ndarray | None = None
        for i in range(n):
            path = folder / kind / f"{i}.npy"
            a = _checked(_load(path, kind, origin), path, kind, classes, origin)
            hw = hw or (a.shape[1], a.shape[2])
            if (a.shape[1], a.shape[2]) != hw:
                raise malformed_file(path, f"{a.shape[1]}×{a.shape[2]} while image 0 is {hw[0]}×{hw[1]}",
                                     KINDS[key], origin)
            if stored is None:
                stored = np.empty((n, *a.shape), dtype=STORED[key])
            stored[i] = np.rint(a * 255.0) if key == "image" else a
        t = torch.from_numpy(stored[:, 0] if key == "label" else stored)
        out[key] = resize_dense(t, size, "bilinear" if key == "image" else "nearest")
    return out


def hold_out(train: Split, train_count: int, val_count: int, seed: int) -> tuple[Split, Split]:
    """The papers' validation split of train/: ``val_count`` of ``train_count + val_count`` (scaled to the files
    present), drawn with ``seed``."""
    n = len(train)
    n_val = scaled_count(n, train_count + val_count, val_count)
    train_idx, val_idx = random_split_indices(n, [n - n_val, n_val], seed)
    return train.take(train_idx), train.take(val_idx)
