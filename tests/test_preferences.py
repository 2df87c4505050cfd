import pytest
import torch

from pareto_ray.preferences import (
    anneal,
    annealed_schedule,
    base_rays,
    dirichlet,
    simplex_grid,
    validate_preference,
)


@pytest.mark.parametrize("tasks,count", [(2, 11), (3, 66), (4, 100), (7, 100)])
def test_grid_sizes_and_simplex(tasks, count):
    grid = simplex_grid(tasks)
    assert grid.shape == (count, tasks)
    assert torch.allclose(grid.sum(1), torch.ones(count), atol=1e-6)
    assert (grid >= 0).all()


def test_large_grid_contains_one_hot_and_is_fixed():
    grid = simplex_grid(5)
    for t in range(5):
        assert any(torch.allclose(row, torch.eye(5)[t]) for row in grid)
    assert torch.equal(grid, simplex_grid(5))


def test_two_task_grid_is_evenly_spaced():
    grid = simplex_grid(2)
    assert torch.allclose(grid[:, 0], torch.linspace(1, 0, 11), atol=1e-6)


def test_base_rays_two_tasks_is_linspace_eps():
    rays = base_rays(5, 2, epsilon=0.01)
    assert torch.allclose(torch.sort(rays[:, 0]).values, torch.linspace(0.01, 0.99, 5), atol=1e-6)


@pytest.mark.parametrize("tasks,m", [(2, 5), (3, 6), (3, 10)])
def test_schedule_rows_sum_to_one(tasks, m):
    for tau in (0.0, 0.3, 1.0):
        rays = annealed_schedule(m, tasks, tau, temperature=5.0)
        assert rays.shape == (m, tasks)
        assert torch.allclose(rays.sum(1), torch.ones(m), atol=1e-6)


def test_schedule_starts_at_centre():
    rays = annealed_schedule(7, 3, 0.0)
    assert torch.allclose(rays, torch.full((7, 3), 1 / 3), atol=1e-6)


def test_schedule_end_with_large_q_approaches_vertices():
    rays = annealed_schedule(5, 2, 1.0, temperature=50.0)
    # the outer rays (0.01 vs 0.99) become one-hot; the centre ray stays at the centre
    assert rays[:, 0].max() > 0.999 and rays[:, 0].min() < 1e-3
    assert torch.allclose(rays[2], torch.tensor([0.5, 0.5]))


def test_exponent_is_q_times_tau():
    base = base_rays(3, 2)
    # e = Q·τ: (Q=2, τ=0.5) equals (Q=1, τ=1); with e = τ/Q they would differ.
    assert torch.allclose(anneal(base, 0.5, 2.0), anneal(base, 1.0, 1.0))
    # a larger Q spreads rays further from the centre (the paper's "larger fronts")
    assert anneal(base, 1.0, 5.0)[0].max() > anneal(base, 1.0, 1.0)[0].max()


def test_schedule_is_deterministic():
    assert torch.equal(annealed_schedule(5, 3, 0.42), annealed_schedule(5, 3, 0.42))


def test_dirichlet_rows_on_simplex_and_seeded():
    g = torch.Generator().manual_seed(0)
    a = dirichlet(100, 3, 1.0, g)
    b = dirichlet(100, 3, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert torch.allclose(a.sum(1), torch.ones(100), atol=1e-6) and (a >= 0).all()
    with pytest.raises(ValueError, match="concentration"):
        dirichlet(1, 2, 0.0)


def test_validate_preference_errors():
    assert validate_preference([0.3, 0.7], 2).shape == (2,)
    with pytest.raises(ValueError, match="2 entries"):
        validate_preference([0.2, 0.3, 0.5], 2)
    with pytest.raises(ValueError, match="finite"):
        validate_preference([float("nan"), 1.0], 2)
    with pytest.raises(ValueError, match=">= 0"):
        validate_preference([1.5, -0.5], 2)
    with pytest.raises(ValueError, match="sum to 1"):
        validate_preference([0.5, 0.6], 2)
    assert validate_preference([[1.0, 0.0], [0.5, 0.5]], 2).shape == (2, 2)
    assert validate_preference([1.5, -0.5], 2, allow_pseudo=True).tolist() == [1.5, -0.5]
