"""CelebA: 40 binary face attributes (LORPMAN §4.3, D.7), from the aligned faces in torchvision's layout.

Files, in ``data.root/celeba/`` (what ``torchvision.datasets.CelebA`` downloads
there; ``data.download: true`` lets it): ``img_align_celeba/`` (178×218
JPEGs ``000001.jpg`` …), ``list_attr_celeba.txt`` (a count line, the 40
attribute names, then one line per image: its file name and 40 values −1/1)
and ``list_eval_partition.txt`` (file name and 0 train / 1 valid / 2 test:
162,770 / 19,867 / 19,962).  Both text files are read as torchvision reads
them (whitespace-separated); the attributes become 0/1, as torchvision maps
them.  ``data.tasks`` picks attributes by name (default all 40, file order).

Images: RGB resized to 64×64 (``data.image_size``) with PIL's bilinear filter,
no crop and no normalization, as PaMaL's ``celeba.py`` (``Resize((64, 64))``,
``ToTensor()``); cached as uint8 — 202,599 × 3 × 64 × 64 bytes = 2.5 GB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pareto_ray.config import DataConfig
from pareto_ray.data.files import load_images, malformed_file, missing_file, require_root
from pareto_ray.splits import MultiTaskDataset, Split
from pareto_ray.tasks import Task

NAMES = ("celeba",)
IMAGE_SIZE = 64
ATTRIBUTES = ("5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
              "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
              "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
              "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
              "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
              "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")
ATTR_FILE, PARTITION_FILE, IMAGES = "list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba"
ORIGIN = ("CelebA (Liu et al. 2015; https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, non-commercial research use) "
          "in torchvision's layout: data.root/celeba/ with img_align_celeba/, list_attr_celeba.txt and "
          "list_eval_partition.txt; data.download=true lets torchvision fetch it from Google Drive")
EXPECTED_ATTR = "a count line, a line of the 40 attribute names, then per image its file name and 40 values -1 or 1"
EXPECTED_PARTITION = "per image its file name and 0 (train), 1 (valid) or 2 (test)"


def _folder(cfg: DataConfig) -> Path:
    root = require_root(cfg, "celeba/ in torchvision's CelebA layout", ORIGIN)
    folder = root / "celeba"
    if not (folder / ATTR_FILE).is_file() and cfg.download:
        from torchvision import datasets  # imported on download only: torchvision's import is ~3 s

        datasets.CelebA(str(root), split="all", target_type="attr", download=True)
    return folder


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, image file names, ``int8 [N, 40]`` attributes as 0/1)."""
    if not path.is_file():
        raise missing_file(path, EXPECTED_ATTR, ORIGIN)
    lines = path.read_text().splitlines()
    if len(lines) < 3 or not lines[0].strip().isdigit():
        raise malformed_file(path, "the first line is not the image count", EXPECTED_ATTR, ORIGIN)
    names = lines[1].split()
    files, values = [], []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1 or any(v not in ("-1", "1") for v in fields[1:]):
            raise malformed_file(path, f"line {number} is not a file name and {len(names)} values -1/1",
                                 EXPECTED_ATTR, ORIGIN)
        files.append(fields[0])
        values.append([v == "1" for v in fields[1:]])
    if int(lines[0]) != len(files):
        raise malformed_file(path, f"the count line says {lines[0].strip()} images, the file lists {len(files)}",
                             EXPECTED_ATTR, ORIGIN)
    return names, files, np.array(values, dtype=np.int8).reshape(len(files), len(names))


def read_partition(path: Path) -> dict[str, int]:
    if not path.is_file():
        raise missing_file(path, EXPECTED_PARTITION, ORIGIN)
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise malformed_file(path, f"line {number} is {line!r}", EXPECTED_PARTITION, ORIGIN)
        out[fields[0]] = int(fields[1])
    return out


def build(cfg: DataConfig) -> MultiTaskDataset:
    folder = _folder(cfg)
    names, files, attrs = read_attributes(folder / ATTR_FILE)
    partition = read_partition(folder / PARTITION_FILE)
    chosen = list(cfg.tasks or names)
    unknown = [t for t in chosen if t not in names]
    if unknown:
        raise ValueError(f"data.tasks: CelebA has no attribute {unknown}; {folder / ATTR_FILE} names "
                         f"{', '.join(names)}")
    columns = [names.index(t) for t in chosen]
    unsplit = [f for f in files if f not in partition]
    if unsplit:
        raise malformed_file(folder / PARTITION_FILE, f"{len(unsplit)} image(s) of {ATTR_FILE} are not listed, e.g. "
                             f"{unsplit[0]}", EXPECTED_PARTITION, ORIGIN)
    if not (folder / IMAGES).is_dir():
        raise missing_file(folder / IMAGES, "the aligned face JPEGs (000001.jpg, …)", ORIGIN)
    split_of = np.array([partition[f] for f in files])
    size = cfg.image_hw or (IMAGE_SIZE, IMAGE_SIZE)
    targets = torch.from_numpy(attrs[:, columns])

    def split(code: int) -> Split:
        index = np.flatnonzero(split_of == code)
        x = load_images([folder / IMAGES / files[i] for i in index], size, ORIGIN)
        y = targets[torch.as_tensor(index)]
        return Split(x, list(y.unbind(1)), scale=1 / 255, mean=0.0, std=1.0)

    tasks = [Task(name, "binary", reference=0.0) for name in chosen]
    return MultiTaskDataset(split(0), split(1), split(2), tasks)


def prepare(ds: MultiTaskDataset, cfg: DataConfig) -> MultiTaskDataset:
    """Nothing to do: the images are cached resized (uint8; the model sees them in [0, 1])."""
    return ds
