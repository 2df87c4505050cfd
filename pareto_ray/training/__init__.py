"""Trainers: Ray Train for one preference-conditioned model (``continuous``), Pareto MTL's K subproblems
as concurrent Ray Train runs (``discrete``), Ray Tune sweeps (``sweep``), checkpoint evaluation and
Pareto expansion.  ``fit`` makes the continuous/discrete choice once, here.
"""

from __future__ import annotations

from pareto_ray.config import Config
from pareto_ray.training.continuous import FitResult, fit_continuous
from pareto_ray.training.discrete import fit_discrete, is_discrete


def fit(cfg: Config) -> FitResult:
    """Train ``cfg``: a whole discrete front (Pareto MTL without a fixed subproblem) as K runs, else one run."""
    return fit_discrete(cfg) if is_discrete(cfg) else fit_continuous(cfg)


__all__ = ["FitResult", "fit"]
