"""Backbones × methods: one training step on tiny random data, merged vs per-sample agreement in eval mode,
parameter counts against the papers', a transformer through model.factory, and unadaptable targets."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from tolerance import assert_close
from torch import nn
from torchvision.models import VisionTransformer

from pareto_ray.config import ModelConfig
from pareto_ray.layers import AdaptedAttention, find_targets
from pareto_ray.loop import build_optimizer, global_task_losses, train_step
from pareto_ray.methods import METHODS, build_model
from pareto_ray.models import MultiTaskNet, count_parameters
from pareto_ray.tasks import Task

FACES = [Task("age", "regression", loss="huber", reference=0.5), Task("gender", "classification", 2),
         Task("race", "classification", 5)]
SCENES = [Task("semantic", "segmentation", 7), Task("depth", "depth")]
NYU = [Task("semantic", "segmentation", 13), Task("depth", "depth"), Task("normal", "normals", 3)]
CASES = {  # backbone → tasks, a small input of the kind the papers use, model fields
    "lenet": ([Task("left", "classification", 10), Task("right", "classification", 10)], (1, 28, 28), {}),
    "mlp": ([Task("rich", "binary"), Task("torque", "regression", 2)], (21,), {"hidden": [32]}),
    "resnet18": (FACES, (3, 32, 32), {}),
    "resnet18_mtl": (FACES, (3, 32, 32), {"dropout": 0.1}),
    "vgg16": ([Task(f"superclass_{i}", "classification", 5) for i in range(3)], (3, 32, 32), {}),
    "segnet": (SCENES, (3, 32, 64), {}),
}
STEP_METHODS = ["ls", "palora", "pamal", "phn_lora"]


def targets(tasks: list[Task], n: int, shape: tuple[int, ...]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    h, w = shape[1:] if len(shape) == 3 else (1, 1)
    out = []
    for t in tasks:
        if t.kind == "classification":
            out.append(torch.randint(0, t.outputs, (n,), generator=g))
        elif t.kind == "binary":
            out.append(torch.randint(0, 2, (n,), generator=g).float())
        elif t.kind == "regression":
            out.append(torch.randn(n, t.outputs, generator=g) if t.outputs > 1 else torch.randn(n, generator=g))
        elif t.kind == "segmentation":
            out.append(torch.randint(-1, t.outputs, (n, h, w), generator=g))
        elif t.kind == "depth":
            out.append(torch.rand(n, 1, h, w, generator=g))
        else:
            out.append(nn.functional.normalize(torch.randn(n, 3, h, w, generator=g), dim=1))
    return out


@pytest.mark.parametrize("method", STEP_METHODS)
@pytest.mark.parametrize("backbone", list(CASES))
def test_one_step_and_the_two_forward_paths_agree(backbone, method):
    tasks, shape, fields = CASES[backbone]
    torch.manual_seed(0)
    method_obj, model, _ = build_model(ModelConfig(backbone=backbone, **fields), METHODS[method][1](), tasks, shape)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, "adam", 1e-3)
    x = torch.randn(2, *shape)
    loss, losses = train_step(model, method_obj, optimizer, x, targets(tasks, 2, shape), 0.5, False,
                              global_task_losses(tasks))
    assert torch.isfinite(losses).all() and losses.shape[1] == len(tasks)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # the step moved weights
    model.eval()
    rays = torch.tensor([[1.0] + [0.0] * (len(tasks) - 1), [1 / len(tasks)] * len(tasks)])
    with torch.no_grad():
        merged, per_sample = model(x, rays), model(x, rays, per_sample=True)
    for task, a, b in zip(tasks, merged, per_sample):
        assert a.shape == b.shape == (2, 2, task.head_outputs, *(shape[1:] if task.dense else ()))
        if backbone == "segnet":
            # max-pool indices reused by unpooling flip on near-ties between the two (equal up to rounding)
            # computations, so compare the bulk of the outputs rather than every pixel
            rel = ((a - b).abs() / a.abs().max()).flatten()
            assert rel.median() < 1e-5 and (rel < 1e-4).float().mean() > 0.95
        else:
            assert_close(a, b, rtol=1e-4)


def test_parameter_counts_match_the_papers():
    def params(backbone: str, method: str, tasks: list[Task], shape: tuple[int, ...], **kw) -> int:
        return count_parameters(build_model(ModelConfig(backbone=backbone), METHODS[method][1](**kw), tasks, shape)[1])

    # UTKFace's ResNet-18 (3 tasks, 64×64): LORPMAN Tab. 2 gives COSMOS 11.2M, PaMaL 33.6M, LORPMAN (r = 64) 24.0M
    base = params("resnet18_mtl", "ls", FACES, (3, 64, 64))
    assert round(base / 1e6, 1) == 11.2
    assert round(params("resnet18_mtl", "pamal", FACES, (3, 64, 64)) / 1e6, 1) == 33.6
    assert round(params("resnet18_mtl", "lorpman", FACES, (3, 64, 64), rank=64) / 1e6, 1) == 24.1  # paper: 24.0
    # CityScapes' SegNet: PaLoRA r = 4 adds 4.2%, PaMaL 100% (PaLoRA Tab. 1); NYUv2's three tasks 6.3% and 200% (Tab. 2)
    for tasks, shape, palora, pamal in ((SCENES, (3, 128, 256), 4.2, 100), (NYU, (3, 288, 384), 6.3, 200)):
        seg = params("segnet", "ls", tasks, shape)
        assert seg > 25e6  # PaLoRA §5.3: "> 25M"
        assert round(100 * (params("segnet", "palora", tasks, shape, rank=4) - seg) / seg, 1) == palora
        assert round(100 * (params("segnet", "pamal", tasks, shape) - seg) / seg) == pamal


def _tiny_vit(tasks: list[Task], input_shape: tuple[int, ...]) -> MultiTaskNet:
    vit = VisionTransformer(image_size=input_shape[1], patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    vit.heads = nn.Identity()
    return MultiTaskNet(vit, [nn.Linear(32, t.head_outputs) for t in tasks])


@pytest.fixture
def vit_factory(monkeypatch):
    module = types.ModuleType("tiny_vit_factory")
    module.build = _tiny_vit
    monkeypatch.setitem(sys.modules, "tiny_vit_factory", module)
    return "tiny_vit_factory:build"


@pytest.mark.parametrize("method", ["palora", "lorpman", "phn_lora", "pamal"])
def test_a_vision_transformer_trains_through_the_attention_adapter(vit_factory, method):
    tasks = [Task("digit", "classification", 10), Task("odd", "binary")]
    torch.manual_seed(0)
    method_obj, model, reference = build_model(ModelConfig(factory=vit_factory), METHODS[method][1](), tasks, (3, 32, 32))
    attention = [m for m in model.modules() if isinstance(m, AdaptedAttention)]
    assert len(attention) == 2  # both encoder blocks' self-attention, packed q/k/v and output projections
    optimizer = build_optimizer(model, "adam", 1e-2)
    x, y = torch.randn(4, 3, 32, 32), [torch.randint(0, 10, (4,)), torch.randint(0, 2, (4,)).float()]
    for _ in range(2):
        train_step(model, method_obj, optimizer, x, y, 0.5, True, global_task_losses(tasks))
    model.eval()
    rays = torch.tensor([[1.0, 0.0], [0.3, 0.7]])
    with torch.no_grad():
        merged, per_sample = model(x, rays), model(x, rays, per_sample=True)
    for a, b in zip(merged, per_sample):
        assert_close(a, b, rtol=1e-4)
    assert not torch.allclose(merged[0][0], merged[0][1])  # λ changes the attention's projections
    assert count_parameters(model) > count_parameters(reference)


def test_targets_that_cannot_be_adapted_are_named():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 2, 2), nn.Flatten())
    with pytest.raises(TypeError, match=r"1 \(ConvTranspose2d\)"):
        find_targets(net, ["1"])
    grouped = MultiTaskNet(nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten()), [nn.Linear(4, 2), nn.Linear(4, 2)])
    with pytest.raises(ValueError, match=r"cannot adapt encoder\.0 \(Conv2d\): grouped"):
        METHODS["palora"][0](METHODS["palora"][1](), 2).build_model(grouped)
    with pytest.raises(ValueError, match=r"\.encoder \(shared\) and \.heads"):
        build_model(ModelConfig(factory="torch.nn:Identity"), METHODS["palora"][1](), 2)
