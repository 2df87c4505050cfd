"""Problems with known fronts: objectives, reference fronts, scoring, and the methods' convergence."""

import json

import numpy as np
import pytest
import torch

from pareto_ray.toy import PROBLEMS, concave_front, dent_points, nondominated_2d, run_toy, score, toy_front


@pytest.mark.parametrize("name", ["zdt1", "zdt2"])
def test_zdt_objectives_match_pymoo(name):
    from pymoo.problems import get_problem

    x = np.random.default_rng(0).random((16, 30))
    ours = PROBLEMS[name].objectives(torch.logit(torch.tensor(x))).numpy()  # θ = logit(x)
    assert np.allclose(ours, get_problem(name, n_var=30).evaluate(x), atol=1e-6)
    front = PROBLEMS[name].front()
    assert front.shape == (1000, 2) and front[:, 0].min() == 0 and front[:, 0].max() == 1


def test_concave_pareto_set_maps_onto_the_analytic_front():
    t = torch.linspace(-1, 1, 401, dtype=torch.float64)
    x = t[:, None] * torch.ones(20, dtype=torch.float64) / np.sqrt(20)
    values = PROBLEMS["concave"].objectives(x).numpy()
    assert score(values, concave_front())["igd"] < 5e-3
    noise = 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    off_set = PROBLEMS["concave"].objectives(x + noise).numpy()
    # leaving the Pareto set never beats it: no perturbed point strictly dominates a point of the front
    dominates = (off_set[:, None, :] < values[None, :, :] - 1e-9).all(axis=2)
    assert not dominates.any()
    # ...whereas points on the set do dominate perturbed ones (the check can fail)
    assert (values[:, None, :] < off_set[None, :, :]).all(axis=2).any()


def test_toy_reference_front():
    front = toy_front()
    assert front.shape == (1000, 2)
    assert np.all(np.diff(front[:, 0]) >= 0) and np.all(np.diff(front[:, 1]) <= 0)  # sorted, non-dominated
    assert front[0] == pytest.approx([-20.0, -0.4], abs=0.05) and front[-1] == pytest.approx([-0.4, -20.0], abs=0.05)
    middle = PROBLEMS["toy"].objectives(torch.tensor([0.0, -8.4], dtype=torch.float64)).numpy()
    assert np.min(np.linalg.norm(front - middle, axis=1)) < 0.1  # a point of the Pareto set lies on it
    assert np.allclose(toy_front(0.1)[[0, -1]], [[-2.0, -0.4], [-0.04, -20.0]], atol=0.02)  # c = 0.1 scales f1


def test_nondominated_filter_and_scores():
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [2.5, 2.5], [3.0, 1.0], [1.0, 3.5]])
    assert nondominated_2d(pts).tolist() == [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]
    front = concave_front()
    exact = score(front, front)
    assert exact["igd"] == 0 and exact["hv_ratio"] == pytest.approx(1.0)
    shifted = score(front + 0.05, front)
    assert 0.03 < shifted["igd"] <= 0.05 * np.sqrt(2) and shifted["hv_ratio"] < 0.9
    corners = score(front[[0, -1]], front)  # the two extremes alone: what LS reaches on a concave front
    assert corners["hv_ratio"] < 0.8 and len(dent_points(front[[0, -1]], front)) == 0
    assert len(dent_points(front[400:600], front)) == 200


# --- convergence with fixed seeds ------------------------------------------------------------------------------

def _check_covers(result, igd=0.01, hv=0.98):
    assert result["igd_relative"] <= igd, result
    assert result["hv_ratio"] >= hv, result


@pytest.mark.slow
@pytest.mark.parametrize("method", ["palora", "lorpman", "pamal", "phn_lora"])
def test_methods_recover_the_convex_toy_front(method):
    _check_covers(run_toy(method, "toy", ["seed=0", "steps=1000"]))  # half the default budget: fast enough here


@pytest.mark.slow
def test_balanced_pamal_covers_the_front_with_unequal_loss_scales():
    _check_covers(run_toy("pamal", "toy_scaled", ["seed=0", "steps=1000", "balancing=gradient"]))


@pytest.mark.slow
def test_phn_lora_with_epo_reaches_the_concave_part_of_a_front():
    result = run_toy("phn_lora", "concave", ["seed=0", "steps=500", "solver=epo"])
    inside = dent_points(np.asarray(result["points"]), concave_front())
    assert len(inside) >= 30, result  # well spread inside the dent of the convex hull
    assert result["hv_ratio"] >= 0.95


def test_toy_cli_json(capsys):
    from pareto_ray.cli import main

    assert main(["toy", "--method", "palora", "--problem", "concave", "--set", "steps=30", "--set", "rank=1",
                 "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"igd", "hv_ratio", "nondominated"} <= payload.keys() and payload["steps"] == 30
    assert main(["toy", "--method", "palora", "--problem", "nope"]) == 2
    assert main(["toy", "--method", "palora", "--problem", "toy", "--set", "bogus=1"]) == 2


def test_each_method_trains_with_its_papers_optimizer():
    from pareto_ray.toy import ADAM, ToyConfig, ToyOptimizer, toy_optimizer

    assert toy_optimizer("pareto_mtl", ToyConfig()) == ToyOptimizer("gd", lr=1.0, steps=100, cosine=False)  # its §5
    assert toy_optimizer("mgda", ToyConfig()).name == "gd"
    assert toy_optimizer("palora", ToyConfig()) == ADAM  # the problem's lr and steps, cosine-decayed
    assert toy_optimizer("pareto_mtl", ToyConfig(optimizer="adam")) == ADAM  # the other one: its own defaults
    assert toy_optimizer("pareto_mtl", ToyConfig(lr=0.5, steps=30)) == ToyOptimizer("gd", 0.5, 30, cosine=False)


def test_toy_cli_pareto_mtl_reaches_what_its_tests_assert(capsys):
    """`pareto-ray toy --method pareto_mtl --problem concave` runs the paper's plain gradient descent: the CLI's
    numbers are those tests/test_pareto_mtl.py asserts (with Adam it printed IGD 0.197, HV ratio 0.687)."""
    from pareto_ray.cli import main

    torch.set_num_threads(1)  # tiny tensors: threads only cost time
    assert main(["toy", "--method", "pareto_mtl", "--problem", "concave", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (payload["optimizer"], payload["steps"], payload["lr"]) == ("gd", 100, 1.0)
    assert payload["igd"] < 0.1 and payload["nondominated"] == 5, payload
    assert payload["hv_ratio"] > 0.75, payload
