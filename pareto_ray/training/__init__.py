"""Trainers: Ray Train for one preference-conditioned model (``continuous``), Pareto MTL's K subproblems
as concurrent Ray Train runs (``discrete``), Ray Tune sweeps (``sweep``), checkpoint evaluation and
Pareto expansion.  ``fit`` makes the continuous/discrete choice once, here.
"""

from __future__ import annotations

from pareto_ray.config import Config
from pareto_ray.progress import ProgressDisplay
from pareto_ray.training.continuous import FitResult, fit_continuous
from pareto_ray.training.discrete import fit_discrete, is_discrete


def fit(cfg: Config, progress: ProgressDisplay | None = None, verbose: bool = False) -> FitResult:
    """Train ``cfg``: a whole discrete front (Pareto MTL without a fixed subproblem) as K runs, else one run.

    ``progress`` shows each epoch on the driver; ``verbose`` brings back Ray Train's INFO lines.
    """
    if is_discrete(cfg):
        return fit_discrete(cfg, progress=progress, verbose=verbose)
    return fit_continuous(cfg, progress=progress, verbose=verbose)


__all__ = ["FitResult", "ProgressDisplay", "fit"]
