"""The shared loop: sharding, one backward per step, and DDP equivalence."""

import gloo
import pytest
import torch
from tolerance import assert_close, assert_states_close
from torch import nn

from pareto_ray.config import DataConfig, ModelConfig
from pareto_ray.data import load_dataset
from pareto_ray.loop import build_optimizer, shard_batches, task_losses, train_epoch, train_step
from pareto_ray.methods import LSConfig, PaLoRAConfig, build_model


def test_shards_partition_the_global_batch():
    single = list(shard_batches(100, 32, epoch=3, seed=7))
    shards = [list(shard_batches(100, 32, epoch=3, seed=7, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == 3  # the incomplete last batch is dropped
    for b, batch in enumerate(single):
        union = torch.cat([shards[0][b], shards[1][b]])
        assert sorted(union.tolist()) == sorted(batch.tolist())
    assert not torch.equal(single[0], next(shard_batches(100, 32, epoch=4, seed=7)))
    with pytest.raises(ValueError, match="not divisible"):
        next(shard_batches(100, 33, 0, 0, 0, 2))
    with pytest.raises(ValueError, match="lower train.batch_size"):
        next(shard_batches(10, 32, 0, 0))


def test_task_losses_shape_and_values():
    logits = [torch.randn(3, 4, 10), torch.randn(3, 4, 10)]
    y = torch.randint(0, 10, (4, 2))
    losses = task_losses(logits, y)
    assert losses.shape == (3, 2)
    expected = nn.functional.cross_entropy(logits[1][2], y[:, 1])
    assert_close(losses[2, 1], expected)


def test_step_uses_every_ray_in_one_backward():
    torch.manual_seed(0)
    method, model, _ = build_model(ModelConfig(backbone="mlp", hidden=16), PaLoRAConfig(rays_per_step=3), 2)
    opt = build_optimizer(model, "sgd", 0.0)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8, 2))
    loss, losses = train_step(model, method, opt, x, y, progress=0.5, per_sample=False)
    rays = method.train_rays(0.5)
    assert losses.shape == (3, 2)
    assert loss == pytest.approx((rays * losses).sum().item(), rel=1e-6)
    assert all(p.grad is not None for p in model.parameters())


def test_palora_and_ls_learn_multidigits():
    data = load_dataset(DataConfig(max_train=1024, max_eval=256))
    for method_cfg in (LSConfig(), PaLoRAConfig(rays_per_step=3)):
        torch.manual_seed(0)
        method, model, _ = build_model(ModelConfig(), method_cfg, 2)
        opt = build_optimizer(model, "adam", 3e-3)
        first = train_epoch(model, method, opt, data.train, 0, 3, 64, 0)
        for epoch in (1, 2):
            last = train_epoch(model, method, opt, data.train, epoch, 3, 64, 0)
        assert last["train_loss_1"] < 0.8 * first["train_loss_1"], method_cfg.name


def _run(rank: int, world: int, method_cfg, per_sample: bool, out: str) -> None:
    torch.manual_seed(0)
    data = load_dataset(DataConfig(max_train=256, max_eval=8))
    # MLP, not LeNet: max-pooling over flat image regions breaks exact ties by
    # float rounding, which legitimately differs between batch sizes.
    method, model, _ = build_model(ModelConfig(backbone="mlp"), method_cfg, 2)
    wrapped = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = build_optimizer(wrapped, "sgd", 0.05)
    train_epoch(wrapped, method, opt, data.train, 0, 1, 64, seed=0, rank=rank, world_size=world,
                per_sample=per_sample)
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out)


@pytest.mark.parametrize("method_cfg,per_sample", [(PaLoRAConfig(rays_per_step=3), False),
                                                    (PaLoRAConfig(rays_per_step=3), True),
                                                    (LSConfig(), False)])
def test_two_workers_match_one_worker_on_the_same_global_batch(tmp_path, method_cfg, per_sample):
    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    gloo.run(_run, 1, method_cfg, per_sample, one)
    gloo.run(_run, 2, method_cfg, per_sample, two)
    a, b = torch.load(one), torch.load(two)
    torch.manual_seed(0)
    initial = build_model(ModelConfig(backbone="mlp"), method_cfg, 2)[1].state_dict()
    assert_states_close(a, b)
    assert any(not torch.allclose(a[k], initial[k]) for k in a)  # training did move the weights
