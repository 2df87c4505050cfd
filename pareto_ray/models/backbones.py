"""Named backbones: a shared encoder plus one head per task, built for a dataset's tasks and input shape.

Every builder takes the task list and the shape of one input (``[C, H, W]`` or
``[F]``) and returns a ``MultiTaskNet``.  Heads follow the task kind: a linear
head (LeNet and the MLP: their small MLP heads) for classification, binary and
regression, two convolutions for dense tasks (segmentation, depth, normals).

| name | encoder | for |
|---|---|---|
| ``lenet`` | PaMaL's MultiMNIST LeNet (C.1), flatten size from the input | 1×28×28 digits |
| ``mlp`` | ``Linear → ReLU`` × ``len(hidden)``; any input width | tabular data (Census, SARCOS) |
| ``resnet18`` | torchvision's ResNet-18 (7×7 stem, max-pool), random init or ``weights`` | images of any size |
| ``resnet18_mtl`` | the papers' code's ResNet-18: 3×3 stride-1 stem, no max-pool, 2048 features; dropout (D.7) | 64×64 faces |
| ``vgg16`` | VGG-16 with BatchNorm, adaptive pooling → 512 (LORPMAN D.6, after Auto-λ) | CIFAR-100 (any size ≥ 32) |
| ``segnet`` | MTAN's SegNet encoder-decoder (unpooling with the max-pool indices), 64 channels out | CityScapes, NYUv2 |

A user's own network comes in through ``model.factory``: see ``from_factory``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from pareto_ray.factories import import_object
from pareto_ray.models.preference import MultiTaskNet
from pareto_ray.tasks import Task, as_tasks


def _vector_heads(tasks: list[Task] | int, features: int, hidden: int | None = None) -> list[nn.Module]:
    """One head per task on a feature vector: ``Linear`` (or ``Linear → ReLU → Linear`` with ``hidden``);
    ``tasks`` may be a number of 10-way classification tasks."""
    heads = []
    for task in as_tasks(tasks):
        if task.dense:
            raise ValueError(f"task {task.name!r} ({task.kind}) predicts per pixel: use a dense backbone (segnet) "
                             f"or a model.factory whose heads keep the spatial dimensions")
        out = task.head_outputs
        heads.append(nn.Linear(features, out) if hidden is None else
                     nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, out)))
    return heads


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"backbone {name} takes images [C, H, W]; the data's inputs are {list(input_shape)} "
                         f"(use backbone mlp for vectors)")
    return input_shape  # type: ignore[return-value]


def _features(encoder: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        was = encoder.training
        encoder.eval()
        out = encoder(torch.zeros(1, *input_shape))
        encoder.train(was)
    return int(out.shape[1])


def lenet(tasks: list[Task], input_shape: tuple[int, ...] = (1, 28, 28)) -> MultiTaskNet:
    """PaMaL's MultiMNIST LeNet (shared bottom + one MLP head per task); 27,450 parameters for two 10-way tasks."""
    c, _, _ = _image_shape("lenet", input_shape)
    convs = nn.Sequential(nn.Conv2d(c, 10, 5), nn.MaxPool2d(2), nn.ReLU(),
                          nn.Conv2d(10, 20, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten())
    encoder = nn.Sequential(*convs, nn.Linear(_features(convs, input_shape), 50), nn.ReLU())
    return MultiTaskNet(encoder, _vector_heads(tasks, 50, hidden=50))


def mlp(tasks: list[Task], input_shape: tuple[int, ...] = (1, 28, 28), hidden: int | list[int] = 100,
        head_hidden: int | None = 50) -> MultiTaskNet:
    """``Linear → ReLU`` per entry of ``hidden`` on the flattened input, then one head per task.

    ``hidden: 100`` (an int) keeps the two-layer MLP of 100 units; LORPMAN D.4's Census network is
    ``hidden: [256]`` with linear heads (``head_hidden: null``).
    """
    widths = [hidden, hidden] if isinstance(hidden, int) else list(hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for w in widths:
        layers += [nn.Linear(width, w), nn.ReLU()]
        width = w
    return MultiTaskNet(nn.Sequential(*layers), _vector_heads(tasks, width, hidden=head_hidden))


def _load_weights(module: nn.Module, path: str | None) -> None:
    """Initialize from a local state dict (``.safetensors`` or a PyTorch file); never from a hub."""
    if path is None:
        return
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"model.weights: {p} does not exist (a local state dict; nothing is downloaded)")
    state = load_file(p) if p.suffix == ".safetensors" else torch.load(p, map_location="cpu", weights_only=True)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or len(missing) == len(module.state_dict()):
        raise ValueError(f"model.weights: {p} does not fit the encoder (unexpected {unexpected[:5]}, "
                         f"missing {missing[:5]})")


def resnet18(tasks: list[Task], input_shape: tuple[int, ...] = (3, 64, 64), weights: str | None = None,
             dropout: float = 0.0) -> MultiTaskNet:
    """torchvision's ResNet-18 as the shared encoder (its ``fc`` dropped, 512 features), a linear head per task."""
    from torchvision.models import resnet18 as torchvision_resnet18  # torchvision's import is ~3 s: paid when used

    c, _, _ = _image_shape("resnet18", input_shape)
    net = torchvision_resnet18(weights=None)
    _load_weights(net, weights)
    if c != 3:
        net.conv1 = nn.Conv2d(c, 64, 7, 2, 3, bias=False)
    net.fc = nn.Identity()
    encoder = nn.Sequential(net, nn.Dropout(dropout)) if dropout else net
    return MultiTaskNet(encoder, _vector_heads(tasks, 512))


class ResNetMTL(nn.Module):
    """The ResNet-18 of the papers' code (after Sener & Koltun) for small images.

    3×3 stride-1 stem without max-pool, four stages of two basic blocks (64, 128, 256, 512 channels,
    strides 1, 2, 2, 2), then a 2×2 adaptive average pool and flatten: 2048 features (at 64×64 input that
    is the code's ``avg_pool2d(·, 4)``).  ``dropout`` adds a dropout after the stem, after each block and
    after the pooling (LORPMAN D.7, after Kurin et al.).
    """

    def __init__(self, in_channels: int = 3, dropout: float = 0.0):
        from torchvision.models.resnet import BasicBlock  # torchvision's import is ~3 s: paid when used

        super().__init__()
        drop = (lambda: nn.Dropout(dropout)) if dropout else nn.Identity
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                   drop()]
        width = 64
        for out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for s in (stride, 1):
                down = None
                if s != 1 or width != out:
                    down = nn.Sequential(nn.Conv2d(width, out, 1, s, bias=False), nn.BatchNorm2d(out))
                layers += [BasicBlock(width, out, s, down), drop()]
                width = out
        layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), drop()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def resnet18_mtl(tasks: list[Task], input_shape: tuple[int, ...] = (3, 64, 64), dropout: float = 0.0) -> MultiTaskNet:
    c, _, _ = _image_shape("resnet18_mtl", input_shape)
    return MultiTaskNet(ResNetMTL(c, dropout), _vector_heads(tasks, 2048))


VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def vgg16(tasks: list[Task], input_shape: tuple[int, ...] = (3, 32, 32)) -> MultiTaskNet:
    """VGG-16's 13 convolutions with BatchNorm (Auto-λ's CIFAR-100 network, shared BatchNorm as a shared
    bottom), adaptive average pooling to 512 features, a linear head per task (LORPMAN D.6)."""
    c, _, _ = _image_shape("vgg16", input_shape)
    layers: list[nn.Module] = []
    for v in VGG16_LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            c = v
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return MultiTaskNet(nn.Sequential(*layers), _vector_heads(tasks, 512))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class SegNet(nn.Module):
    """MTAN's SegNet ("split" variant's shared part): five encoder stages (64, 128, 256, 512, 512 channels;
    1, 1, 2, 2, 2 extra convolutions), each max-pooled with indices, five decoder stages unpooling with them;
    output: 64 channels at the input resolution.  Xavier-normal convolutions, as MTAN initializes them."""

    FILTERS = (64, 128, 256, 512, 512)
    EXTRA = (1, 1, 2, 2, 2)

    def __init__(self, in_channels: int = 3):
        super().__init__()
        f = self.FILTERS
        self.encoder_block = nn.ModuleList([_conv_bn_relu(in_channels, f[0])] +
                                           [_conv_bn_relu(f[i], f[i + 1]) for i in range(4)])
        self.conv_block_enc = nn.ModuleList(nn.Sequential(*[_conv_bn_relu(f[i], f[i]) for _ in range(self.EXTRA[i])])
                                            for i in range(5))
        self.decoder_block = nn.ModuleList([_conv_bn_relu(f[0], f[0])] +
                                           [_conv_bn_relu(f[i + 1], f[i]) for i in range(4)])
        # decoder stage k maps f[k] to f[k − 1] channels (f[0] at k = 0), then refines them EXTRA[k] times
        self.conv_block_dec = nn.ModuleList(
            nn.Sequential(*[_conv_bn_relu(f[max(i - 1, 0)], f[max(i - 1, 0)]) for _ in range(self.EXTRA[i])])
            for i in range(5))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices, sizes = [], []
        for i in range(5):
            x = self.conv_block_enc[i](self.encoder_block[i](x))
            sizes.append(x.shape[-2:])
            x, idx = self.pool(x)
            indices.append(idx)
        for i in reversed(range(5)):
            x = self.unpool(x, indices[i], output_size=sizes[i])
            x = self.conv_block_dec[i](self.decoder_block[i](x))
        return x


def dense_head(task: Task, channels: int = 64) -> nn.Module:
    """Two convolutions per task (LORPMAN D.8, MTAN): 3×3 then 1×1 to the task's outputs."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, task.head_outputs, 1))


def segnet(tasks: list[Task], input_shape: tuple[int, ...] = (3, 128, 256)) -> MultiTaskNet:
    tasks = as_tasks(tasks)
    c, h, w = _image_shape("segnet", input_shape)
    if h % 32 or w % 32:
        raise ValueError(f"segnet pools five times: the input's height and width must be multiples of 32, got {h}×{w}")
    heads = [dense_head(t) if t.dense else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                                          nn.Linear(64, t.head_outputs)) for t in tasks]
    return MultiTaskNet(SegNet(c), heads)


BACKBONES: dict[str, Callable[..., MultiTaskNet]] = {
    "lenet": lenet, "mlp": mlp, "resnet18": resnet18, "resnet18_mtl": resnet18_mtl, "vgg16": vgg16, "segnet": segnet,
}


def from_factory(path: str, tasks: list[Task], input_shape: tuple[int, ...], kwargs: dict[str, Any]) -> MultiTaskNet:
    """A user's network: ``function(tasks, input_shape, **model.kwargs)`` from ``model.factory``.

    It returns a ``MultiTaskNet`` or any ``nn.Module`` with an ``encoder`` (the shared part) and ``heads``
    (one module per task, in task order): the methods adapt the encoder's (and, where a method says so, the
    heads') ``nn.Linear``/``nn.Conv2d`` layers, as on the built-in backbones.
    """
    fn = import_object(path, "model.factory")
    net = fn(tasks, tuple(input_shape), **kwargs)
    if isinstance(net, MultiTaskNet):
        return net
    encoder, heads = getattr(net, "encoder", None), getattr(net, "heads", None)
    if not isinstance(encoder, nn.Module) or heads is None:
        raise ValueError(f"model.factory {path!r} returned a {type(net).__name__}: it must be a MultiTaskNet or a "
                         f"module with .encoder (shared) and .heads (one per task)")
    heads = list(heads)
    if len(heads) != len(tasks):
        raise ValueError(f"model.factory {path!r} made {len(heads)} heads for {len(tasks)} tasks")
    return MultiTaskNet(encoder, heads)


def build_backbone(model_cfg: Any, tasks: list[Task], input_shape: tuple[int, ...]) -> MultiTaskNet:
    """The network the config's ``model:`` section names, for these tasks and inputs."""
    if model_cfg.factory:
        return from_factory(model_cfg.factory, tasks, input_shape, dict(model_cfg.kwargs))
    name = model_cfg.backbone
    kwargs: dict[str, Any] = {}
    if name == "mlp":
        kwargs = {"hidden": model_cfg.hidden, "head_hidden": model_cfg.head_hidden}
    elif name == "resnet18":
        kwargs = {"weights": model_cfg.weights, "dropout": model_cfg.dropout}
    elif name == "resnet18_mtl":
        kwargs = {"dropout": model_cfg.dropout}
    return BACKBONES[name](tasks, tuple(input_shape), **kwargs | dict(model_cfg.kwargs))
