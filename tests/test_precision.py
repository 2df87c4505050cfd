"""The step under train.precision and train.grad_accumulation: autocast, float32 task gradients, refusals, and
k accumulation steps of B/k equal one step of B."""

import math
import sys

import gloo
import pytest
import torch
from tolerance import assert_close, assert_states_close
from torch import nn

from pareto_ray.config import DataConfig, ModelConfig, parse_config
from pareto_ray.data import load_dataset
from pareto_ray.loop import build_optimizer, check_step, optimizer_step, split_batch, train_epoch, train_step
from pareto_ray.methods import LSConfig, PaLoRAConfig, build_model, gradients, pamal
from pareto_ray.methods.cosmos import COSMOSConfig
from pareto_ray.methods.lorpman import LORPMANConfig
from pareto_ray.methods.mgda import MGDAConfig
from pareto_ray.methods.pamal import PaMaLConfig
from pareto_ray.methods.pareto_mtl import ParetoMTLConfig
from pareto_ray.methods.phn import PHNConfig
from pareto_ray.schema import ConfigError

MLP = ModelConfig(backbone="mlp", hidden=32, head_hidden=16)


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n, 2), generator=g)


def test_bf16_forward_runs_in_autocast_and_the_losses_in_float32():
    torch.manual_seed(0)
    method, model, _ = build_model(MLP, PaLoRAConfig(rays_per_step=3), 2)
    seen = []
    model.net.encoder.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x, y = _batch()
    ref = [p.detach().clone() for p in model.parameters()]
    loss, losses = train_step(model, method, build_optimizer(model, "sgd", 0.0), x, y, 0.5, False, precision="bf16")
    assert seen and all(d == torch.bfloat16 for d in seen)  # the forward in bf16
    assert losses.dtype == torch.float32 and torch.isfinite(losses).all()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    torch.manual_seed(0)
    method32, model32, _ = build_model(MLP, PaLoRAConfig(rays_per_step=3), 2)
    assert all(torch.equal(a, b) for a, b in zip(ref, model32.parameters()))
    loss32, losses32 = train_step(model32, method32, build_optimizer(model32, "sgd", 0.0), x, y, 0.5, False)
    assert_close(losses, losses32, rtol=5e-2)  # bf16 rounding, same step
    assert loss == pytest.approx(loss32, rel=5e-2)


@pytest.mark.parametrize("method_cfg", [MGDAConfig(), PaMaLConfig(balancing="gradient", rays_per_step=2),
                                        PHNConfig(solver="epo"), ParetoMTLConfig(num_preferences=2)],
                         ids=["mgda", "pamal_gradient", "phn_epo", "pareto_mtl"])
def test_gradient_combining_methods_take_float32_task_gradients_under_bf16(monkeypatch, method_cfg):
    """The per-task gradients every combining method solves over are float32 (from float32 losses), not bf16."""
    seen = []
    real = gradients.task_gradients

    def recording(task_losses, params):
        grads = real(task_losses, params)
        seen.append((task_losses.dtype, grads.dtype))
        return grads

    monkeypatch.setattr(gradients, "task_gradients", recording)
    monkeypatch.setattr(pamal, "task_gradients", recording)
    torch.manual_seed(0)
    method, model, _ = build_model(MLP, method_cfg, 2)
    x, y = _batch()
    loss, _ = train_step(model, method, build_optimizer(model, "sgd", 0.01), x, y, 0.5, False, precision="bf16")
    assert seen and all(d == (torch.float32, torch.float32) for d in seen), seen
    assert math.isfinite(loss)
    weights = getattr(method, "last_weights", None)
    if isinstance(weights, torch.Tensor):  # MGDA's min-norm weights: solved in float64
        assert weights.dtype == torch.float64


def test_refusals_name_the_fix():
    method, _, _ = build_model(MLP, LSConfig(), 2)
    with pytest.raises(ValueError, match="precision=bf16"):
        check_step(method, "fp16", 1, "cpu")
    mgda, _, _ = build_model(MLP, MGDAConfig(), 2)
    with pytest.raises(ValueError, match="grad_accumulation=1"):
        check_step(mgda, "fp32", 2, "cpu")
    with pytest.raises(ValueError, match="bf16"):
        check_step(mgda, "fp16", 1, "cuda")
    check_step(mgda, "bf16", 1, "cpu")
    base = {"train": {"batch_size": 64}, "ray": {"num_workers": 2}}
    with pytest.raises(ConfigError, match="ray.use_gpu=true"):
        parse_config({**base, "train": {"batch_size": 64, "precision": "fp16"}})
    with pytest.raises(ConfigError, match="grad_accumulation=1"):
        parse_config({**base, "method": {"name": "phn", "solver": "epo"}, "train": {"batch_size": 64,
                                                                                   "grad_accumulation": 2}})
    with pytest.raises(ConfigError, match="ray.num_workers × train.grad_accumulation"):
        parse_config({**base, "train": {"batch_size": 64, "grad_accumulation": 3}})
    cfg = parse_config({**base, "method": {"name": "phn"}, "train": {"batch_size": 64, "grad_accumulation": 4,
                                                                     "precision": "bf16"}})
    assert cfg.train.grad_accumulation == 4
    parse_config({**base, "ray": {"num_workers": 2, "use_gpu": True}, "train": {"batch_size": 64, "precision": "fp16"}})


def test_split_batch_keeps_pairs_together():
    x, y = _batch(12)
    parts = split_batch(x, y, 3)
    assert [p[0].shape[0] for p in parts] == [4, 4, 4]
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    listed = split_batch(x, list(y.unbind(1)), 2)
    assert torch.equal(listed[1][1][0], y[6:, 0])
    with pytest.raises(ValueError, match="divisible by 5"):
        split_batch(x, y, 5)


@pytest.mark.parametrize("method_cfg", [LSConfig(), PaLoRAConfig(rays_per_step=3), LORPMANConfig()],
                         ids=["ls", "palora", "lorpman"])
def test_k_accumulation_steps_of_b_over_k_equal_one_step_of_b(method_cfg):
    """On an MLP (no BatchNorm) with SGD: one step of 32 = 4 accumulated micro-batches of 8, to rounding."""
    x, y = _batch(32)
    states = []
    for k in (1, 4):
        torch.manual_seed(0)
        method, model, _ = build_model(MLP, method_cfg, 2)
        opt = build_optimizer(model, "sgd", 0.1)
        for step in range(3):
            loss, losses = optimizer_step(model, method, opt, split_batch(x, y, k), step / 3, False)
        states.append(({n: p.detach().clone() for n, p in model.state_dict().items()}, loss, losses))
    (one, loss1, losses1), (acc, loss4, losses4) = states
    assert_states_close(acc, one, rtol=1e-5)
    assert_close(losses4, losses1, rtol=1e-5)
    assert_close(loss4, loss1, rtol=1e-5)
    torch.manual_seed(0)
    initial = build_model(MLP, method_cfg, 2)[1].state_dict()
    assert any(not torch.allclose(one[k], initial[k]) for k in one)


HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__")


@pytest.mark.parametrize("method_cfg", [LSConfig(), PaLoRAConfig(rays_per_step=3), LORPMANConfig(),
                                        PaMaLConfig(rays_per_step=2), COSMOSConfig(), PHNConfig()],
                         ids=["ls", "palora", "lorpman", "pamal", "cosmos", "phn"])
def test_an_epoch_reads_values_back_to_the_host_once(monkeypatch, method_cfg):
    """No tensor → host read in any step of the methods whose step needs none: one ``tolist`` per epoch.

    (On CUDA each such read is a host–device sync; on CPU the same calls are counted.)"""
    data = load_dataset(DataConfig(max_train=128, max_eval=8))
    torch.manual_seed(0)
    method, model, _ = build_model(MLP, method_cfg, 2)
    opt = build_optimizer(model, "adam", 1e-3)
    calls: list[str] = []

    def reading(name: str, real):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code
            # Adam keeps its step count on the CPU (capturable=False): reading it is no device sync
            if not (caller.co_name == "_get_value" and caller.co_filename.endswith("optim/optimizer.py")):
                calls.append(name)
            return real(self, *args, **kwargs)
        return read

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, reading(name, getattr(torch.Tensor, name)))
    out = train_epoch(model, method, opt, data.train, 0, 1, 32, 0, grad_accumulation=2)
    monkeypatch.undo()
    assert calls == ["tolist"], calls
    assert set(out) == {"train_loss", "train_loss_1", "train_loss_2"} and all(isinstance(v, float) for v in out.values())


def _run(rank: int, world: int, k: int, out: str) -> None:
    torch.manual_seed(0)
    data = load_dataset(DataConfig(max_train=256, max_eval=8))
    method, model, _ = build_model(ModelConfig(backbone="mlp"), PaLoRAConfig(rays_per_step=3), 2)
    wrapped = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = build_optimizer(wrapped, "sgd", 0.05)
    train_epoch(wrapped, method, opt, data.train, 0, 1, 64, seed=0, rank=rank, world_size=world, grad_accumulation=k)
    if rank == 0:
        torch.save({n: v.detach().clone() for n, v in model.state_dict().items()}, out)


def test_two_workers_accumulating_under_no_sync_match_one_worker(tmp_path):
    """2 DDP workers × 2 accumulation steps (no_sync on the first) = 1 worker, 1 step of the same global batch."""
    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    gloo.run(_run, 1, 1, one)
    gloo.run(_run, 2, 2, two)
    assert_states_close(torch.load(two), torch.load(one))
