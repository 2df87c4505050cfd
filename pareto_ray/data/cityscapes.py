"""CityScapes: 7-class segmentation and depth at 128×256, from MTAN's preprocessed ``.npy`` release.

Files (``pareto_ray.data.mtan`` describes the arrays): ``data.root/`` (or
``data.root/cityscapes/``) with ``train/`` (2,975 samples) and ``val/`` (500),
each holding ``image/``, ``label_7/`` (the 7-class labels PaMaL/PaLoRA read;
LibMTL's ``label/`` is read when there is no ``label_7/``) and ``depth/``
(disparity, 0 = invalid), ``{i}.npy`` each.

Splits, as PaMaL/PaLoRA's ``Cityscapes2SplitDataModule`` (PaMaL's Setting II):
train/ cut by ``random_split(…, [2500, 475], Generator().manual_seed(42))``
into training and validation, val/ as the test set.  Images in [0, 1], not
normalized (as the code).  The code's random scale-crop and flip augmentation
is not applied (the training loop has no augmentation).

Front: mIoU (↑, reference 0) and depth absolute error (↓).  No paper reports a
hypervolume on CityScapes (they report per-metric tables), so the reference of
the depth error is ours: 0.1, about seven times the errors the papers report
(0.013–0.054), so that every reported method lies inside it.
"""

from __future__ import annotations

from pathlib import Path

from pareto_ray.config import DataConfig
from pareto_ray.data import mtan
from pareto_ray.data.files import find_folder, missing_file, require_root
from pareto_ray.splits import MultiTaskDataset, Split
from pareto_ray.tasks import Task

NAMES = ("cityscapes",)
CLASSES = 7
TRAIN, VAL = 2500, 475  # of train/'s 2,975 (PaMaL/PaLoRA's cityscapes2.py)
SPLIT_SEED = 42
DEPTH_REFERENCE = 0.1
ORIGIN = ("CityScapes (Cordts et al. 2016; https://www.cityscapes-dataset.com/, registration and non-commercial "
          "licence) as preprocessed by MTAN (Liu et al. 2019; 128×256, linked from https://github.com/lorenmt/mtan): "
          "data.root/train/ and data.root/val/ with image/, label_7/ and depth/; it cannot be downloaded here")


def tasks_of() -> list[Task]:
    return [Task("semantic", "segmentation", CLASSES), Task("depth", "depth", reference=DEPTH_REFERENCE)]


def _folder(cfg: DataConfig) -> Path:
    root = require_root(cfg, "train/ and val/ of MTAN's CityScapes release", ORIGIN)
    folder = find_folder(root, ("", "cityscapes"), "train")
    if folder is None:
        raise missing_file(root / "train", "train/ and val/ with image/, label_7/ and depth/ (MTAN's .npy release)",
                           ORIGIN)
    return folder


def read(folder: Path, size: tuple[int, int] | None) -> Split:
    labels = "label_7" if (folder / "label_7").is_dir() or not (folder / "label").is_dir() else "label"
    arrays = mtan.read_split(folder, ("image", labels, "depth"), CLASSES, ORIGIN, size)
    return Split(arrays["image"], [arrays["label"], arrays["depth"]], scale=1 / 255, mean=0.0, std=1.0)


def build(cfg: DataConfig) -> MultiTaskDataset:
    folder = _folder(cfg)
    train, val = mtan.hold_out(read(folder / "train", cfg.image_hw), TRAIN, VAL, SPLIT_SEED)
    return MultiTaskDataset(train, val, read(folder / "val", cfg.image_hw), tasks_of())


def prepare(ds: MultiTaskDataset, cfg: DataConfig) -> MultiTaskDataset:
    """Nothing to do: images, labels and depth are cached as read."""
    return ds
