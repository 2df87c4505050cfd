"""Front metrics: hypervolume (pymoo), non-dominated count, Spearman
correlation between preferences and task scores, parameter overhead.

Points are ``[K, T]`` arrays of per-task objectives.  ``maximize=True`` for
accuracies (the papers' convention: reference point 0), ``False`` for losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pymoo.indicators.hv import HV
from scipy.stats import spearmanr
from torch import nn

#: Above this many objectives the hypervolume is estimated (exact HV costs grow exponentially: 10 objectives and
#: 100 points take about a minute in pymoo, 7 a few milliseconds).
EXACT_HV_MAX_DIMS = 7
HV_SAMPLES = 200_000


def _oriented(points: np.ndarray, reference: float | np.ndarray,
              maximize: bool | Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Points and reference as a minimization problem (maximized objectives negated)."""
    pts = np.atleast_2d(np.asarray(points, dtype=float))
    ref = np.broadcast_to(np.asarray(reference, dtype=float), (pts.shape[1],)).copy()
    sign = np.where(np.broadcast_to(np.asarray(maximize, dtype=bool), (pts.shape[1],)), -1.0, 1.0)
    return pts * sign, ref * sign


def hypervolume(points: np.ndarray, reference: float | np.ndarray, maximize: bool | Sequence[bool] = True) -> float:
    """Hypervolume dominated by ``points`` w.r.t. ``reference``; ``maximize`` per objective or for all.

    Exact (pymoo) up to ``EXACT_HV_MAX_DIMS`` objectives, a seeded Monte Carlo estimate beyond
    (``hypervolume_estimate``: relative standard error below 0.5 % for fronts that fill at least a
    tenth of their bounding box).

    >>> round(hypervolume(np.array([[0.9, 0.5], [0.5, 0.9]]), 0.0), 6)
    0.65
    """
    pts, ref = _oriented(points, reference, maximize)
    inside = np.all(pts < ref, axis=1)
    if not inside.any():
        return 0.0
    if pts.shape[1] > EXACT_HV_MAX_DIMS:
        return hypervolume_estimate(pts[inside], ref)[0]
    return float(HV(ref_point=ref)(pts[inside]))


def hypervolume_estimate(points: np.ndarray, reference: np.ndarray, samples: int = HV_SAMPLES,
                         seed: int = 0) -> tuple[float, float]:
    """(HV, standard error) of minimization ``points`` (all better than ``reference``) by Monte Carlo.

    Samples are drawn uniformly in the box between the points' ideal point and the reference (the only
    region any point dominates), so the estimate's relative error shrinks with how much of that box the
    front fills, not with the box's share of the whole objective space.
    """
    pts = np.asarray(points, dtype=float)
    low, high = pts.min(axis=0), np.asarray(reference, dtype=float)
    box = float(np.prod(high - low))
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = 10_000
    for start in range(0, samples, chunk):
        u = low + rng.random((min(chunk, samples - start), pts.shape[1])) * (high - low)
        hits += int(np.any(np.all(pts[None, :, :] <= u[:, None, :], axis=2), axis=1).sum())
    frac = hits / samples
    return box * frac, box * math.sqrt(frac * (1 - frac) / samples)


def nondominated_mask(points: np.ndarray, maximize: bool | Sequence[bool] = True) -> np.ndarray:
    """Boolean mask of points no other point dominates (duplicates all kept)."""
    pts, _ = _oriented(points, 0.0, maximize)
    le = np.all(pts[None, :, :] <= pts[:, None, :], axis=2)  # le[i, j]: j weakly better than i
    lt = np.any(pts[None, :, :] < pts[:, None, :], axis=2)
    dominated = np.any(le & lt, axis=1)
    return ~dominated


def nondominated_count(points: np.ndarray, maximize: bool | Sequence[bool] = True) -> int:
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
