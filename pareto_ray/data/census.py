"""UCI Census-Income (KDD): binary tasks derived from the columns, as PaMaL's ``src/datasets/census.py`` derives them.

Files: ``census-income.data`` and ``census-income.test`` from the UCI
``census-income-mld`` folder (``.gz`` there; either form is read), in
``data.root/census/`` (PaMaL's layout) or ``data.root/``.  Each line has 42
comma-separated fields, categorical values keep their leading space in the
file (compared here after stripping it), ``?`` is a category of its own, the
label is ``- 50000.`` or ``50000+.``.

Tasks (``data.tasks``, default age and education as PaMaL 5.1 / LORPMAN D.4;
income and never_married are Pareto MTL's pairing), each binary and each
dropping its source column from the inputs:

| task | 1 when | source column |
|---|---|---|
| income | the label is ``50000+.`` | label |
| age | ``AAGE >= 40`` | AAGE |
| education | ``AHGA`` starts with Bachelors, Some, Maters, Asso, Doctorate or Prof | AHGA |
| never_married | ``AMARITL`` is ``Never married`` | AMARITL |

The education rule keeps the code's typo "Maters": "Masters degree" counts as 0.

Inputs, as the code builds them: the columns MIGMTR1, MIGMTR3, MIGMTR4 and
YEAR dropped, and the rows whose HHDFMX is "Grandchild <18 ever marr not in
subfamily" (in both files); the continuous columns (AAGE, AHRSPAY, DIVVAL,
CAPGAIN, CAPLOSS, WKSWORK, MARSUPWT, minus task sources) z-scored; ASEX as 0/1;
every other column — numeric codes and the columns of tasks not chosen
included — one-hot.  The scaler and the one-hot vocabulary are fitted on the
training file only (the code fits the scaler there too; it one-hots the two
files separately, which gives the same columns on the published files), so a
test value unseen in training is all zeros.  The published files give 468
inputs for age + education, 477 for income + never_married, 483 for income +
age (the widths the code hard-codes).  Validation: 20% of the training file
(``train_test_split(test_size=0.2, random_state=data.seed)``; seed 0 is the
code's); test: the test file.
"""

from __future__ import annotations

import csv
import gzip
import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from pareto_ray.config import CENSUS_TASKS, DataConfig
from pareto_ray.data.files import download_file, malformed_file, missing_file, require_root
from pareto_ray.splits import MultiTaskDataset, Split
from pareto_ray.tasks import Task

NAMES = ("census",)
COLUMNS = ("AAGE", "ACLSWKR", "ADTIND", "ADTOCC", "AHGA", "AHRSPAY", "AHSCOL", "AMARITL", "AMJIND", "AMJOCC", "ARACE",
           "AREORGN", "ASEX", "AUNMEM", "AUNTYPE", "AWKSTAT", "CAPGAIN", "CAPLOSS", "DIVVAL", "FILESTAT", "GRINREG",
           "GRINST", "HHDFMX", "HHDREL", "MARSUPWT", "MIGMTR1", "MIGMTR3", "MIGMTR4", "MIGSAME", "MIGSUN", "NOEMP",
           "PARENT", "PEFNTVTY", "PEMNTVTY", "PENATVTY", "PRCITSHP", "SEOTR", "VETQVA", "VETYN", "WKSWORK", "YEAR",
           "target")
CONTINUOUS = ("AAGE", "AHRSPAY", "DIVVAL", "CAPGAIN", "CAPLOSS", "WKSWORK", "MARSUPWT")
BINARY = ("ASEX",)
DROPPED = ("MIGMTR1", "MIGMTR3", "MIGMTR4", "YEAR")
DROPPED_ROWS = ("HHDFMX", "Grandchild <18 ever marr not in subfamily")
LABELS = ("- 50000.", "50000+.")
SOURCE = {"income": "target", "age": "AAGE", "education": "AHGA", "never_married": "AMARITL"}
EDUCATION_PREFIXES = ("Bachelors", "Some", "Maters", "Asso", "Doctorate", "Prof")
DEFAULT_TASKS = ("age", "education")
FILES = ("census-income.data", "census-income.test")
URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld/"
ORIGIN = (f"Census-Income (KDD) is the UCI census-income-mld dataset ({URL}census-income.data.gz and "
          f"census-income.test.gz; CC BY 4.0): put census-income.data and census-income.test (or their .gz) in "
          f"data.root/census/, or set data.download=true")
EXPECTED = "42 comma-separated fields per line (AAGE, ACLSWKR, …, YEAR, label), the label ' - 50000.' or ' 50000+.'"

log = logging.getLogger(__name__)
Table = dict[str, np.ndarray]


def task_label(name: str, table: Table) -> np.ndarray:
    """The code's rule for task ``name`` (0/1 per row)."""
    if name == "income":
        return (table["target"] != LABELS[0]).astype(np.int8)
    if name == "age":
        return (table["AAGE"].astype(float) >= 40).astype(np.int8)
    if name == "education":
        return np.array([v.startswith(EDUCATION_PREFIXES) for v in table["AHGA"]], dtype=np.int8)
    return (table["AMARITL"] == "Never married").astype(np.int8)


def tasks_of(cfg: DataConfig) -> list[Task]:
    return [Task(name, "binary", reference=0.0) for name in (cfg.tasks or DEFAULT_TASKS)]


def _folder(cfg: DataConfig) -> Path:
    root = require_root(cfg, "census/census-income.data and census/census-income.test", ORIGIN)
    for folder in (root / "census", root):
        if any((folder / f"{FILES[0]}{ext}").is_file() for ext in ("", ".gz")):
            return folder
    if cfg.download:
        for name in FILES:
            download_file(f"{URL}{name}.gz", root / "census", f"{name}.gz")
        return root / "census"
    raise missing_file(root / "census" / FILES[0], EXPECTED, ORIGIN)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_file(path: Path) -> Table:
    """The 42 columns of one census file as string arrays (values stripped), checked field by field."""
    gz = path.with_name(path.name + ".gz")
    if not path.is_file() and not gz.is_file():
        raise missing_file(path, EXPECTED, ORIGIN)
    rows = []
    with (open(path, newline="", encoding="latin-1") if path.is_file()
          else gzip.open(gz, "rt", newline="", encoding="latin-1")) as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(COLUMNS):
                raise malformed_file(path, f"line {number} has {len(row)} fields", EXPECTED, ORIGIN)
            rows.append([v.strip() for v in row])
    if not rows:
        raise malformed_file(path, "no data lines", EXPECTED, ORIGIN)
    cols = np.array(rows, dtype=object).T
    del rows
    table = {name: cols[i].astype(str) for i, name in enumerate(COLUMNS)}
    bad = ~np.isin(table["target"], LABELS)
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 1
        raise malformed_file(path, f"data line {line} has the label {str(table['target'][bad][0])!r}", EXPECTED, ORIGIN)
    for name in CONTINUOUS:
        values = np.unique(table[name])
        bad_values = [str(v) for v in values if v != "?" and not _is_number(v)]
        if bad_values:
            line = int(np.flatnonzero(table[name] == bad_values[0])[0]) + 1
            raise malformed_file(path, f"data line {line}: {name} is {bad_values[0]!r}, not a number", EXPECTED,
                                 ORIGIN)
    keep = table[DROPPED_ROWS[0]] != DROPPED_ROWS[1]
    return {k: v[keep] for k, v in table.items() if k not in DROPPED}


def _numbers(values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), np.nan)
    known = values != "?"
    out[known] = values[known].astype(float)
    return out


def _one_hot(values: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """``[N, len(vocabulary)]`` float32 one-hot of ``values`` (sorted ``vocabulary``; unseen values all zero)."""
    codes = np.searchsorted(vocabulary, values).clip(max=len(vocabulary) - 1)
    seen = vocabulary[codes] == values
    out = np.zeros((len(values), len(vocabulary)), dtype=np.float32)
    out[np.flatnonzero(seen), codes[seen]] = 1.0
    return out


def features(train: Table, test: Table, tasks: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(train inputs, test inputs, the input names): z-scored continuous columns, one-hot columns, ASEX."""
    sources = {SOURCE[t] for t in tasks}
    continuous = [c for c in CONTINUOUS if c not in sources]
    dummies = [c for c in train if c not in sources and c not in continuous and c not in BINARY]
    blocks: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    names: list[str] = []
    if continuous:
        tr = np.stack([_numbers(train[c]) for c in continuous], 1)
        te = np.stack([_numbers(test[c]) for c in continuous], 1)
        mean = np.nanmean(tr, 0)
        std = np.nanstd(tr, 0)
        std = np.where(std > 0, std, 1.0)  # StandardScaler's rule for a constant column
        blocks[0].append(np.nan_to_num((tr - mean) / std).astype(np.float32))  # a missing number: the mean (0)
        blocks[1].append(np.nan_to_num((te - mean) / std).astype(np.float32))
        names += continuous
    for c in dummies:
        vocabulary = np.unique(train[c])
        blocks[0].append(_one_hot(train[c], vocabulary))
        blocks[1].append(_one_hot(test[c], vocabulary))
        names += [f"{c}={v}" for v in vocabulary]
    for c in BINARY:  # LabelEncoder fitted on train: the second value in sorted order is 1 (Female 0, Male 1)
        values = np.unique(train[c])
        one = values[1] if len(values) > 1 else None
        blocks[0].append((train[c] == one)[:, None].astype(np.float32))
        blocks[1].append((test[c] == one)[:, None].astype(np.float32))
        names.append(c)
    return np.concatenate(blocks[0], 1), np.concatenate(blocks[1], 1), names


def build(cfg: DataConfig) -> MultiTaskDataset:
    folder = _folder(cfg)
    train, test = (read_file(folder / name) for name in FILES)
    names = list(cfg.tasks or DEFAULT_TASKS)
    unknown = set(names) - set(CENSUS_TASKS)
    if unknown:
        raise ValueError(f"census has no task {sorted(unknown)}; choose from {', '.join(CENSUS_TASKS)}")
    x_train, x_test, inputs = features(train, test, names)
    log.info("census: %d inputs for tasks %s", len(inputs), names)
    y_train = [torch.from_numpy(task_label(t, train)) for t in names]
    y_test = [torch.from_numpy(task_label(t, test)) for t in names]
    train_idx, val_idx = train_test_split(np.arange(len(x_train)), test_size=0.2, random_state=cfg.seed)
    x = torch.from_numpy(x_train)

    def split(idx: np.ndarray) -> Split:
        index = torch.as_tensor(idx)
        return Split(x[index], [y[index] for y in y_train], scale=1.0, mean=0.0, std=1.0)

    return MultiTaskDataset(split(train_idx), split(val_idx),
                            Split(torch.from_numpy(x_test), y_test, scale=1.0, mean=0.0, std=1.0), tasks_of(cfg))


def prepare(ds: MultiTaskDataset, cfg: DataConfig) -> MultiTaskDataset:
    """Nothing to do: the inputs are cached standardized and one-hot."""
    return ds
