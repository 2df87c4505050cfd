"""The min-norm solver against a brute-force QP, and its edge cases."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from pareto_ray.solvers.minnorm import min_norm, min_norm_weights


def _brute_force(G: np.ndarray, rng: np.random.Generator, starts: int = 6) -> float:
    """min wᵀGw on the simplex by SLSQP from several random starts."""
    n = len(G)
    best = np.inf
    for _ in range(starts):
        res = minimize(lambda w: w @ G @ w, rng.dirichlet(np.ones(n)), jac=lambda w: 2 * G @ w,
                       bounds=[(0, 1)] * n, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                       method="SLSQP", options={"ftol": 1e-15, "maxiter": 2000})
        w = np.clip(res.x, 0, None)
        best = min(best, float((w / w.sum()) @ G @ (w / w.sum())))
    return best


def test_matches_brute_force_qp_on_random_gram_matrices():
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(2, 11))
        p = int(rng.integers(1, 16))  # p < n: rank-deficient Gram matrices, often with 0 in the hull
        vectors = rng.normal(size=(n, p)) * rng.uniform(0.01, 10, size=(n, 1))  # badly scaled, as gradients are
        G = vectors @ vectors.T
        res = min_norm(torch.tensor(G))
        w = res.weights.numpy()
        assert w.min() >= 0 and w.sum() == pytest.approx(1, abs=1e-12)
        assert res.norm_sq == pytest.approx(float(w @ G @ w), rel=1e-9, abs=1e-12)
        assert res.gap <= 1e-10 and res.iterations <= 20, (trial, res)
        scale = G.diagonal().max()
        assert res.norm_sq <= _brute_force(G, rng) + 1e-9 * scale, trial
        if p >= n:  # positive definite: the minimizer is unique
            ref = minimize(lambda x, G=G: x @ G @ x, np.full(n, 1 / n), jac=lambda x, G=G: 2 * G @ x,
                           bounds=[(0, 1)] * n, constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
                           method="SLSQP", options={"ftol": 1e-15, "maxiter": 2000}).x
            assert np.allclose(w, ref, atol=2e-3), (trial, w, ref)


def test_two_vectors_are_solved_analytically():
    orth = min_norm(torch.eye(2))
    assert torch.allclose(orth.weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert orth.norm_sq == pytest.approx(0.5) and orth.iterations == 0
    # v2 = 2·v1: the shorter vector alone
    same_direction = min_norm(torch.tensor([[1.0, 2.0], [2.0, 4.0]]))
    assert same_direction.weights.tolist() == [1.0, 0.0] and same_direction.norm_sq == pytest.approx(1.0)
    # opposite vectors: the origin is in the hull
    opposite = min_norm_weights(torch.tensor([[2.0, 0.0], [-1.0, 0.0]]))
    assert torch.allclose(opposite, torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))


def test_the_iteration_cap_and_tolerance_are_real():
    rng = np.random.default_rng(3)
    vectors = torch.tensor(rng.normal(size=(10, 12)) * rng.uniform(0.05, 5, size=(10, 1)))
    full = min_norm(vectors @ vectors.T)
    assert full.iterations >= 2 and full.gap <= 1e-10
    capped = min_norm(vectors @ vectors.T, max_iter=1)
    assert capped.iterations == 1 and capped.gap > 1e-10 and capped.norm_sq > full.norm_sq
    start = min_norm(vectors @ vectors.T, max_iter=0)  # the best pair only
    assert start.iterations == 0 and (start.weights > 0).sum() <= 2 and start.norm_sq >= capped.norm_sq
    loose = min_norm(vectors @ vectors.T, tol=0.5)
    assert loose.iterations < full.iterations


def test_degenerate_inputs():
    assert min_norm(torch.tensor([[4.0]])).weights.tolist() == [1.0]
    zeros = min_norm(torch.zeros(3, 3))
    assert torch.allclose(zeros.weights, torch.full((3,), 1 / 3, dtype=torch.float64)) and zeros.norm_sq == 0
    # the same vector twice
    dup = min_norm_weights(torch.tensor([[1.0, 1.0], [1.0, 1.0], [3.0, 0.0]]))
    assert dup.sum() == pytest.approx(1) and dup.min() >= 0
    for bad in (torch.tensor([[float("nan")]]), torch.ones(2, 3), torch.empty(0, 0)):
        with pytest.raises(ValueError):
            min_norm(bad)
    with pytest.raises(ValueError, match="max_iter"):
        min_norm(torch.eye(2), max_iter=-1)
