"""SARCOS: the inverse dynamics of a 7-joint robot arm, 7 torque regressions (PaLoRA §5.2, after Navon et al. 2021).

Files: ``sarcos_inv.mat`` (key ``sarcos_inv``, 44,484 × 28) and
``sarcos_inv_test.mat`` (key ``sarcos_inv_test``, 4,449 × 28), from the GPML
book's data page, in ``data.root/`` or ``data.root/sarcos/``
(``data.download: true`` fetches them).  Columns 0–20 are the inputs (7 joint
positions, 7 velocities, 7 accelerations), 21–27 the 7 torques.

As PaLoRA's ``src/datasets/sarcos.py``: validation = the first 4,448 rows of
the training file, training = the rest, test = the test file; each torque
divided by the 0.9 quantile of its training values (so the stored targets are
y / q₉₀ and predictions are presented in the file's units); inputs not
normalized.  Loss: MSE per task.  Front: the 7 MSEs on the scaled torques,
HV reference [1, 5, 1, 1, 10, 10, 1] (PaLoRA's ``_sarcos.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch

from pareto_ray.config import DataConfig
from pareto_ray.data.files import download_file, malformed_file, missing_file, require_root, scaled_count
from pareto_ray.splits import MultiTaskDataset, Split
from pareto_ray.tasks import Task

NAMES = ("sarcos",)
FILES = {"sarcos_inv.mat": "sarcos_inv", "sarcos_inv_test.mat": "sarcos_inv_test"}
URL = "http://www.gaussianprocess.org/gpml/data/"
INPUTS, TASKS = 21, 7
TRAIN_ROWS, VAL_ROWS = 44_484, 4_448
REFERENCE = (1.0, 5.0, 1.0, 1.0, 10.0, 10.0, 1.0)
ORIGIN = (f"SARCOS (Vijayakumar & Schaal 2000) is on the GPML data page, {URL} (sarcos_inv.mat, "
          f"sarcos_inv_test.mat): put both in data.root/ or data.root/sarcos/, or set data.download=true")


def _folder(cfg: DataConfig) -> Path:
    root = require_root(cfg, "sarcos_inv.mat and sarcos_inv_test.mat", ORIGIN)
    for folder in (root, root / "sarcos"):
        if (folder / "sarcos_inv.mat").is_file():
            return folder
    if cfg.download:
        for name in FILES:
            download_file(URL + name, root / "sarcos", name)
        return root / "sarcos"
    return root


def read_mat(path: Path) -> np.ndarray:
    key = FILES[path.name]
    expected = f"a MATLAB file whose variable {key!r} is an N × {INPUTS + TASKS} matrix"
    if not path.is_file():
        raise missing_file(path, expected, ORIGIN)
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, OSError, NotImplementedError) as exc:
        raise malformed_file(path, f"not a MATLAB file scipy can read ({exc})", expected, ORIGIN) from None
    if key not in mat:
        names = [k for k in mat if not k.startswith("__")]
        raise malformed_file(path, f"no variable {key!r} (it has {', '.join(names) or 'none'})", expected, ORIGIN)
    a = np.asarray(mat[key])
    if a.ndim != 2 or a.shape[1] != INPUTS + TASKS or not np.issubdtype(a.dtype, np.number):
        raise malformed_file(path, f"{key!r} is {a.dtype} {list(a.shape)}", expected, ORIGIN)
    return a.astype(np.float32)


def build(cfg: DataConfig) -> MultiTaskDataset:
    folder = _folder(cfg)
    train_file = read_mat(folder / "sarcos_inv.mat")
    test_file = read_mat(folder / "sarcos_inv_test.mat")
    n_val = scaled_count(len(train_file), TRAIN_ROWS, VAL_ROWS)
    val, train = train_file[:n_val], train_file[n_val:]
    quantile = np.quantile(train[:, INPUTS:], 0.9, axis=0)
    if np.any(quantile <= 0):
        raise malformed_file(folder / "sarcos_inv.mat", f"the 0.9 quantile of torques {np.flatnonzero(quantile <= 0) + 1}"
                             " is not positive (they are divided by it)", "7 torque columns with positive 0.9 quantiles",
                             ORIGIN)
    tasks = [Task(f"torque_{j + 1}", "regression", loss="mse", reference=REFERENCE[j], target_std=float(quantile[j]))
             for j in range(TASKS)]

    def split(rows: np.ndarray) -> Split:
        y = rows[:, INPUTS:] / quantile
        return Split(torch.from_numpy(rows[:, :INPUTS].copy()),
                     [torch.from_numpy(y[:, j].astype(np.float32)) for j in range(TASKS)], scale=1.0, mean=0.0, std=1.0)

    return MultiTaskDataset(split(train), split(val), split(test_file), tasks)


def prepare(ds: MultiTaskDataset, cfg: DataConfig) -> MultiTaskDataset:
    """Nothing to do: the torques are cached scaled."""
    return ds
