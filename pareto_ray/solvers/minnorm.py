"""The min-norm element of the convex hull of vectors v_1..v_n (MGDA's subproblem).

    min_w ‖Σ_i w_i v_i‖²   s.t.  w ≥ 0, Σ_i w_i = 1

is solved on the Gram matrix G = [v_i·v_j] (n × n, never the P-dimensional
vectors).  Start: Sener & Koltun's analytic solution on the best pair of
vectors.  Then fully-corrective Frank–Wolfe steps (Wolfe's min-norm-point
method): add the vertex the linearization points to, re-minimize exactly over
the hull of the active vertices (an affine minimizer from a small KKT system,
moving back towards the hull when it leaves it), and stop when the
Frank–Wolfe duality gap — an upper bound on the remaining suboptimality —
is at most ``tol`` or after ``max_iter`` steps.  Plain projected gradient
or vanilla Frank–Wolfe stall for hundreds of steps on the ill-conditioned
Gram matrices gradients give; this is exact after a few.  G is scaled by its
largest diagonal entry first, so ``tol`` is relative to the largest ‖v_i‖².
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class MinNormResult(NamedTuple):
    weights: torch.Tensor  # [n] on the simplex (float64)
    norm_sq: float  # ‖Σ w_i v_i‖²
    iterations: int  # projected-gradient steps taken (0: the pair solution was optimal)
    gap: float  # Frank–Wolfe gap at return, relative to max ‖v_i‖² (≤ tol when converged)


def _best_pair(G: torch.Tensor) -> torch.Tensor:
    """Weights of the min-norm point over all segments [v_i, v_j] (the 2-vector problem, solved exactly)."""
    n = G.shape[0]
    i, j = torch.triu_indices(n, n, offset=1)
    a, b, c = G[i, i], G[i, j], G[j, j]
    denom = a + c - 2 * b
    # γ minimizes ‖γ v_i + (1 − γ) v_j‖²; a zero denominator means v_i = v_j (any γ: take 1)
    gamma = torch.where(denom > 0, (c - b) / denom.clamp_min(torch.finfo(G.dtype).tiny), torch.ones_like(a))
    gamma = gamma.clamp(0, 1)
    cost = gamma ** 2 * a + 2 * gamma * (1 - gamma) * b + (1 - gamma) ** 2 * c
    best = int(torch.argmin(cost))
    w = torch.zeros(n, dtype=G.dtype)
    w[i[best]] = gamma[best]
    w[j[best]] += 1 - gamma[best]
    return w


def _affine_minimizer(G: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Weights (summing to 1, any sign) of the min-norm point of the affine hull of the support vectors."""
    k = len(support)
    kkt = torch.zeros(k + 1, k + 1, dtype=G.dtype)
    kkt[:k, :k] = G[support][:, support]
    kkt[:k, k] = 1
    kkt[k, :k] = 1
    rhs = torch.zeros(k + 1, dtype=G.dtype)
    rhs[k] = 1
    sol = torch.linalg.lstsq(kkt, rhs.unsqueeze(1), driver="gelsd").solution.squeeze(1)[:k]
    return sol / sol.sum()


def min_norm(gram: torch.Tensor, max_iter: int = 100, tol: float = 1e-10) -> MinNormResult:
    """Min-norm weights for the vectors whose Gram matrix is ``gram [n, n]``."""
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(f"gram must be a non-empty square matrix, got shape {tuple(gram.shape)}")
    if not torch.isfinite(gram).all():
        raise ValueError("gram has NaN or Inf entries")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    G = gram.detach().to(torch.float64, copy=True).cpu()
    G = (G + G.T) / 2
    n = G.shape[0]
    scale = float(G.diagonal().max())
    if n == 1 or scale <= 0:  # one vector, or all vectors zero: every point of the hull is the min-norm one
        w = torch.full((n,), 1.0 / n, dtype=torch.float64)
        return MinNormResult(w, max(float(w @ G @ w), 0.0), 0, 0.0)
    G /= scale
    w = _best_pair(G)
    iterations = 0
    while True:
        grad = G @ w  # v_j · x for the current point x = Σ w_i v_i
        gap = float(w @ grad - grad.min())
        if gap <= tol or iterations >= max_iter:
            break
        support = torch.nonzero(w > 0).flatten()
        vertex = int(torch.argmin(grad))
        if bool((support == vertex).any()):  # the best vertex is already active: converged up to rounding
            break
        support = torch.cat([support, torch.tensor([vertex])])
        iterations += 1
        while iterations <= max_iter:  # minor cycle: exact minimizer over the hull of the support
            target = _affine_minimizer(G, support)
            current = w[support]
            if bool((target > 0).all()):
                w = torch.zeros_like(w)
                w[support] = target
                break
            # move towards the affine minimizer until the first weight hits 0, then drop it
            leaving = target <= 0
            theta = float((current[leaving] / (current[leaving] - target[leaving])).min())
            moved = current + theta * (target - current)
            keep = moved > 1e-15
            w = torch.zeros_like(w)
            w[support[keep]] = moved[keep] / moved[keep].sum()
            support = support[keep]
            iterations += 1
    return MinNormResult(w, max(float(w @ G @ w) * scale, 0.0), iterations, gap)


def min_norm_weights(vectors: torch.Tensor, max_iter: int = 100, tol: float = 1e-10) -> torch.Tensor:
    """Min-norm weights ``[n]`` for the rows of ``vectors [n, P]``."""
    v = vectors.detach().to(torch.float64).flatten(1)
    return min_norm(v @ v.T, max_iter, tol).weights
