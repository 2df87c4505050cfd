"""Preference vectors on the simplex: evaluation grids, Dirichlet draws and
PaLoRA's deterministic annealed schedule.

A preference (ray) is a vector λ ∈ Δ_T = {λ ≥ 0, Σ λ_t = 1}; a batch of rays is
a float tensor of shape ``[M, T]``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from pymoo.util.ref_dirs import get_reference_directions

#: Grid sizes used for evaluation: 11 rays for 2 tasks, 66 for 3, 100 beyond.
GRID_PARTITIONS = {2: 10, 3: 10}
LARGE_GRID_POINTS = 100


def simplex_grid(num_tasks: int, num_points: int | None = None, seed: int = 1) -> torch.Tensor:
    """Evenly spread rays on the simplex (see ``_simplex_grid``); computed once per arguments — pymoo's
    Riesz-energy directions take seconds — and returned as a fresh copy."""
    return _simplex_grid(num_tasks, num_points, seed).clone()


@functools.lru_cache(maxsize=64)
def _simplex_grid(num_tasks: int, num_points: int | None = None, seed: int = 1) -> torch.Tensor:
    """Evenly spread rays on the simplex from pymoo's reference directions.

    Without ``num_points``: 11 rays for 2 tasks and 66 for 3 (Das-Dennis grid
    with 10 partitions), and a fixed, seeded set of 100 rays for more tasks
    that always contains the T one-hot vectors.  With ``num_points`` an exact
    Das-Dennis grid is used when one has that many points, else pymoo's Riesz
    s-energy directions (seeded, deterministic), or — fewer points than tasks,
    e.g. PaLoRA's M = 5 rays for CelebA's 40 tasks — seeded Dirichlet(1) draws.
    """
    if num_tasks < 2:
        raise ValueError(f"num_tasks must be >= 2, got {num_tasks}")
    if num_points is None:
        if num_tasks in GRID_PARTITIONS:
            dirs = get_reference_directions("uniform", num_tasks, n_partitions=GRID_PARTITIONS[num_tasks])
        else:
            dirs = _seeded_large_grid(num_tasks, LARGE_GRID_POINTS, seed)
        return _sorted(torch.as_tensor(dirs, dtype=torch.float32))
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    if num_points == 1:
        return torch.full((1, num_tasks), 1.0 / num_tasks)
    if num_tasks == 2:
        t = torch.linspace(0.0, 1.0, num_points)
        return torch.stack([t, 1 - t], dim=1)
    partitions = _das_dennis_partitions(num_tasks, num_points)
    if partitions is not None:
        dirs = get_reference_directions("uniform", num_tasks, n_partitions=partitions)
    elif num_points < num_tasks:  # fewer rays than tasks: pymoo's energy method fails there (0.6.2); seeded draws
        dirs = np.random.default_rng(seed).dirichlet(np.ones(num_tasks), size=num_points)
    else:
        dirs = get_reference_directions("energy", num_tasks, num_points, seed=seed)
    return _sorted(torch.as_tensor(dirs, dtype=torch.float32))


def _das_dennis_partitions(num_tasks: int, num_points: int) -> int | None:
    for p in range(1, 200):
        n = math.comb(p + num_tasks - 1, num_tasks - 1)
        if n == num_points:
            return p
        if n > num_points:
            return None
    return None


def _seeded_large_grid(num_tasks: int, num_points: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rest = rng.dirichlet(np.ones(num_tasks), size=max(num_points - num_tasks, 0))
    return np.concatenate([np.eye(num_tasks), rest], axis=0)


def _sorted(rays: torch.Tensor) -> torch.Tensor:
    """Order rays lexicographically by descending λ_1, λ_2, … (stable plots)."""
    keys = rays.numpy()
    order = np.lexsort(tuple(-keys[:, t] for t in reversed(range(keys.shape[1]))))
    return rays[torch.as_tensor(order)]


def dirichlet(num_rays: int, num_tasks: int, concentration: float = 1.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """``num_rays`` draws from Dirichlet(p·1) as a ``[num_rays, num_tasks]`` tensor."""
    if concentration <= 0:
        raise ValueError(f"Dirichlet concentration must be > 0, got {concentration}")
    # Gamma(p, 1) normalised is Dirichlet(p); torch.distributions takes no generator.
    g = torch._standard_gamma(torch.full((num_rays, num_tasks), float(concentration)), generator=generator)
    return g / g.sum(dim=1, keepdim=True)


class RayGenerator:
    """Dirichlet rays from a generator seeded with the process seed (``torch.initial_seed()``),
    so every DDP worker — seeded alike — draws the same rays, whatever else consumes randomness."""

    def __init__(self) -> None:
        self._gen: torch.Generator | None = None

    @property
    def generator(self) -> torch.Generator:
        if self._gen is None:
            self._gen = torch.Generator().manual_seed(torch.initial_seed())
        return self._gen

    def dirichlet(self, num_rays: int, num_tasks: int, concentration: float) -> torch.Tensor:
        return dirichlet(num_rays, num_tasks, concentration, self.generator)


def base_rays(num_rays: int, num_tasks: int, epsilon: float = 0.01) -> torch.Tensor:
    """PaLoRA's base rays λ̃: M evenly spaced rays kept ε away from the faces.

    For 2 tasks this is ``linspace(ε, 1-ε, M)`` (as ``[λ, 1-λ]``); for more
    tasks an even simplex grid g, shrunk as ε + (1 - Tε)·g, which reduces to the
    same formula for T = 2.
    """
    if not 0 <= epsilon * num_tasks < 1:
        raise ValueError(f"epsilon must satisfy 0 <= epsilon*T < 1, got epsilon={epsilon}, T={num_tasks}")
    grid = simplex_grid(num_tasks, num_rays)
    return epsilon + (1 - num_tasks * epsilon) * grid


def anneal(rays: torch.Tensor, progress: float, temperature: float = 5.0) -> torch.Tensor:
    """PaLoRA eq. 3 with exponent e = Q·τ: λ_m(τ) = λ̃_m^e / Σ_t λ̃_{m,t}^e.

    The paper prints e = τ/Q, but its ablation ("higher temperatures lead to
    larger fronts") and the official code (exponent ``mul * τ``, ``mul = 5``)
    use e = Q·τ, which is what this function does.  τ = 0 puts every ray at
    the centre of the simplex; τ = 1 with a large Q pushes rays to the vertices.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"training progress τ must be in [0, 1], got {progress}")
    powered = rays.double().pow(temperature * progress)
    return (powered / powered.sum(dim=1, keepdim=True)).to(rays.dtype)


def annealed_schedule(num_rays: int, num_tasks: int, progress: float, temperature: float = 5.0,
                      epsilon: float = 0.01) -> torch.Tensor:
    """The M rays PaLoRA trains on at progress τ (deterministic)."""
    return anneal(base_rays(num_rays, num_tasks, epsilon), progress, temperature)


def annealed_dirichlet(num_rays: int, num_tasks: int, progress: float, concentration: float = 1.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The official PaLoRA code's ``AnnealingDirichletSampler`` (its sampler for CelebA and SARCOS): M draws from
    Dirichlet(p·(1 − τ) + 0.001) — spread over the simplex early, near its vertices late.

    Drawn in log space, Gamma(a) = Gamma(a + 1) · U^(1/a), then a softmax: at a concentration near 0.001 the
    Gamma samples themselves underflow to 0 (or tie at the smallest float), their logarithms do not.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"training progress τ must be in [0, 1], got {progress}")
    alpha = concentration * (1.0 - progress) + 0.001
    shape = (num_rays, num_tasks)
    g = torch._standard_gamma(torch.full(shape, alpha + 1.0, dtype=torch.float64), generator=generator)
    u = torch.rand(shape, dtype=torch.float64, generator=generator)
    return torch.softmax(g.log() + u.log() / alpha, dim=1).float()


def validate_preference(pref: torch.Tensor, num_tasks: int, allow_pseudo: bool = False,
                        atol: float = 1e-3) -> torch.Tensor:
    """Check a ``[T]`` or ``[N, T]`` preference and return it as float32.

    Raises ``ValueError`` naming the problem: wrong length, non-finite or
    negative entries, or rows that do not sum to 1.  ``allow_pseudo`` admits
    pseudopreferences (entries outside [0, 1], still summing to 1).
    """
    pref = torch.as_tensor(pref, dtype=torch.float32)
    if pref.dim() not in (1, 2) or pref.shape[-1] != num_tasks:
        raise ValueError(f"preference must have {num_tasks} entries per ray, got shape {tuple(pref.shape)}")
    if not torch.isfinite(pref).all():
        raise ValueError("preference entries must be finite numbers (no NaN/Inf)")
    if not allow_pseudo and (pref < 0).any():
        raise ValueError("preference entries must be >= 0 (pass allow_pseudo=True for pseudopreferences)")
    sums = pref.sum(dim=-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=atol):
        raise ValueError(f"preference entries must sum to 1 (±{atol}), got sums {sums.tolist()}")
    return pref
