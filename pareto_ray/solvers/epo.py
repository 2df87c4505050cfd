"""Exact Pareto Optimal search (Mahapatra & Rajan, 2020) as a linear program.

Given the task losses ``l``, the Gram matrix ``C = G Gᵀ`` of the task
gradients and a preference ray ``r``, EPO returns task weights β on the
simplex.  The update direction ``d = Gᵀβ`` either *balances* the losses
towards the ray (the point where ``r ⊙ l`` is uniform, so a larger ``r_t``
means a smaller ``l_t``) or, once there, *descends* on all tasks while
staying on the ray.  Both modes are LPs over the simplex, solved here with
SciPy's HiGHS (``scipy.optimize.linprog``) — the reference code used cvxpy
with GLPK.  As in the Pareto HyperNetwork code, the weights are scaled by the
number of tasks and fall back to the ray itself when the LP fails.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

#: non-uniformity μ(r ⊙ l) below which EPO switches from balancing to descent.
DEFAULT_EPS = 1e-4


def non_uniformity(rl: np.ndarray) -> float:
    """μ = KL(l̂ ‖ 1/m) of the normalized weighted losses l̂ = r⊙l / Σ r⊙l."""
    if (rl < 0).any():
        raise ValueError(f"EPO needs non-negative weighted losses r⊙l, got {rl}")
    m = len(rl)
    l_hat = rl / rl.sum()
    l_hat = l_hat[l_hat > np.finfo(float).eps]
    return float(np.sum(l_hat * np.log(l_hat * m)))


def adjustments(losses: np.ndarray, ray: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(r⊙l, μ, a) with the balancing direction a = r ⊙ (log(m·l̂) − μ)."""
    rl = ray * losses
    l_hat = rl / rl.sum()
    mu = non_uniformity(rl)
    with np.errstate(divide="ignore"):
        a = ray * (np.log(np.maximum(l_hat, np.finfo(float).tiny) * len(rl)) - mu)
    return rl, mu, a


def epo_lp(losses: np.ndarray, gram: np.ndarray, ray: np.ndarray, eps: float = DEFAULT_EPS,
           relax: bool = False) -> tuple[np.ndarray | None, str]:
    """Solve EPO's LP; returns (β on the simplex or None if infeasible, mode ``"bal"``/``"dom"``).

    Balance mode (μ > eps): maximize (Ca)ᵀβ s.t. (Cβ)_j ≥ (Ca)_j for tasks that
    must not get worse (Ca_j ≤ 0), (Cβ)_j ≥ 0 for the most-weighted loss.
    Descent mode: maximize Σ Cβ s.t. Cβ ≥ 0 and (Ca)ᵀβ ≥ min(max Ca, 0)
    (the last constraint dropped when ``relax``).
    """
    losses = np.asarray(losses, dtype=float)
    ray = np.asarray(ray, dtype=float)
    C = np.asarray(gram, dtype=float)
    m = len(losses)
    if not np.sum(ray * losses) > 0:  # every weighted loss is 0: nothing to balance or descend on
        return None, "dom"
    rl, mu, a = adjustments(losses, ray)
    Ca = C @ a
    a_eq, b_eq, bounds = np.ones((1, m)), np.ones(1), [(0, None)] * m
    if mu > eps:
        J = Ca > 0
        if J.any():
            rhs = Ca.copy()
            rhs[J] = -np.inf
            rhs[rl == rl.max()] = 0.0
        else:
            rhs = np.zeros(m)
        rows = np.isfinite(rhs)
        # C β ≥ rhs  ⇔  −C β ≤ −rhs
        res = linprog(-Ca, A_ub=-C[rows], b_ub=-rhs[rows], A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        mode = "bal"
    else:
        a_ub, b_ub = -C, np.zeros(m)
        if not relax:
            a_ub = np.vstack([a_ub, -Ca[None, :]])
            b_ub = np.append(b_ub, -min(Ca.max(), 0.0))
        res = linprog(-C.sum(axis=0), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        mode = "dom"
    if res.status != 0:
        return None, mode
    return np.clip(res.x, 0.0, None), mode


def epo_weights(losses: np.ndarray, gram: np.ndarray, ray: np.ndarray, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Task weights ``m·β`` for the weighted loss Σ_t w_t L_t (β = r/Σr when the LP fails or r⊙l = 0)."""
    ray = np.asarray(ray, dtype=float)
    beta, _ = epo_lp(losses, gram, ray, eps)
    if beta is None:
        beta = ray / ray.sum()
    return len(ray) * beta
