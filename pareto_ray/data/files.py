"""What the seed-paper dataset modules share: errors that name the file, the papers' splits, images as uint8.

Every loader reads the files as they are published (or as the papers' code
preprocesses them) from ``data.root``.  A missing file is a
``FileNotFoundError`` and a malformed one a ``DatasetError``; both name the
file, what was expected in it and where the dataset comes from, so the message
alone says what to fetch or fix.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from pareto_ray.config import DataConfig


class DatasetError(ValueError):
    """A dataset file that is there but not in the published format; the message names it."""


def missing_file(path: str | os.PathLike, expected: str, source: str) -> FileNotFoundError:
    return FileNotFoundError(f"{path} not found: expected {expected}. {source}")


def malformed_file(path: str | os.PathLike, problem: str, expected: str, source: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}; expected {expected}. {source}")


def require_root(cfg: DataConfig, expected: str, source: str) -> Path:
    """``data.root`` as a path, or an error saying what it should hold."""
    if cfg.root is None:
        raise FileNotFoundError(f"data.root is not set: {cfg.dataset} needs a folder holding {expected}. {source}")
    return Path(cfg.root).expanduser()


def find_folder(root: Path, candidates: Sequence[str], marker: str) -> Path | None:
    """The first of ``root/candidate`` that holds ``marker`` (a file or folder name); None if none does."""
    for name in candidates:
        folder = root / name if name else root
        if (folder / marker).exists():
            return folder
    return None


def download_file(url: str, folder: Path, filename: str, md5: str | None = None) -> Path:
    """``url`` into ``folder/filename`` (torchvision's downloader, md5 checked when given); ``.gz`` unpacked."""
    from torchvision.datasets.utils import download_url  # imported on download only: torchvision's import is ~3 s

    folder.mkdir(parents=True, exist_ok=True)
    download_url(url, str(folder), filename, md5)
    path = folder / filename
    if path.suffix == ".gz":
        target = path.with_suffix("")
        with gzip.open(path, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return target
    return path


def random_split_indices(n: int, lengths: Sequence[int], seed: int) -> list[torch.Tensor]:
    """The index sets ``torch.utils.data.random_split(range(n), lengths, Generator().manual_seed(seed))`` makes:
    one permutation of ``n``, cut in order (the papers' code splits UTKFace, CityScapes and NYUv2 this way)."""
    if sum(lengths) != n:
        raise ValueError(f"split lengths {list(lengths)} do not add up to {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cuts = np.cumsum([0, *lengths])
    return [perm[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def scaled_count(n: int, published_total: int, published_part: int) -> int:
    """The papers' fixed split size ``published_part`` of ``published_total``, scaled to a copy of ``n`` samples
    (exactly ``published_part`` on the published files; at least 1 and at most n − 1 otherwise)."""
    return min(max(1, round(n * published_part / published_total)), max(n - 1, 1))


def load_image(path: Path, size: tuple[int, int], source: str) -> np.ndarray:
    """One image as ``uint8 [3, H, W]``: RGB, resized to ``size`` (height, width) with PIL's bilinear filter —
    what ``torchvision.transforms.Resize((H, W))`` does to a PIL image in the papers' code."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            if rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()
    except FileNotFoundError:
        raise missing_file(path, "an image file", source) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise malformed_file(path, f"not a readable image ({exc})", "a JPEG image", source) from None


def load_images(paths: Sequence[Path], size: tuple[int, int], source: str, workers: int | None = None) -> torch.Tensor:
    """``uint8 [N, 3, H, W]`` of the images at ``paths`` (decoded in threads: PIL releases the GIL)."""
    out = np.empty((len(paths), 3, size[0], size[1]), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = load_image(paths[i], size, source)

    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 64:
        for i in range(len(paths)):
            one(i)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(len(paths)), chunksize=256))
    return torch.from_numpy(out)


def resize_dense(x: torch.Tensor, size: tuple[int, int] | None, mode: str) -> torch.Tensor:
    """``[N, C, H, W]`` (or ``[N, H, W]``) resized to ``size``: ``bilinear`` (antialiased) for images,
    ``nearest`` for labels, depth and normals (no value is invented between two labelled pixels)."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    squeeze = x.dim() == 3
    y = x[:, None] if squeeze else x
    if mode == "nearest":
        y = F.interpolate(y.float(), size=size, mode="nearest").to(x.dtype)
    else:
        y = F.interpolate(y.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        y = y.round().clamp(0, 255).to(x.dtype) if x.dtype == torch.uint8 else y.to(x.dtype)
    return y[:, 0] if squeeze else y
