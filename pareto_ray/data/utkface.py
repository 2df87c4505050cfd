"""UTKFace: age (regression), gender and race from 200×200 aligned and cropped faces, as PaMaL/PaLoRA's
``src/datasets/utkface.py`` reads them.

Files: the JPEGs of the "Aligned & Cropped Faces" archive (``UTKFace.tar.gz``)
in ``data.root/UTKFace/`` (or ``data.root/utkface/UTKFace/``, the code's
ImageFolder layout), named ``[age]_[gender]_[race]_[date&time].jpg`` (the
archive adds ``.chip.jpg``).  Names without the four numeric fields — three in
the published set, e.g. ``39_1_20170116174525125.jpg.chip.jpg`` — are skipped
and counted (the code's config expects 23,705 of 23,708 images).

Targets: age z-scored over the whole set (the code's mean and unbiased std;
Huber loss with δ = 1 on the normalized age, so the front's age axis is that
loss, HV reference 0.5 as LORPMAN D.1); gender 0 male / 1 female; race 0–4
(White, Black, Asian, Indian, Others).  Images: RGB resized to 64×64
(``data.image_size``) with PIL's bilinear filter, no normalization (the code's
``Resize((64, 64))``, ``ToTensor()``), cached as uint8.  Splits: the files in
sorted order cut 70/10/20 by ``random_split(…, Generator().manual_seed(42))``,
as the code does — PaMaL C.1's "80/20 train/test split" with a tenth of the
images held out of training for validation.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from pareto_ray.config import DataConfig
from pareto_ray.data.files import load_images, malformed_file, missing_file, random_split_indices, require_root
from pareto_ray.splits import MultiTaskDataset, Split
from pareto_ray.tasks import Task

NAMES = ("utkface",)
IMAGE_SIZE = 64
SPLIT = (0.7, 0.1, 0.2)
SPLIT_SEED = 42
RACES = ("White", "Black", "Asian", "Indian", "Others")
NAME_PATTERN = re.compile(r"^(\d+)_([01])_([0-4])_\d+$")
SUFFIXES = (".jpg", ".jpeg", ".png")
ORIGIN = ("UTKFace (Zhang, Song & Qi 2017; https://susanqq.github.io/UTKFace/, non-commercial research use) is "
          "published on Google Drive only: extract UTKFace.tar.gz (aligned & cropped faces) into data.root, so that "
          "data.root/UTKFace/ holds the JPEGs")
EXPECTED = "JPEGs named [age]_[gender]_[race]_[date&time].jpg (gender 0/1, race 0-4)"

log = logging.getLogger(__name__)


def parse_name(name: str) -> tuple[int, int, int] | None:
    """(age, gender, race) from a UTKFace file name, or None when it lacks a field (the code's ``split('.')[0]``)."""
    match = NAME_PATTERN.match(name.split(".")[0])
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def image_files(cfg: DataConfig) -> tuple[list[Path], list[tuple[int, int, int]], list[str]]:
    """(image paths in sorted order, their labels, the skipped malformed names)."""
    root = require_root(cfg, "UTKFace/ with the face JPEGs", ORIGIN)
    folder = next((f for f in (root / "UTKFace", root / "utkface" / "UTKFace") if f.is_dir()), None)
    if folder is None:
        raise missing_file(root / "UTKFace", f"a folder of {EXPECTED}", ORIGIN)
    paths, labels, skipped = [], [], []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.lower().endswith(SUFFIXES):
            continue
        label = parse_name(path.name)
        if label is None:
            skipped.append(path.name)
            continue
        paths.append(path)
        labels.append(label)
    if skipped:
        log.warning("UTKFace: skipped %d file(s) whose names lack age_gender_race_date: %s", len(skipped),
                    ", ".join(skipped[:10]))
    if not paths:
        raise malformed_file(folder, "no image with a well-formed name", EXPECTED, ORIGIN)
    return paths, labels, skipped


def build(cfg: DataConfig) -> MultiTaskDataset:
    paths, labels, _ = image_files(cfg)
    size = cfg.image_hw or (IMAGE_SIZE, IMAGE_SIZE)
    x = load_images(paths, size, ORIGIN)
    y = torch.tensor(labels, dtype=torch.int64)
    age = y[:, 0].float()
    mean = float(age.mean())
    std = float(age.std()) if len(age) > 1 else 1.0  # torch's unbiased std over the whole set, as the code
    std = std if std > 0 else 1.0
    targets = [((age - mean) / std).float(), y[:, 1].to(torch.int8), y[:, 2].to(torch.int8)]
    tasks = [Task("age", "regression", loss="huber", huber_delta=1.0, reference=0.5, target_mean=mean, target_std=std),
             Task("gender", "classification", 2, labels=("male", "female")),
             Task("race", "classification", 5, labels=RACES)]
    n = len(paths)
    n_train, n_val = int(n * SPLIT[0]), int(n * SPLIT[1])
    parts = random_split_indices(n, [n_train, n_val, n - n_train - n_val], SPLIT_SEED)

    def split(index: torch.Tensor) -> Split:
        return Split(x[index], [t[index] for t in targets], scale=1 / 255, mean=0.0, std=1.0)

    return MultiTaskDataset(*(split(p) for p in parts), tasks)


def prepare(ds: MultiTaskDataset, cfg: DataConfig) -> MultiTaskDataset:
    """Nothing to do: the images are cached resized (uint8; the model sees them in [0, 1])."""
    return ds
