"""Unit tests of the Pareto-front methods: regularizers, layers, parameter counts,
freezing, learning-rate groups, DDP equivalence, expansion, and one Ray Train run each."""

import json
import os

import gloo
import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from tolerance import assert_close, assert_states_close
from torch import nn

from pareto_ray.config import DataConfig, ModelConfig, load_config
from pareto_ray.layers import EnsemblePreferenceLayer, GeneratedLayer, GeneratedLoRALayer, PreferenceInputLayer
from pareto_ray.loop import build_optimizer, train_epoch, train_step
from pareto_ray.methods import METHODS, build_model
from pareto_ray.methods.cosmos import COSMOSConfig
from pareto_ray.methods.lorpman import LORPMANConfig
from pareto_ray.methods.pamal import PaMaLConfig
from pareto_ray.methods.phn import PHNConfig
from pareto_ray.methods.phn_lora import PHNLoRAConfig, diversity_loss, hvi_loss, hypervolume_gradient
from pareto_ray.methods.regularizers import multi_forward_regularization, orthogonal_regularization
from pareto_ray.models import count_parameters, lenet

LENET_PARAMS = 27_450  # conv 260 + conv 5,020 + fc 16,050 + 2 heads × 3,060


# --- regularizers ---------------------------------------------------------------------------------------------

def test_multi_forward_regularization_is_zero_for_a_correctly_ordered_window():
    rays = torch.tensor([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8]])
    losses = torch.tensor([[0.4, 0.6], [0.1, 0.9], [0.8, 0.2]])  # more weight on a task → lower loss on it
    assert multi_forward_regularization(losses, rays).item() == 0.0
    rays3 = torch.distributions.Dirichlet(torch.ones(3)).sample((5,))
    assert multi_forward_regularization(1 - rays3, rays3).item() == 0.0


def test_multi_forward_regularization_penalizes_violations_and_its_gradient_repairs_them():
    rays = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    losses = torch.tensor([[0.5, 0.9], [0.4, 0.6], [0.8, 0.2]], requires_grad=True)  # ray 0 worse on task 1 than ray 1
    reg = multi_forward_regularization(losses, rays)
    assert reg.item() > 0
    reg.backward()
    assert losses.grad[0, 0] > 0 > losses.grad[1, 0]  # descending lowers ray 0's task-1 loss, raises ray 1's
    assert torch.all(losses.grad[:, 1] == 0)  # task 2 is correctly ordered


def _lowrank_layer(num_tasks: int, vectors: torch.Tensor):
    from pareto_ray.layers import LowRankPreferenceLayer

    layer = LowRankPreferenceLayer(nn.Linear(vectors.shape[1], 1, bias=False), num_tasks, 1, 1.0)
    with torch.no_grad():
        layer.lora_A.copy_(vectors[:, None, :])
        layer.lora_B.fill_(1.0)
    return layer


def test_orthogonal_regularization():
    orthogonal = _lowrank_layer(2, torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
    parallel = _lowrank_layer(2, torch.tensor([[1.0, 1.0, 0.0], [3.0, 3.0, 0.0]]))
    assert orthogonal_regularization([orthogonal]).item() == pytest.approx(0.0, abs=1e-7)
    assert orthogonal_regularization([parallel]).item() == pytest.approx(2.0)  # ‖[[1,1],[1,1]] − I‖² = 2
    assert orthogonal_regularization([orthogonal, parallel]).item() == pytest.approx(1.0)  # mean over layers
    five = _lowrank_layer(5, torch.ones(5, 4))
    assert orthogonal_regularization([five], torch.tensor([0, 2, 4])).item() == pytest.approx(6.0)  # 3×3 subset


def test_hypervolume_gradient_and_hvi_weights():
    points = np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2], [0.9, 0.9]])  # the last one is dominated
    grad = hypervolume_gradient(points, np.array([1.0, 1.0]))
    assert np.all(grad[3] == 0) and np.all(grad[:3] < 0)
    three = hypervolume_gradient(np.array([[0.2, 0.8, 0.5], [0.6, 0.3, 0.4]]), np.ones(3))
    assert np.all(three < 0)
    losses = torch.tensor(points, requires_grad=True)
    hvi_loss(losses).backward()  # weights: unit-norm −∂HV/∂L per point
    assert torch.allclose(losses.grad[:3].norm(dim=1), torch.ones(3, dtype=torch.float64))
    assert torch.all(losses.grad[3] == 0)


def test_diversity_loss():
    a = torch.eye(3)
    assert diversity_loss([a], [a]).item() == pytest.approx(0.0, abs=1e-7)  # positives equal, negatives orthogonal
    same = torch.ones(3, 4)
    assert diversity_loss([same], [same]).item() == pytest.approx(1.0)  # all negatives identical: cos² = 1
    assert diversity_loss([a], [-a]).item() == pytest.approx(4.0)  # positives opposite: (1 − (−1))²


def test_cosmos_loss_rewards_alignment_with_the_ray():
    method, model, _ = build_model(ModelConfig(), COSMOSConfig(cosine_weight=2.0), 2)
    rays = torch.tensor([[0.25, 0.75]])
    losses = torch.tensor([[1.0, 3.0]])
    assert method.loss(losses, rays, model).item() == pytest.approx(0.25 + 2.25 - 2.0)  # cos = 1


# --- layers: merged and per-sample paths agree -----------------------------------------------------------------

def _inputs(layer_base: nn.Module, n: int) -> torch.Tensor:
    if isinstance(layer_base, nn.Linear):
        return torch.randn(n, layer_base.in_features)
    return torch.randn(n, layer_base.in_channels if isinstance(layer_base, nn.Conv2d) else layer_base.num_features, 9, 9)


def _per_sample_vs_merged(layer, x, prefs, set_pref):
    set_pref(prefs)
    together = layer(x)
    alone = []
    for i in range(x.shape[0]):
        set_pref(prefs[i])
        alone.append(layer(x[i:i + 1]))
    return together, torch.cat(alone)


BASES = [lambda: nn.Linear(12, 7), lambda: nn.Conv2d(3, 5, 3, padding=1, stride=2), lambda: nn.Conv2d(2, 4, 5)]


@pytest.mark.parametrize("make", BASES + [lambda: nn.BatchNorm2d(3)])
def test_ensemble_layer_paths_agree_and_mix_members(make):
    torch.manual_seed(0)
    base = make()
    layer = EnsemblePreferenceLayer(base, 3).eval()
    if isinstance(base, nn.BatchNorm2d):
        with torch.no_grad():
            layer.weight.normal_()
            layer.bias.normal_()
            base.running_mean.normal_()
    x = _inputs(base, 6)
    prefs = torch.distributions.Dirichlet(torch.ones(3)).sample((6,))
    together, alone = _per_sample_vs_merged(layer, x, prefs, lambda p: setattr(layer, "preference", p))
    assert_close(together, alone)
    assert layer.lr_multiplier == 3.0
    assert not torch.equal(layer.weight[0], layer.weight[1])  # independently initialized members
    weight, _ = layer.mixed(torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(weight, layer.weight[1])
    assert count_parameters(layer) == 3 * sum(p.numel() for p in make().parameters())


@pytest.mark.parametrize("make", BASES)
def test_generated_layers_paths_agree(make):
    torch.manual_seed(0)
    n = 5
    gen = GeneratedLayer(make())
    flat = torch.randn(n, sum(gen.head_sizes()))
    x = _inputs(gen.base_layer, n)
    together, alone = _per_sample_vs_merged(gen, x, flat,
                                            lambda f: gen.set_generated(list(f.split(gen.head_sizes(), dim=-1))))
    assert_close(together, alone)
    assert count_parameters(gen) == 0  # the base layer's weights are generated, not learned

    lora = GeneratedLoRALayer(make(), rank=2, scale=3.0)
    flat = torch.randn(n, lora.lora_numel)
    together, alone = _per_sample_vs_merged(lora, x, flat, lambda f: lora.set_generated([f]))
    assert_close(together, alone)
    a, b = lora.split(flat[0])
    lora.set_generated([flat[0]])
    expected = lora.base_layer.weight + 3.0 * (b @ a).view_as(lora.base_layer.weight)
    if isinstance(lora.base_layer, nn.Linear):
        assert_close(lora(x[:1]), x[:1] @ expected.T + lora.base_layer.bias)


@pytest.mark.parametrize("make", BASES)
def test_preference_input_layer_paths_agree(make):
    torch.manual_seed(0)
    layer = PreferenceInputLayer(make(), 2)
    x = _inputs(layer.base_layer, 4)
    prefs = torch.distributions.Dirichlet(torch.ones(2)).sample((4,))
    together, alone = _per_sample_vs_merged(layer, x, prefs, lambda p: setattr(layer, "preference", p))
    assert_close(together, alone)


@pytest.mark.parametrize("name,settings", [("lorpman", {}), ("phn_lora", {}), ("pamal", {}), ("cosmos", {}), ("phn", {}),
                                           ("phn", {"chunk_size": 5000})])
def test_models_forward_paths_agree(name, settings):
    torch.manual_seed(0)
    method, model, _ = build_model(ModelConfig(), METHODS[name][1](**settings), 2)
    x = torch.randn(3, 1, 28, 28)
    rays = torch.tensor([[1.0, 0.0], [0.3, 0.7]])
    merged = model(x, rays)
    per_sample = model(x, rays, per_sample=True)
    for a, b in zip(merged, per_sample):
        assert_close(a, b, rtol=1e-4)
    starts_at_base = name in ("lorpman", "phn_lora")  # B = 0 at initialization: every ray gives θ₀
    assert torch.allclose(merged[0][0], merged[0][1]) == starts_at_base


# --- sizes and optimizer groups --------------------------------------------------------------------------------

def test_parameter_counts():
    def params(cfg, **model):
        return count_parameters(build_model(ModelConfig(**model), cfg, 2)[1])

    assert count_parameters(lenet(2)) == LENET_PARAMS
    phn = params(PHNConfig())
    assert phn == 101 * LENET_PARAMS + 20_500 == 2_792_950  # heads (100 + bias) per target number + ray MLP
    assert params(PHNConfig(chunk_size=1000)) < phn / 10
    assert params(PaMaLConfig()) == 2 * LENET_PARAMS
    encoder_lora = sum(r * (i + o) for r, i, o in [(8, 25, 10), (8, 250, 20), (8, 320, 50)])
    assert params(LORPMANConfig(conv_style="channel")) == LENET_PARAMS + 2 * encoder_lora
    kernel_lora = 8 * (5 + 50) * 5 + 8 * (50 + 100) * 5 + 8 * (320 + 50)  # A [r·k, in·k], B [out·k, r·k] per conv
    assert params(LORPMANConfig()) == LENET_PARAMS + 2 * kernel_lora
    assert params(COSMOSConfig()) == LENET_PARAMS + 10 * 2 * 5 * 5  # conv1 gains 2 input channels
    lora_numel = encoder_lora + 2 * (8 * (50 + 50) + 8 * (50 + 10))
    assert params(PHNLoRAConfig()) == LENET_PARAMS + 101 * lora_numel + 20_500


def test_pamal_ensemble_trains_at_members_times_the_learning_rate():
    _, model, _ = build_model(ModelConfig(), PaMaLConfig(), 2)
    groups = build_optimizer(model, "adam", 1e-3).param_groups
    assert [g["lr"] for g in groups] == [2e-3] and len(groups[0]["params"]) == len(list(model.parameters()))
    _, plain, _ = build_model(ModelConfig(), PaMaLConfig(scale_lr=False), 2)
    assert [g["lr"] for g in build_optimizer(plain, "adam", 1e-3).param_groups] == [1e-3]


# --- freezing ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg,adapter", [(LORPMANConfig(freeze_after=0.5), "lora_"),
                                         (PHNLoRAConfig(freeze_after=0.5), "hypernet.")])
def test_freeze_epoch_stops_the_main_parameters_only(cfg, adapter):
    torch.manual_seed(0)
    method, model, _ = build_model(ModelConfig(), cfg, 2)
    opt = build_optimizer(model, "adam", 1e-2)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8, 2))

    def moved(progress):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        train_step(model, method, opt, x, y, progress, per_sample=False)
        return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}

    early = moved(0.2)
    assert any(adapter in k for k in early) and any(adapter not in k for k in early)
    late = moved(0.6)
    assert late and all(adapter in k for k in late)
    assert all(p.requires_grad for p in model.parameters())  # frozen by dropping gradients, not requires_grad


# --- 2 DDP workers == 1 worker on the same global batch ----------------------------------------------------------

DDP_CASES = {
    "pamal_gradient": PaMaLConfig(balancing="gradient", rays_per_step=2),
    "pamal_loss": PaMaLConfig(balancing="loss", rays_per_step=2),
    "phn_epo": PHNConfig(solver="epo", hidden=8, rays_per_step=2, concentration=1.0),
    "phn_lora_epo": PHNLoRAConfig(solver="epo", hidden=8, rank=2, rays_per_step=3),
    "lorpman_freeze": LORPMANConfig(freeze_after=0.5, rays_per_step=2),
}


def _ddp_run(rank: int, world: int, out: str) -> None:
    from pareto_ray.data import load_dataset

    data = load_dataset(DataConfig(max_train=128, max_eval=8))
    states = {}
    for name, cfg in DDP_CASES.items():
        torch.manual_seed(0)
        method, model, _ = build_model(ModelConfig(backbone="mlp", hidden=16), cfg, 2)
        wrapped = nn.parallel.DistributedDataParallel(model) if world > 1 else model
        opt = build_optimizer(wrapped, "sgd", 0.05)
        train_epoch(wrapped, method, opt, data.train, 0, 1, 32, seed=0, rank=rank, world_size=world)
        states[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save(states, out)


@pytest.mark.slow
def test_gradient_combining_methods_two_workers_match_one(tmp_path):
    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    gloo.run(_ddp_run, 1, one)
    gloo.run(_ddp_run, 2, two)
    a, b = torch.load(one), torch.load(two)
    for name, cfg in DDP_CASES.items():
        torch.manual_seed(0)
        initial = build_model(ModelConfig(backbone="mlp", hidden=16), cfg, 2)[1].state_dict()
        assert_states_close(a[name], b[name], what=name)
        assert any(not torch.allclose(a[name][k], initial[k]) for k in a[name]), name


# --- evaluation of pseudopreferences, Pareto expansion ---------------------------------------------------------

def test_expansion_trains_adapters_around_a_single_point_and_probes_pseudopreferences(tmp_path, capsys):
    from pareto_ray import checkpoint as ckpt
    from pareto_ray.cli import main
    from pareto_ray.data import load_dataset
    from pareto_ray.fronts import evaluate_front

    base_cfg = load_config(None, ["method.name=ls", "name=base", "data.max_train=256", "data.max_eval=64",
                                  "train.batch_size=64", "ray.num_workers=1"])
    torch.manual_seed(0)
    method, model, _ = build_model(base_cfg.model, base_cfg.method, 2)
    data = load_dataset(base_cfg.data)
    train_epoch(model, method, build_optimizer(model, "adam", 1e-3), data.train, 0, 1, 64, 0)
    ckpt.save_checkpoint(tmp_path / "base", model, base_cfg, {"epoch": 0, "metrics": {}})

    config = tmp_path / "expand.yaml"
    config.write_text("method: {name: palora, alpha: 2}\ndata: {max_train: 256, max_eval: 64}\n"
                      "train: {batch_size: 64, epochs: 1}\nray: {num_workers: 1}\n")
    assert main(["expand", "--from", str(tmp_path / "base"), "--config", str(config), "--output",
                 str(tmp_path / "expanded"), "--pseudo", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["hv"] > 0 and out["start"]["hv"] > 0
    expanded, exp_method, _ = ckpt.load_model(out["checkpoint"])
    base_state = model.net.state_dict()
    for name, layer in zip(expanded._layer_names, expanded.preference_layers()):  # the core network is unchanged
        assert torch.equal(layer.base_layer.weight, base_state[f"{name}.weight"])
    assert any(layer.lora_B.abs().sum() > 0 for layer in expanded.preference_layers())
    assert [tuple(r[f"ray_{i}"] for i in (1, 2)) for r in out["pseudo"]][3:] == [(0.0, 0.0), (1.0, -1.0), (-1.0, 1.0)]

    with pytest.raises(ValueError, match=">= 0"):
        evaluate_front(expanded, data.test, torch.tensor([[1.0, -1.0]]))
    with pytest.raises(ValueError, match="sum to 1"):
        evaluate_front(expanded, data.test, torch.tensor([[0.0, 0.0]]))
    table = evaluate_front(expanded, data.test, torch.tensor([[1.0, -1.0]]), allow_pseudo=True)
    assert table.num_rows == 1


# --- through Ray Train, MLflow, checkpoint and evaluation --------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name,extra", [("lorpman", {}), ("phn_lora", {"method.solver": "epo"}),
                                        ("pamal", {"method.balancing": "gradient"}), ("cosmos", {}), ("phn", {})])
def test_each_method_trains_through_ray_train(tmp_path, ray_session, mlflow_uri, name, extra):
    from pareto_ray.cli import main
    from pareto_ray.training import fit

    overrides = tiny_overrides(tmp_path, mlflow_uri, **{"method.name": name, "train.epochs": 1, "ray.num_workers": 1,
                                                        "data.max_train": 128, "data.max_eval": 64,
                                                        "model.backbone": "mlp", "model.hidden": 16,
                                                        "name": f"t-{name}", **extra})
    result = fit(load_config(None, overrides))
    assert result.test_hv > 0 and os.path.isfile(result.front)
    assert main(["evaluate", result.checkpoint, "--split", "val", "--output", str(tmp_path / "ev"), "--json"]) == 0
    assert json.load(open(result.checkpoint + "/config.json"))["method"]["name"] == name
