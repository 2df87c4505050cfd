"""Pareto MTL and MGDA: the subproblem geometry, the synthetic concave problem of
the paper (Fig. 2), DDP equivalence, and K subproblems as concurrent Ray Train runs."""

import json
import math
import os

import gloo
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import tiny_overrides
from tolerance import assert_close, assert_states_close
from torch import nn

from pareto_ray.config import ConfigError, DataConfig, ModelConfig, load_config
from pareto_ray.data import load_dataset
from pareto_ray.loop import build_optimizer, train_epoch, train_step
from pareto_ray.methods import LSConfig, build_method, build_model
from pareto_ray.methods.mgda import MGDAConfig
from pareto_ray.methods.pareto_mtl import (
    DiscreteFrontModel,
    ParetoMTLConfig,
    constrained_weights,
    constraint_directions,
    constraint_values,
    initial_weights,
    preference_keys,
    preference_vectors,
)
from pareto_ray.toy import concave_front, dent_points, get_problem, score, thetas, toy_network

# --- subproblem geometry -------------------------------------------------------------------------------------


def test_preference_vectors_regions_and_keys():
    u = preference_vectors(2, 5)
    angles = torch.rad2deg(torch.atan2(u[:, 1], u[:, 0]))
    assert torch.allclose(angles, torch.tensor([0.0, 22.5, 45.0, 67.5, 90.0], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(u.norm(dim=1), torch.ones(5, dtype=torch.float64))
    keys = preference_keys(u)
    # u = (1, 0): the loss vector lies along task 1's axis, task 2 is favoured
    assert keys[0].tolist() == [0.0, 1.0] and keys[-1].tolist() == [1.0, 0.0]
    assert torch.allclose(keys[2], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert (keys[:, 0].diff() > 0).all() and torch.allclose(keys.sum(1), torch.ones(5, dtype=torch.float64))
    # a loss vector along u_k is in region k only (every G_j ≤ 0 exactly there); the scale does not matter
    for k in range(5):
        for j in range(5):
            inside = bool((constraint_values(7.0 * u[j], u, k) <= 1e-12).all())
            assert inside == (j == k), (j, k)
    three = preference_vectors(3, 6)
    assert three.shape == (6, 3) and torch.allclose(three.norm(dim=1), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(preference_keys(torch.tensor([[1.0, 0.0, 0.0]])), torch.tensor([[0.0, 0.5, 0.5]]))


def test_phase_weights_follow_the_paper():
    u = preference_vectors(2, 5)
    gram = torch.eye(2, dtype=torch.float64)  # orthogonal task gradients
    losses = 3 * torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)])  # 30°: outside region 0 (u = (1, 0))
    values = constraint_values(losses, u, 0)
    directions = constraint_directions(u, 0)
    active = directions[values > 0]
    assert len(active) == 2  # u at 22.5° and 45° are closer to the loss vector than u_0 at 0°
    alpha = initial_weights(gram, active)
    assert alpha[1] > 0 > alpha[0]  # phase 1 lowers L2 (and may raise L1) to enter the region
    # phase 2: λ + Σ β (u_j − u_k), scaled to Σ|α| = T; inside the region with no active constraint it is MGDA
    inside = constrained_weights(gram, directions[:0])
    assert torch.allclose(inside, torch.tensor([1.0, 1.0], dtype=torch.float64))
    constrained = constrained_weights(gram, active)
    assert constrained.abs().sum() == pytest.approx(2) and constrained[1] > constrained[0]


def test_config_validation():
    with pytest.raises(ConfigError, match="subproblem 5 out of range"):
        load_config(None, ["method.name=pareto_mtl", "method.subproblem=5"])
    with pytest.raises(ConfigError, match="num_preferences"):
        load_config(None, ["method.name=pareto_mtl", "method.num_preferences=4", "method.preferences=[[1,0],[0,1]]"])
    with pytest.raises(ConfigError, match="non-zero"):
        load_config(None, ["method.name=pareto_mtl", "method.preferences=[[1,0],[0,0]]"])
    cfg = load_config(None, ["method.name=pareto_mtl", "method.preferences=[[1,0],[1,1],[0,1]]"])
    assert cfg.method.num_preferences == 3
    with pytest.raises(ValueError, match="3 tasks"):
        build_method(cfg.method, 3)
    assert load_config(None, ["method.name=mgda"]).method.gradients == "shared"


def test_discrete_front_model_answers_with_the_nearest_keys_network():
    torch.manual_seed(0)
    method, model, _ = build_model(ModelConfig(backbone="mlp", hidden=8), ParetoMTLConfig(num_preferences=3), 2)
    assert isinstance(model, DiscreteFrontModel) and len(model.nets) == 3
    for net in model.nets[1:]:  # the copies start equal; make them differ
        for p in net.parameters():
            nn.init.normal_(p)
    x = torch.randn(6, 1, 28, 28)
    prefs = torch.tensor([[0.0, 1.0], [0.9, 0.1], [0.45, 0.55], [0.2, 0.8], [1.0, 0.0], [0.6, 0.4]])
    nearest = model.nearest(prefs).tolist()
    assert nearest == [0, 2, 1, 0, 2, 1]
    got = model.predict(x, prefs)
    for n, k in enumerate(nearest):
        expected = model.nets[k](x[n:n + 1])
        for task in range(2):
            assert_close(got[task][n], expected[task][0])  # logits of ~800: relative to their scale
    rays = method.eval_rays(None)
    assert torch.allclose(rays, method.keys) and model(x, rays)[0].shape == (3, 6, 10)


# --- the synthetic concave problem (eq. 19, d = 20): the paper's setup, plain gradient descent --------------

STEPS, LR = 100, 1.0  # as the paper's synthetic example: 100 steps of size 1, the first 20 may find the initial solution


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread hand-offs only cost time
    yield
    torch.set_num_threads(threads)


def _descend(method_cfg, seed: int) -> np.ndarray:
    """Objectives [K, 2] reached by gradient descent from random starts in [−0.5, 0.5]^d (one per network)."""
    problem = get_problem("concave")
    g = torch.Generator().manual_seed(seed)
    method = build_method(method_cfg, 2)
    model = method.build_model(toy_network(problem, torch.zeros(problem.dim)))
    with torch.no_grad():
        for p in model.parameters():  # each subproblem starts from its own random point (Algorithm 1, line 5)
            p.uniform_(-0.5, 0.5, generator=g)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)

    def criterion(outputs, _):
        return problem.objectives(outputs[0][:, 0, :])

    for step in range(STEPS):
        train_step(model, method, optimizer, torch.ones(1, 1), None, step / STEPS, False, criterion=criterion)
    with torch.no_grad():
        return problem.objectives(thetas(model, method.eval_rays(None))).numpy()


def _angles(points: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(points[:, 1], points[:, 0]))


def _distance_to_front(points: np.ndarray) -> np.ndarray:
    front = concave_front(4000)
    return np.min(np.linalg.norm(points[:, None] - front[None], axis=2), axis=1)


@pytest.fixture
def pareto_mtl_points(one_thread) -> np.ndarray:
    return _descend(ParetoMTLConfig(num_preferences=5, init_steps=20), seed=0)


def test_pareto_mtl_finds_one_solution_per_region_on_the_concave_front(pareto_mtl_points):
    points = pareto_mtl_points
    u = preference_vectors(2, 5).numpy()
    # solution k lies in its own region Ω_k: u_k has the largest inner product with its loss vector
    # (with the default ε = 0.01; with the official code's ε = 0 a solution may end a step past its boundary)
    assert (np.argmax(points @ u.T, axis=1) == np.arange(5)).all(), _angles(points)
    assert _distance_to_front(points).max() < 0.01  # on the true front
    front = concave_front()
    scores = score(points, front)
    # 5 points on a front of diameter 1.39: IGD below 0.1 (their spacing alone costs ~0.07)
    assert scores["igd"] < 0.1 and scores["nondominated"] == 5, scores
    assert len(dent_points(points, front)) >= 3  # the concave part, where no linear scalarization lands


def test_fig2_ls_reaches_only_the_ends_mgda_only_the_middle(pareto_mtl_points):
    rng = np.random.default_rng(0)
    ls = np.concatenate([_descend(LSConfig(weights=[float(r), 1 - float(r)]), seed=i)
                         for i, r in enumerate(rng.uniform(0.1, 0.9, size=6))])
    mgda = np.concatenate([_descend(MGDAConfig(), seed=i) for i in range(5)])
    assert _distance_to_front(mgda).max() < 0.01 and _distance_to_front(pareto_mtl_points).max() < 0.01
    # linear scalarization: only the two extremes of the concave front (Fig. 2a)
    assert (np.minimum(ls[:, 0], ls[:, 1]) < 0.05).all(), ls
    # MGDA: repeated runs cluster in the middle (Fig. 2b); Pareto MTL spreads over the whole front (Fig. 2c)
    mgda_spread, pmtl_spread = np.ptp(_angles(mgda)), np.ptp(_angles(pareto_mtl_points))
    assert abs(_angles(mgda).mean() - 45) < 10 and mgda_spread < 15, _angles(mgda)
    assert pmtl_spread > 75 and pmtl_spread > 5 * mgda_spread, (pmtl_spread, mgda_spread)


# --- DDP: every worker combines the globally averaged task gradients ----------------------------------------

def _ddp_run(rank: int, world: int, method_cfgs: list, out: str) -> None:
    data = load_dataset(DataConfig(max_train=256, max_eval=8))
    results = []
    for method_cfg in method_cfgs:
        torch.manual_seed(0)
        method, model, _ = build_model(ModelConfig(backbone="mlp"), method_cfg, 2)  # MLP: no pooling ties
        wrapped = nn.parallel.DistributedDataParallel(model) if world > 1 else model
        optimizer = build_optimizer(wrapped, "sgd", 0.05)
        train_epoch(wrapped, method, optimizer, data.train, 0, 1, 64, seed=0, rank=rank, world_size=world)
        weights = method.last_weights if isinstance(method.last_weights, list) else [method.last_weights]
        results.append({"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
                        "weights": torch.stack(weights), "phase": getattr(method, "phase", None)})
    if rank == 0:
        torch.save(results, out)


def test_two_workers_match_one_worker_on_the_same_global_batch(tmp_path):
    method_cfgs = [MGDAConfig(), ParetoMTLConfig(subproblem=0, init_steps=2)]
    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    gloo.run(_ddp_run, 1, method_cfgs, one)
    gloo.run(_ddp_run, 2, method_cfgs, two)
    for method_cfg, a, b in zip(method_cfgs, torch.load(one), torch.load(two)):
        assert_close(a["weights"], b["weights"], what=method_cfg.name)  # the same min-norm weights
        assert a["phase"] == b["phase"]
        if a["phase"] is not None:
            assert a["phase"] == ["constrained"]  # both phases ran: 2 initial-solution steps, then constrained ones
        assert_states_close(a["state"], b["state"], what=method_cfg.name)
        torch.manual_seed(0)
        initial = build_model(ModelConfig(backbone="mlp"), method_cfg, 2)[1].state_dict()
        assert any(not torch.allclose(a["state"][k], initial[k]) for k in initial), method_cfg.name


# --- K subproblems as concurrent Ray Train runs -------------------------------------------------------------

@pytest.mark.slow
def test_k_subproblems_run_concurrently_under_one_parent_run(ray_session, tmp_path, mlflow_uri, capsys):
    from mlflow.tracking import MlflowClient

    from pareto_ray.checkpoint import load_model
    from pareto_ray.cli import main

    sets = tiny_overrides(tmp_path, mlflow_uri, name="pmtl", **{
        "method.name": "pareto_mtl", "method.num_preferences": 3, "train.epochs": 1, "model.backbone": "mlp",
        "ray.num_workers": 1, "ray.cpus_per_worker": 0.5,  # all 3 runs fit in 2 CPUs at once
        "mlflow.register_model": "pmtl-front"})
    assert main(["train", "--json", *sum((["--set", s] for s in sets), [])]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    client = MlflowClient(mlflow_uri)
    parent = client.get_run(out["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["method.name"] == "pareto_mtl"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{out['run_id']}'")
    assert sorted(c.info.run_name for c in children) == ["pmtl-k0", "pmtl-k1", "pmtl-k2"]
    assert all(c.info.status == "FINISHED" and "test_hv" in c.data.metrics for c in children)
    assert [c.data.params["method.subproblem"] for c in sorted(children, key=lambda c: c.info.run_name)] == \
        ["0", "1", "2"]
    parallel = int(parent.data.metrics["parallel"])
    assert 1 <= parallel <= 3
    if parallel >= 2:  # subproblems trained at the same time (each child run spans its whole Ray Train run)
        spans = sorted((c.info.start_time, c.info.end_time) for c in children)
        overlapping = sum(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
        assert overlapping >= parallel - 1, spans

    # one front of K models: one Parquet table (a row per subproblem, keyed by its preference ray) and one plot
    front = pq.read_table(out["front"])
    assert front.num_rows == 3 and os.path.isfile(out["plot"])
    assert front.column("ray_1").to_pylist() == pytest.approx([0.0, 0.5, 1.0], abs=1e-6)
    assert out["test"]["nondominated"] >= 1 and 0 < out["test_hv"] <= 1
    assert parent.data.metrics["test_hv"] == pytest.approx(out["test_hv"])
    model, method, cfg = load_model(out["checkpoint"])
    assert isinstance(model, DiscreteFrontModel) and len(model.nets) == 3 and cfg.method.subproblem is None
    for k, child in enumerate(json.load(open(os.path.join(out["checkpoint"], "state.json")))["subproblems"]):
        child_model = load_model(child["checkpoint"])[0]
        assert all(torch.equal(a, b) for a, b in zip(child_model.nets[0].state_dict().values(),
                                                      model.nets[k].state_dict().values()))
    assert main(["evaluate", out["checkpoint"], "--output", str(tmp_path / "ev"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["hv"] == pytest.approx(out["test_hv"], abs=1e-9)
    version = MlflowClient(mlflow_uri, registry_uri=mlflow_uri).get_model_version("pmtl-front", "1")
    assert version.run_id == out["run_id"]
    assert math.isfinite(parent.data.metrics["train_seconds"])
