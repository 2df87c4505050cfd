"""Front metrics: hypervolume (pymoo), non-dominated count, Spearman
correlation between preferences and task scores, parameter overhead.

Points are ``[K, T]`` arrays of per-task objectives.  ``maximize=True`` for
accuracies (the papers' convention: reference point 0), ``False`` for losses.
"""

from __future__ import annotations

import numpy as np
from pymoo.indicators.hv import HV
from scipy.stats import spearmanr
from torch import nn


def hypervolume(points: np.ndarray, reference: float | np.ndarray, maximize: bool = True) -> float:
    """Hypervolume dominated by ``points`` w.r.t. ``reference``.

    >>> round(hypervolume(np.array([[0.9, 0.5], [0.5, 0.9]]), 0.0), 6)
    0.65
    """
    pts = np.atleast_2d(np.asarray(points, dtype=float))
    ref = np.broadcast_to(np.asarray(reference, dtype=float), (pts.shape[1],))
    if maximize:
        pts, ref = -pts, -ref
    inside = np.all(pts < ref, axis=1)
    if not inside.any():
        return 0.0
    return float(HV(ref_point=ref)(pts[inside]))


def nondominated_mask(points: np.ndarray, maximize: bool = True) -> np.ndarray:
    """Boolean mask of points no other point dominates (duplicates all kept)."""
    pts = np.asarray(points, dtype=float)
    if not maximize:
        pts = -pts
    ge = np.all(pts[None, :, :] >= pts[:, None, :], axis=2)  # ge[i, j]: j weakly better than i
    gt = np.any(pts[None, :, :] > pts[:, None, :], axis=2)
    dominated = np.any(ge & gt, axis=1)
    return ~dominated


def nondominated_count(points: np.ndarray, maximize: bool = True) -> int:
    """Number of distinct non-dominated points."""
    pts = np.asarray(points, dtype=float)
    return int(len(np.unique(pts[nondominated_mask(pts, maximize)], axis=0)))


def spearman(rays: np.ndarray, scores: np.ndarray) -> list[float]:
    """Per task t, Spearman's ρ between λ_t and task t's score along the rays.

    A well-ordered front has ρ → 1 for scores that grow with their weight
    (accuracy).  A task whose score does not vary gives ``nan``.
    """
    rays, scores = np.asarray(rays, dtype=float), np.asarray(scores, dtype=float)
    out = []
    for t in range(rays.shape[1]):
        if np.ptp(rays[:, t]) == 0 or np.ptp(scores[:, t]) == 0:
            out.append(float("nan"))
        else:
            out.append(float(spearmanr(rays[:, t], scores[:, t]).statistic))
    return out


def parameter_overhead(model: nn.Module, reference: nn.Module) -> tuple[int, float]:
    """Trainable parameters of ``model`` and Δp% over ``reference`` (the plain multi-task net)."""
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_ref = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    return n, 100.0 * (n - n_ref) / n_ref
