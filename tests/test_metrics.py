import math

import numpy as np
import pytest

from pareto_ray.fronts import front_metrics
from pareto_ray.metrics import hypervolume, nondominated_count, nondominated_mask, parameter_overhead, spearman


def test_hv_known_value():
    assert hypervolume(np.array([[0.9, 0.5], [0.5, 0.9]]), 0.0) == pytest.approx(0.65)


def test_hv_single_point_and_dominated_points_add_nothing():
    assert hypervolume(np.array([[0.5, 0.4]]), 0.0) == pytest.approx(0.2)
    assert hypervolume(np.array([[0.5, 0.4], [0.4, 0.3]]), 0.0) == pytest.approx(0.2)


def test_hv_three_objectives_and_losses():
    assert hypervolume(np.array([[1.0, 1.0, 1.0]]), 0.0) == pytest.approx(1.0)
    # losses are minimized: the box between the point and the reference
    assert hypervolume(np.array([[0.5, 1.0]]), 2.0, maximize=False) == pytest.approx(1.5 * 1.0)
    # points beyond the reference count nothing
    assert hypervolume(np.array([[3.0, 1.0]]), 2.0, maximize=False) == 0.0


def test_hv_matches_brute_force_on_random_fronts():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, size=(8, 2))
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 801), np.linspace(0, 1, 801)), -1).reshape(-1, 2)
    covered = np.any(np.all(grid[:, None, :] <= pts[None, :, :], axis=2), axis=1)
    assert hypervolume(pts, 0.0) == pytest.approx(covered.mean(), abs=5e-3)


def test_nondominated():
    pts = np.array([[0.9, 0.5], [0.5, 0.9], [0.4, 0.4], [0.9, 0.5]])
    assert nondominated_mask(pts).tolist() == [True, True, False, True]
    assert nondominated_count(pts) == 2
    assert nondominated_count(-pts, maximize=False) == 2


def test_spearman_and_constant_scores():
    rays = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    good = np.array([[0.1, 0.9], [0.5, 0.5], [0.9, 0.1]])
    assert spearman(rays, good) == pytest.approx([1.0, 1.0])
    assert all(math.isnan(r) for r in spearman(rays, np.ones((3, 2))))


def test_front_metrics_from_table():
    import pyarrow as pa

    table = pa.table({"ray_1": [1.0, 0.0], "ray_2": [0.0, 1.0], "acc_1": [0.9, 0.5], "acc_2": [0.5, 0.9],
                      "loss_1": [0.2, 1.0], "loss_2": [1.0, 0.2]})
    m = front_metrics(table, loss_reference=2.0)
    assert m["hv"] == pytest.approx(0.65)
    assert m["nondominated"] == 2
    assert m["spearman"] == pytest.approx(1.0)
    # union of [0.2, 2]x[1, 2] and [1, 2]x[0.2, 2]: 1.8 + 1.8 - 1.0
    assert m["loss_hv"] == pytest.approx(2.6)


def test_parameter_overhead():
    from torch import nn

    pct = parameter_overhead(nn.Linear(10, 10, bias=False), nn.Linear(10, 5, bias=False))
    assert pct == (100, 100.0)
