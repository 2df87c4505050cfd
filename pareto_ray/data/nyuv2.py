"""NYUv2: 13-class segmentation, depth and surface normals at 288×384, from MTAN's preprocessed ``.npy`` release.

Files (``pareto_ray.data.mtan`` describes the arrays): ``data.root/`` (or
``data.root/nyu/``, PaLoRA's layout) with ``train/`` (795 samples) and
``val/`` (654), each holding ``image/``, ``label/`` (13 classes, −1 = ignore),
``depth/`` (metres, 0 = invalid) and ``normal/`` (unit vectors, all zeros =
invalid), ``{i}.npy`` each.

Splits, as PaLoRA's ``NYUv2DataModule`` (PaLoRA B.1: 95 of the 795 training
images held out): ``randperm(795, Generator().manual_seed(795))``, its first
700 for training and the last 95 for validation; val/ as the test set.  Images
are fed as 2x − 1, in [−1, 1] (as the code).  The code's scale-crop and flip
augmentation is not applied (the training loop has no augmentation).

Front: mIoU (↑, reference 0), depth absolute error (↓) and the normals' mean
angle (↓).  No paper reports a hypervolume on NYUv2, so the references are
ours: 1.0 m for the depth error (the papers report 0.51–0.70) and 90° for the
mean angle (a normal predicted at random is 90° off on average).
"""

from __future__ import annotations

from pathlib import Path

from pareto_ray.config import DataConfig
from pareto_ray.data import mtan
from pareto_ray.data.files import find_folder, missing_file, require_root
from pareto_ray.splits import MultiTaskDataset, Split
from pareto_ray.tasks import Task

NAMES = ("nyuv2",)
CLASSES = 13
TRAIN, VAL = 700, 95  # of train/'s 795 (PaLoRA's nyuv2.py)
SPLIT_SEED = 795
ORIGIN = ("NYUv2 (Silberman et al. 2012; https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html) as preprocessed by "
          "MTAN (Liu et al. 2019; 288×384, 13 classes, linked from https://github.com/lorenmt/mtan): data.root/train/ "
          "and data.root/val/ with image/, label/, depth/ and normal/; it cannot be downloaded here")


def tasks_of() -> list[Task]:
    return [Task("semantic", "segmentation", CLASSES), Task("depth", "depth", reference=1.0),
            Task("normal", "normals", 3, reference=90.0)]


def _folder(cfg: DataConfig) -> Path:
    root = require_root(cfg, "train/ and val/ of MTAN's NYUv2 release", ORIGIN)
    folder = find_folder(root, ("", "nyu", "nyuv2"), "train")
    if folder is None:
        raise missing_file(root / "train", "train/ and val/ with image/, label/, depth/ and normal/ (MTAN's .npy "
                                           "release)", ORIGIN)
    return folder


def read(folder: Path, size: tuple[int, int] | None) -> Split:
    arrays = mtan.read_split(folder, ("image", "label", "depth", "normal"), CLASSES, ORIGIN, size)
    return Split(arrays["image"], [arrays["label"], arrays["depth"], arrays["normal"]], scale=1 / 255, mean=0.5,
                 std=0.5)


def build(cfg: DataConfig) -> MultiTaskDataset:
    folder = _folder(cfg)
    train, val = mtan.hold_out(read(folder / "train", cfg.image_hw), TRAIN, VAL, SPLIT_SEED)
    return MultiTaskDataset(train, val, read(folder / "val", cfg.image_hw), tasks_of())


def prepare(ds: MultiTaskDataset, cfg: DataConfig) -> MultiTaskDataset:
    """Nothing to do: images, labels, depth and normals are cached as read."""
    return ds
