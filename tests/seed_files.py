"""Tiny, format-faithful copies of the seed papers' dataset files (same names, layout, headers, dtypes, label
encodings and image formats as the published ones; a handful of samples), for the loaders' tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from pareto_ray.data.celeba import ATTRIBUTES
from pareto_ray.data.census import COLUMNS
from pareto_ray.data.cifar100 import FINE_TO_COARSE

# --------------------------------------------------------------------------------------------- Census

#: Lines as census-income.data has them (values from the published file; a space after each comma).
CENSUS_TRAIN = [
    "73, Not in universe, 0, 0, High school graduate, 0, Not in universe, Widowed, Not in universe or children, "
    "Not in universe, White, All other, Female, Not in universe, Not in universe, Not in labor force, 0, 0, 0, "
    "Nonfiler, Not in universe, Not in universe, Other Rel 18+ ever marr not in subfamily, Other relative of "
    "householder, 1700.09, ?, ?, ?, Not in universe under 1 year old, ?, 0, Not in universe, United-States, "
    "United-States, United-States, Native- Born in the United States, 0, Not in universe, 2, 0, 95, - 50000.",
    "58, Self-employed-not incorporated, 4, 34, Some college but no degree, 0, Not in universe, Divorced, "
    "Construction, Precision production craft & repair, White, All other, Male, Not in universe, Not in universe, "
    "Children or Armed Forces, 0, 0, 0, Head of household, South, Arkansas, Householder, Householder, 1053.55, "
    "MSA to MSA, Same county, Same county, No, Yes, 1, Not in universe, United-States, United-States, "
    "United-States, Native- Born in the United States, 0, Not in universe, 2, 52, 94, - 50000.",
    "18, Not in universe, 0, 0, 10th grade, 0, High school, Never married, Not in universe or children, Not in "
    "universe, Asian or Pacific Islander, All other, Female, Not in universe, Not in universe, Not in labor force, "
    "0, 0, 0, Nonfiler, Not in universe, Not in universe, Child 18+ never marr Not in a subfamily, Child 18 or "
    "older, 991.95, ?, ?, ?, Not in universe under 1 year old, ?, 0, Not in universe, Vietnam, Vietnam, Vietnam, "
    "Foreign born- Not a citizen of U S , 0, Not in universe, 2, 0, 95, - 50000.",
    "9, Not in universe, 0, 0, Children, 0, Not in universe, Never married, Not in universe or children, Not in "
    "universe, White, All other, Female, Not in universe, Not in universe, Children or Armed Forces, 0, 0, 0, "
    "Nonfiler, Not in universe, Not in universe, Child <18 never marr not in subfamily, Child under 18 never "
    "married, 1758.14, Nonmover, Nonmover, Nonmover, Yes, Not in universe, 0, Both parents present, United-States, "
    "United-States, United-States, Native- Born in the United States, 0, Not in universe, 0, 0, 94, - 50000.",
    "48, Private, 40, 10, Bachelors degree(BA AB BS), 1200, Not in universe, Married-civilian spouse present, "
    "Entertainment, Professional specialty, Amer Indian Aleut or Eskimo, All other, Female, No, Not in universe, "
    "Full-time schedules, 0, 0, 0, Joint both under 65, Not in universe, Not in universe, Spouse of householder, "
    "Spouse of householder, 162.61, Nonmover, Nonmover, Nonmover, Yes, Not in universe, 1, Not in universe, "
    "Philippines, United-States, United-States, Native- Born in the United States, 2, Not in universe, 2, 52, 95, "
    "50000+.",
    "42, Private, 34, 3, Masters degree(MA MS MEng MEd MSW MBA), 0, Not in universe, Married-civilian spouse present, "
    "Finance insurance and real estate, Executive admin and managerial, White, All other, Male, Not in universe, "
    "Not in universe, Full-time schedules, 15024, 0, 200, Joint both under 65, Not in universe, Not in universe, "
    "Householder, Householder, 1535.86, Nonmover, Nonmover, Nonmover, Yes, Not in universe, 6, Not in universe, "
    "United-States, United-States, United-States, Native- Born in the United States, 0, Not in universe, 2, 52, 95, "
    "50000+.",
    "51, Private, 45, 2, Doctorate degree(PhD EdD), 0, Not in universe, Married-civilian spouse present, Other "
    "professional services, Professional specialty, White, All other, Male, Not in universe, Not in universe, "
    "Children or Armed Forces, 0, 0, 1500, Joint both under 65, Not in universe, Not in universe, Householder, "
    "Householder, 2008.26, Nonmover, Nonmover, Nonmover, Yes, Not in universe, 4, Not in universe, Germany, "
    "Germany, United-States, Native- Born in the United States, 0, Not in universe, 2, 52, 94, 50000+.",
    "15, Not in universe, 0, 0, 9th grade, 0, Not in universe, Never married, Not in universe or children, Not in "
    "universe, Black, All other, Male, Not in universe, Not in universe, Children or Armed Forces, 0, 0, 0, "
    "Nonfiler, Not in universe, Not in universe, Grandchild <18 ever marr not in subfamily, Other relative of "
    "householder, 1200.12, Nonmover, Nonmover, Nonmover, Yes, Not in universe, 0, Mother only present, "
    "United-States, United-States, United-States, Native- Born in the United States, 0, Not in universe, 0, 0, 95, "
    "- 50000.",
    "36, Private, 33, 29, Associates degree-occup /vocational, 0, Not in universe, Married-civilian spouse present, "
    "Retail trade, Sales, White, Mexican-American, Female, Not in universe, Not in universe, Full-time schedules, "
    "0, 0, 0, Joint both under 65, Not in universe, Not in universe, Spouse of householder, Spouse of householder, "
    "977.43, Nonmover, Nonmover, Nonmover, Yes, Not in universe, 3, Not in universe, Mexico, Mexico, "
    "United-States, Native- Born in the United States, 0, Not in universe, 2, 40, 94, - 50000.",
    "29, Local government, 43, 26, Prof school degree (MD DDS DVM LLB JD), 0, Not in universe, Never married, "
    "Education, Adm support including clerical, White, All other, Female, Not in universe, Not in universe, "
    "Full-time schedules, 0, 0, 0, Single, Not in universe, Not in universe, Householder, Householder, 1402.1, "
    "Nonmover, Nonmover, Nonmover, Yes, Not in universe, 6, Not in universe, United-States, United-States, "
    "United-States, Native- Born in the United States, 0, Not in universe, 2, 52, 95, - 50000.",
]
#: census-income.test lines: two with industry codes (6, 99) that the training lines lack.
CENSUS_TEST = [
    "38, Private, 6, 36, 1st 2nd 3rd or 4th grade, 0, Not in universe, Married-civilian spouse present, "
    "Manufacturing-durable goods, Machine operators assmblrs & inspctrs, White, Mexican (Mexicano), Female, Not in "
    "universe, Not in universe, Full-time schedules, 0, 0, 0, Joint one under 65 & one 65+, Not in universe, Not in "
    "universe, Spouse of householder, Spouse of householder, 1032.38, ?, ?, ?, Not in universe under 1 year old, ?, "
    "4, Not in universe, Mexico, Mexico, Mexico, Foreign born- Not a citizen of U S , 0, Not in universe, 2, 12, 95, "
    "- 50000.",
    "44, Self-employed-not incorporated, 99, 35, Bachelors degree(BA AB BS), 0, Not in universe, Never married, "
    "Construction, Precision production craft & repair, White, All other, Male, Not in universe, Not in universe, "
    "Full-time schedules, 0, 0, 2500, Head of household, South, Arkansas, Householder, Householder, 1462.33, "
    "MSA to MSA, Same county, Same county, No, Yes, 1, Not in universe, United-States, United-States, "
    "United-States, Native- Born in the United States, 2, Not in universe, 2, 26, 95, 50000+.",
    "2, Not in universe, 0, 0, Children, 0, Not in universe, Never married, Not in universe or children, Not in "
    "universe, White, All other, Male, Not in universe, Not in universe, Children or Armed Forces, 0, 0, 0, "
    "Nonfiler, Not in universe, Not in universe, Child <18 never marr not in subfamily, Child under 18 never "
    "married, 1601.75, Nonmover, Nonmover, Nonmover, Yes, Not in universe, 0, Both parents present, United-States, "
    "United-States, United-States, Native- Born in the United States, 0, Not in universe, 0, 0, 94, - 50000.",
]

#: Distinct values per column in the published census-income.data (its census-income.names lists them).
CENSUS_CATEGORIES = {"ACLSWKR": 9, "ADTIND": 52, "ADTOCC": 47, "AHGA": 17, "AHSCOL": 3, "AMARITL": 7, "AMJIND": 24,
                     "AMJOCC": 15, "ARACE": 5, "AREORGN": 10, "ASEX": 2, "AUNMEM": 3, "AUNTYPE": 6, "AWKSTAT": 8,
                     "FILESTAT": 6, "GRINREG": 6, "GRINST": 51, "HHDFMX": 38, "HHDREL": 8, "MIGMTR1": 10,
                     "MIGMTR3": 9, "MIGMTR4": 10, "MIGSAME": 3, "MIGSUN": 4, "NOEMP": 7, "PARENT": 5, "PEFNTVTY": 43,
                     "PEMNTVTY": 43, "PENATVTY": 43, "PRCITSHP": 5, "SEOTR": 3, "VETQVA": 3, "VETYN": 3, "YEAR": 2,
                     "target": 2}


def write_census(root: Path, train: list[str] | None = None, test: list[str] | None = None) -> Path:
    folder = root / "census"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "census-income.data").write_text("\n".join(train or CENSUS_TRAIN) + "\n")
    (folder / "census-income.test").write_text("\n".join(test or CENSUS_TEST) + "\n")
    return root


def census_with_published_categories(rows: int = 2000) -> list[str]:
    """Lines where every categorical column takes as many distinct values as in the published file (made-up
    values; HHDFMX's last one the dropped "Grandchild …" value, which the loader removes with its rows)."""
    lines = []
    for i in range(rows):
        fields = []
        for c in COLUMNS:
            count = CENSUS_CATEGORIES.get(c)
            if c == "target":
                fields.append(["- 50000.", "50000+."][i % 2])
            elif c == "HHDFMX" and i % count == count - 1:
                fields.append("Grandchild <18 ever marr not in subfamily")
            elif count is not None:
                fields.append(f"{c.lower()}-{i % count}")
            else:
                fields.append(str(20 + (i * 7) % 60) if c == "AAGE" else f"{(i * 13) % 97}.5")
        lines.append(", ".join(fields))
    return lines


# --------------------------------------------------------------------------------------------- images

def _jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=90)


#: (age, gender, race) of the copy's well-formed UTKFace images, and the three names the published set gets wrong.
UTKFACE_LABELS = [(1, 0, 2), (25, 1, 0), (26, 0, 1), (34, 1, 3), (45, 0, 4), (52, 1, 0), (61, 0, 2), (70, 1, 1),
                  (8, 0, 0), (90, 1, 3)]
UTKFACE_MALFORMED = ["39_1_20170116174525125.jpg.chip.jpg", "61_1_20170109150557335.jpg.chip.jpg",
                     "61_1_20170109142408075.jpg.chip.jpg"]


def write_utkface(root: Path, side: int = 40) -> Path:
    """``root/UTKFace/`` with JPEGs named as the aligned & cropped archive names them (200×200 there)."""
    folder = root / "UTKFace"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (age, gender, race) in enumerate(UTKFACE_LABELS):
        _jpeg(folder / f"{age}_{gender}_{race}_2017011621{i:02d}00903.jpg.chip.jpg", (side, side), i)
    for i, name in enumerate(UTKFACE_MALFORMED):
        _jpeg(folder / name, (side, side), 100 + i)
    return root


def write_celeba(root: Path, partitions: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 1, 1, 2, 2)) -> Path:
    """``root/celeba/`` as torchvision's CelebA download leaves it (178×218 aligned JPEGs, the attribute and
    partition lists in their published whitespace format)."""
    folder = root / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    attrs = rng.choice([-1, 1], size=(len(partitions), len(ATTRIBUTES)))
    lines, parts = [str(len(partitions)), " ".join(ATTRIBUTES) + " "], []
    for i, split in enumerate(partitions):
        name = f"{i + 1:06d}.jpg"
        _jpeg(images / name, (178, 218), i)
        lines.append(name + " " + " ".join(f"{v:2d}" for v in attrs[i]))
        parts.append(f"{name} {split}")
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return root


# --------------------------------------------------------------------------------------------- CIFAR-100

FINE_LABEL_NAMES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm"]
COARSE_LABEL_NAMES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2"]


def cifar_batch(fine: list[int], label: str, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(fine))], b"batch_label": label.encode(),
            b"fine_labels": list(fine), b"coarse_labels": [FINE_TO_COARSE[f] for f in fine],
            b"data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)}


def write_cifar100(root: Path, train_fine: list[int] | None = None, test_fine: list[int] | None = None) -> Path:
    """``root/cifar-100-python/`` with the meta, train and test pickles (keys as bytes, as Python 3 reads them
    with ``encoding='bytes'``)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    train_fine = train_fine if train_fine is not None else list(range(100)) * 2
    test_fine = test_fine if test_fine is not None else list(range(0, 100, 3))
    meta = {b"fine_label_names": [n.encode() for n in FINE_LABEL_NAMES],
            b"coarse_label_names": [n.encode() for n in COARSE_LABEL_NAMES]}
    for name, obj in (("meta", meta), ("train", cifar_batch(train_fine, "training batch 1 of 1", 0)),
                      ("test", cifar_batch(test_fine, "testing batch 1 of 1", 1))):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return root


# --------------------------------------------------------------------------------------------- MTAN .npy

def _npy_sample(rng: np.random.Generator, h: int, w: int, kinds: tuple[str, ...], classes: int) -> dict[str, np.ndarray]:
    out = {"image": (rng.integers(0, 256, (h, w, 3)) / 255.0).astype(np.float32)}
    label = rng.integers(-1, classes, (h, w)).astype(np.float32)
    out["label"] = label
    depth = rng.uniform(0.01, 0.5, (h, w, 1)).astype(np.float32)
    depth[label == -1] = 0.0  # invalid pixels
    out["depth"] = depth
    if "normal" in kinds:
        n = rng.normal(size=(h, w, 3))
        n /= np.linalg.norm(n, axis=2, keepdims=True)
        n[label == -1] = 0.0
        out["normal"] = n.astype(np.float32)
    return out


def write_mtan(root: Path, kinds: tuple[str, ...], classes: int, size: tuple[int, int], counts: dict[str, int],
               label_folder: str = "label") -> Path:
    """``root/{train,val}/<kind>/{i}.npy`` as MTAN's release (float32 arrays; labels float with -1)."""
    rng = np.random.default_rng(0)
    for split, n in counts.items():
        for i in range(n):
            sample = _npy_sample(rng, *size, kinds, classes)
            for kind in kinds:
                folder = root / split / (label_folder if kind == "label" else kind)
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / f"{i}.npy", sample[kind])
    return root


def write_cityscapes(root: Path, size: tuple[int, int] = (32, 64), train: int = 8, val: int = 3) -> Path:
    return write_mtan(root, ("image", "label", "depth"), 7, size, {"train": train, "val": val}, "label_7")


def write_nyuv2(root: Path, size: tuple[int, int] = (32, 64), train: int = 8, val: int = 3) -> Path:
    return write_mtan(root, ("image", "label", "depth", "normal"), 13, size, {"train": train, "val": val})


# --------------------------------------------------------------------------------------------- SARCOS

def write_sarcos(root: Path, train: int = 60, test: int = 12) -> Path:
    """``sarcos_inv.mat`` / ``sarcos_inv_test.mat`` with their published variable names (float64 N × 28)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("sarcos_inv", train), ("sarcos_inv_test", test)):
        x = rng.normal(size=(n, 21))
        torques = x[:, :7] * np.arange(1, 8) * 10 + rng.normal(size=(n, 7)) + 5 * np.arange(1, 8)
        scipy.io.savemat(root / f"{name}.mat", {name: np.concatenate([x, torques], 1)})
    return root
