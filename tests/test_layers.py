import pytest
import torch
from tolerance import assert_close
from torch import nn

from pareto_ray.layers import LowRankPreferenceLayer, find_targets, inject
from pareto_ray.methods import build_model
from pareto_ray.methods.palora import PaLoRA, PaLoRAConfig
from pareto_ray.models import count_parameters, lenet, mlp


def _randomize(layer: LowRankPreferenceLayer) -> None:
    with torch.no_grad():
        layer.lora_B.normal_()  # B starts at zero; make the adapters matter


@pytest.mark.parametrize("style", ["kernel", "channel"])
@pytest.mark.parametrize("base", [nn.Linear(12, 7), nn.Conv2d(3, 5, 3, padding=1, stride=2), nn.Conv2d(2, 4, 5),
                                  nn.Conv2d(3, 4, (3, 1), dilation=2, padding_mode="reflect", padding=2)])
def test_merged_and_per_sample_paths_agree(base, style):
    torch.manual_seed(0)
    layer = LowRankPreferenceLayer(base, num_tasks=3, rank=2, scale=0.5, conv_style=style)
    _randomize(layer)
    n = 6
    x = torch.randn(n, 12) if isinstance(base, nn.Linear) else torch.randn(n, base.in_channels, 9, 9)
    prefs = torch.distributions.Dirichlet(torch.ones(3)).sample((n,))
    layer.preference = prefs
    per_sample = layer(x)
    merged = []
    for i in range(n):
        layer.preference = prefs[i]
        merged.append(layer(x[i:i + 1]))
    assert_close(per_sample, torch.cat(merged))


def test_kernel_style_conv_adapters_are_lora_reshaped_to_the_kernel():
    layer = LowRankPreferenceLayer(nn.Conv2d(3, 4, 5), num_tasks=2, rank=2, scale=1.5)
    assert layer.lora_A.shape == (2, 2 * 5, 3 * 5) and layer.lora_B.shape == (2, 4 * 5, 2 * 5)
    _randomize(layer)
    lam = torch.tensor([0.3, 0.7])
    expected = sum(lam[t] * 1.5 * (layer.lora_B[t] @ layer.lora_A[t]).view(4, 3, 5, 5) for t in range(2))
    assert_close(layer.delta_weight(lam), expected)


def test_merged_weight_formula():
    torch.manual_seed(0)
    layer = LowRankPreferenceLayer(nn.Linear(4, 3), num_tasks=2, rank=1, scale=2.0)
    _randomize(layer)
    lam = torch.tensor([0.25, 0.75])
    expected = layer.base_layer.weight + 2.0 * sum(lam[t] * layer.lora_B[t] @ layer.lora_A[t] for t in range(2))
    assert_close(layer.merged_weight(lam), expected)


def test_starts_at_base_network():
    torch.manual_seed(0)
    base = nn.Linear(5, 4)
    layer = LowRankPreferenceLayer(base, num_tasks=2, rank=3, scale=1.0)
    x = torch.randn(8, 5)
    layer.preference = torch.tensor([0.9, 0.1])
    assert_close(layer(x), base(x))
    assert layer.lora_A.abs().sum() > 0 and layer.lora_B.abs().sum() == 0


@pytest.mark.parametrize("m,n,tasks,rank", [(320, 50, 2, 1), (64, 32, 3, 4)])
def test_parameter_count(m, n, tasks, rank):
    layer = LowRankPreferenceLayer(nn.Linear(m, n, bias=False), tasks, rank, 1.0)
    assert count_parameters(layer) == m * n + tasks * rank * (m + n)


def test_no_preference_is_a_clear_error():
    layer = LowRankPreferenceLayer(nn.Linear(3, 3), 2, 1, 1.0)
    with pytest.raises(RuntimeError, match="no preference set"):
        layer(torch.randn(1, 3))


def test_injection_targets_encoder_by_default_and_heads_on_request():
    net = lenet(2)
    assert find_targets(net) == ["encoder.0", "encoder.3", "encoder.7", "heads.0.0", "heads.0.2",
                                 "heads.1.0", "heads.1.2"]
    model = PaLoRA(PaLoRAConfig(adapt_heads=False), 2).build_model(lenet(2))
    assert len(model.preference_layers()) == 3
    model = PaLoRA(PaLoRAConfig(), 2).build_model(lenet(2))  # the paper's: every layer, heads included
    assert len(model.preference_layers()) == 7
    model = PaLoRA(PaLoRAConfig(target_modules=[r"encoder\.7"]), 2).build_model(lenet(2))
    assert len(model.preference_layers()) == 1
    with pytest.raises(ValueError, match="matched none"):
        find_targets(lenet(2), ["nothing"])
    assert inject(nn.Sequential(nn.Linear(2, 2)), [], lambda m: m) == []


def test_palora_lenet_overhead_matches_formula():
    from pareto_ray.config import ModelConfig

    _, model, reference = build_model(ModelConfig(backbone="lenet"), PaLoRAConfig(rank=1), 2)
    extra = count_parameters(model) - count_parameters(reference)
    # LoRA's kernel-shaped conv adapters (A [r·k, in·k], B [out·k, r·k]) on every layer, T = 2, r = 1:
    # conv1 5·5 + 50·5, conv2 5·50 + 100·5, fc 320 + 50, per head 50 + 50 and 50 + 10
    assert extra == 2 * ((25 + 250) + (250 + 500) + (320 + 50) + 2 * ((50 + 50) + (50 + 10))) == 3_430
    assert extra / count_parameters(reference) == pytest.approx(0.125, abs=5e-4)  # PaLoRA §5.1: 12.5%
    _, channel, _ = build_model(ModelConfig(backbone="lenet"), PaLoRAConfig(conv_style="channel", adapt_heads=False), 2)
    # r-channel conv adapters on the encoder: conv1 fan_in 25, out 10; conv2 fan_in 250, out 20; fc 320 -> 50
    assert count_parameters(channel) - count_parameters(reference) == 2 * ((25 + 10) + (250 + 20) + (320 + 50))


@pytest.mark.parametrize("backbone", [lenet, mlp])
def test_model_forward_paths_agree(backbone):
    torch.manual_seed(0)
    model = PaLoRA(PaLoRAConfig(rank=2, adapt_heads=True), 2).build_model(backbone(2))
    for layer in model.preference_layers():
        _randomize(layer)
    x = torch.randn(5, 1, 28, 28)
    rays = torch.tensor([[0.1, 0.9], [0.5, 0.5], [1.0, 0.0]])
    merged = model(x, rays)
    per_sample = model(x, rays, per_sample=True)
    for a, b in zip(merged, per_sample):
        assert a.shape == (3, 5, 10)
        assert_close(a, b)
    # a different λ gives a different network
    assert not torch.allclose(merged[0][0], merged[0][2], atol=1e-3)


def test_per_sample_path_follows_weight_updates_without_autograd():
    """The per-sample path caches W and A stacked when autograd is off; an in-place update must reach it."""
    torch.manual_seed(0)
    layer = LowRankPreferenceLayer(nn.Conv2d(3, 5, 3, padding=1), num_tasks=2, rank=1, scale=1.0, conv_style="channel")
    _randomize(layer)
    x, prefs = torch.randn(4, 3, 6, 6), torch.tensor([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0], [0.3, 0.7]])
    layer.preference = prefs
    with torch.no_grad():
        before = layer(x)
        layer.lora_A.mul_(2.0)
        layer.base_layer.weight.add_(0.1)
        after = layer(x)
    assert not torch.allclose(before, after)
    merged = []
    for i in range(4):
        layer.preference = prefs[i]
        merged.append(layer(x[i:i + 1]))
    assert_close(after, torch.cat(merged).detach())
    layer.preference = prefs
    layer(x).sum().backward()  # with autograd the stacked weights are built per call: gradients reach W and A
    assert layer.lora_A.grad is not None and layer.base_layer.weight.grad is not None
