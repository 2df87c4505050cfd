import itertools

import numpy as np
import pytest

from pareto_ray.solvers.epo import adjustments, epo_lp, epo_weights, non_uniformity


def _simplex(m: int, steps: int) -> np.ndarray:
    pts = [c for c in itertools.product(range(steps + 1), repeat=m - 1) if sum(c) <= steps]
    return np.array([[*c, steps - sum(c)] for c in pts], dtype=float) / steps


def _brute_force(losses, gram, ray, eps=1e-4, steps=400):
    """EPO's LP written out from the paper's description, maximized over a fine simplex grid."""
    rl, mu, a = adjustments(losses, ray)
    Ca = gram @ a
    beta = _simplex(len(losses), steps)
    cb = beta @ gram.T  # (Cβ) per grid point
    if mu > eps:  # balance: ascend along Ca, no loss with Ca_j <= 0 may get worse, the worst r⊙l must not rise
        feasible = np.ones(len(beta), bool)
        for j in range(len(losses)):
            if rl[j] == rl.max():
                feasible &= cb[:, j] >= -1e-9
            elif Ca[j] <= 0:
                feasible &= cb[:, j] >= Ca[j] - 1e-9
        objective = beta @ Ca
    else:  # descent on all losses, staying on the ray
        feasible = np.all(cb >= -1e-9, axis=1) & (beta @ Ca >= min(Ca.max(), 0) - 1e-9)
        objective = cb.sum(1)
    return objective[feasible].max() if feasible.any() else None, Ca, objective


@pytest.mark.parametrize("seed", range(8))
def test_lp_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    m = 2 if seed % 2 else 3
    g = rng.normal(size=(m, 6))
    gram = g @ g.T
    losses = rng.uniform(0.2, 2.0, size=m)
    ray = rng.dirichlet(np.ones(m))
    if seed == 0:  # a point already on the ray: descent mode
        losses = 1.0 / ray
    beta, mode = epo_lp(losses, gram, ray)
    best, Ca, _ = _brute_force(losses, gram, ray)
    assert mode == ("dom" if seed == 0 else "bal")
    assert best is not None and beta is not None
    assert beta.sum() == pytest.approx(1.0, abs=1e-8) and (beta >= 0).all()
    value = beta @ Ca if mode == "bal" else (gram @ beta).sum()
    assert value >= best - 1e-6 * max(1.0, abs(best))  # the LP is at least as good as any grid point
    assert value <= best + 0.05 * max(1.0, abs(best))   # and not better than the grid allows (same problem)


def test_descent_reaches_the_exact_pareto_point_on_the_ray():
    # l1 = |x - a|², l2 = |x - b|²: the Pareto set is the segment [a, b]; EPO must stop where r1 l1 = r2 l2.
    a, b = np.array([1.0, 0.0]), np.array([-1.0, 0.5])
    ray = np.array([0.3, 0.7])
    x = np.array([2.0, 2.0])
    for _ in range(800):
        losses = np.array([np.sum((x - a) ** 2), np.sum((x - b) ** 2)])
        grads = np.stack([2 * (x - a), 2 * (x - b)])
        w = epo_weights(losses, grads @ grads.T, ray)
        x = x - 0.02 * (w @ grads)
    losses = np.array([np.sum((x - a) ** 2), np.sum((x - b) ** 2)])
    rl = ray * losses
    assert non_uniformity(rl) < 1e-3
    t = np.dot(x - b, a - b) / np.dot(a - b, a - b)
    assert np.linalg.norm(b + t * (a - b) - x) < 1e-2 and 0 < t < 1  # on the Pareto set


def test_weights_sum_to_the_number_of_tasks_and_fall_back_to_the_ray():
    ray = np.array([0.25, 0.75])
    w = epo_weights(np.array([1.0, 1.0]), np.eye(2), ray)
    assert w.sum() == pytest.approx(2.0)
    # on the ray (descent mode) with C β ≥ 0 unsatisfiable on the simplex: the LP fails, the weights are m·ray
    gram = np.array([[1.0, -2.0], [-2.0, 1.0]])
    beta, mode = epo_lp(1.0 / ray, gram, ray)
    assert beta is None and mode == "dom"
    assert np.allclose(epo_weights(1.0 / ray, gram, ray), 2 * ray)


def test_negative_losses_are_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        epo_lp(np.array([-1.0, 2.0]), np.eye(2), np.array([0.5, 0.5]))
