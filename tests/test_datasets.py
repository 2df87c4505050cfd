"""The seed papers' benchmarks: each loader on a tiny, format-faithful copy of its published files
(tests/seed_files.py writes them), what the many-task datasets need from the methods, every paper config on the
synthetic files, and (slow) a 2-worker Ray Train run of LS and PaLoRA per dataset."""

from __future__ import annotations

import torch

from pareto_ray.loop import step_learning_rate
from pareto_ray.methods import PaLoRAConfig, build_method
from pareto_ray.preferences import annealed_dirichlet, simplex_grid

# --------------------------------------------------------------------------------------------- many tasks


def test_simplex_grid_with_fewer_rays_than_tasks_is_seeded_and_on_the_simplex():
    rays = simplex_grid(40, 5)  # PaLoRA's M = 5 base rays for CelebA's 40 tasks (pymoo's energy method fails here)
    assert rays.shape == (5, 40) and (rays >= 0).all()
    assert torch.allclose(rays.sum(1), torch.ones(5))
    assert torch.equal(rays, simplex_grid(40, 5)) and not torch.equal(rays, simplex_grid(40, 5, seed=2))
    grid = simplex_grid(40)  # the evaluation set: the 40 vertices and 60 seeded Dirichlet draws
    vertices = grid[grid.max(1).values == 1]
    assert grid.shape == (100, 40) and sorted(vertices.argmax(1).tolist()) == list(range(40))


def test_annealed_dirichlet_spreads_early_and_reaches_vertices_late():
    gen = torch.Generator().manual_seed(0)
    early = annealed_dirichlet(2000, 7, 0.0, 1.0, gen)
    late = annealed_dirichlet(2000, 7, 1.0, 1.0, gen)
    for rays in (early, late):
        assert rays.shape == (2000, 7) and torch.isfinite(rays).all() and (rays >= 0).all()
        assert torch.allclose(rays.sum(1), torch.ones(2000), atol=1e-5)
    assert 0.3 < early.max(1).values.mean() < 0.45  # Dir(1) on 7 tasks: the largest share is 0.37 on average
    assert late.max(1).values.median() == 1 and (late.max(1).values > 0.99).float().mean() > 0.97  # Dir(0.001)
    middle = annealed_dirichlet(2000, 7, 0.5, 1.0, gen)  # Dir(0.501): in between
    assert early.max(1).values.mean() < middle.max(1).values.mean() < late.max(1).values.mean()
    assert set(late.argmax(1).tolist()) == set(range(7))  # vertices drawn uniformly, all of them


def test_palora_annealed_dirichlet_sampler_is_the_same_on_every_worker():
    cfg = PaLoRAConfig(sampler="annealed_dirichlet", rays_per_step=1, concentration=1.0)
    torch.manual_seed(3)
    a = build_method(cfg, 40).train_rays(0.5)
    torch.manual_seed(3)
    b = build_method(cfg, 40).train_rays(0.5)
    assert a.shape == (1, 40) and torch.equal(a, b)
    assert torch.allclose(build_method(PaLoRAConfig(), 2).train_rays(0.0), torch.full((5, 2), 0.5))  # the default


def test_step_learning_rate_is_stepwise_and_resumable():
    opt = torch.optim.Adam([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-4},
                            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 4e-4}])
    rates = []
    for epoch in (0, 74, 75, 149, 150):  # CityScapes' StepLR(75, 0.5)
        step_learning_rate(opt, epoch, 75, 0.5)
        rates.append([g["lr"] for g in opt.param_groups])
    assert rates == [[1e-4, 4e-4], [1e-4, 4e-4], [5e-5, 2e-4], [5e-5, 2e-4], [2.5e-05, 1e-4]]
    restored = torch.optim.Adam([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-4},
                                 {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 4e-4}])
    restored.load_state_dict(opt.state_dict())  # a checkpoint taken at epoch 150, resumed at 151
    step_learning_rate(restored, 151, 75, 0.5)
    assert [g["lr"] for g in restored.param_groups] == [2.5e-05, 1e-4]
    step_learning_rate(restored, 10, None, 0.5)  # no schedule: untouched
    assert [g["lr"] for g in restored.param_groups] == [2.5e-05, 1e-4]
