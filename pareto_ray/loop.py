"""The training loop every method shares; it knows nothing of Ray.

A step: the method's rays for progress τ → one forward of the batch under all
rays (merged weights per ray, or one per-sample batch) → the ``[M, T]`` task
losses → the method's backward (one backward of its scalar loss, or its own
gradient combination) → gradients of the parameters frozen at τ dropped →
optimizer step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from pareto_ray import tasks as task_kinds
from pareto_ray.distributed import all_reduce_mean
from pareto_ray.methods.base import Method
from pareto_ray.splits import Split
from pareto_ray.tasks import Task, classification_tasks

#: ``criterion(outputs, targets)`` → the ``[M, T]`` task losses of a step.
Criterion = Callable[[list[torch.Tensor], Any], torch.Tensor]


def task_losses(outputs: list[torch.Tensor], targets: torch.Tensor | list[torch.Tensor],
                tasks: list[Task] | None = None) -> torch.Tensor:
    """``[M, T]``: ray m's mean loss on task t over the labelled entries of this worker's batch.

    ``targets``: one tensor per task, or ``[N, T]`` class labels; ``tasks`` default to C-way classification.
    """
    if isinstance(targets, torch.Tensor):
        targets = list(targets.unbind(1))
    tasks = tasks or classification_tasks(len(outputs), outputs[0].shape[-1])
    return task_kinds.task_losses(tasks, outputs, targets)


def global_task_losses(tasks: list[Task]) -> Criterion:
    """The criterion of a step over the *global* batch: each task's loss sum divided by the mean number of
    labelled entries per worker (all-reduced; a no-op on one worker).

    DDP averages the workers' gradients, so this equals the loss of one worker holding the whole global
    batch even when workers see different numbers of labels (missing labels), as the sharding promises.
    """
    def criterion(outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        sums, counts = task_kinds.loss_terms(tasks, outputs, targets)
        return sums / all_reduce_mean(counts.detach().clone()).clamp_min(1)

    return criterion


def shard_batches(num_samples: int, global_batch: int, epoch: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> Iterator[torch.Tensor]:
    """Index batches of this rank's shard for one epoch.

    Every rank draws the same seeded permutation; global batch b is
    ``perm[b·B:(b+1)·B]`` and rank r takes its every ``world_size``-th sample,
    so W workers with B/W samples each see exactly the global batch one worker
    with B samples sees.  The last incomplete global batch is dropped.
    """
    if global_batch % world_size:
        raise ValueError(f"global batch {global_batch} is not divisible by {world_size} workers")
    if num_samples < global_batch:
        raise ValueError(f"only {num_samples} training samples for a global batch of {global_batch}: "
                         f"lower train.batch_size or raise data.max_train")
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(num_samples, generator=g)
    for b in range(num_samples // global_batch):
        yield perm[b * global_batch:(b + 1) * global_batch][rank::world_size]


def train_step(model: nn.Module, method: Method, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: Any, progress: float, per_sample: bool, criterion: Criterion = task_losses,
               ) -> tuple[float, torch.Tensor]:
    """One optimizer step; returns (scalar loss, detached ``[M, T]`` task losses).

    ``criterion(outputs, y)`` gives the ``[M, T]`` task losses (classification cross-entropy on ``[N, T]``
    labels by default; training passes ``global_task_losses(tasks)``, the toy problems their objectives).
    """
    rays = method.train_rays(progress).to(x.device)
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    with model.no_sync() if ddp and method.combines_gradients else contextlib.nullcontext():
        outputs = model(x, rays, per_sample=per_sample)
        losses = criterion(outputs, y)
        optimizer.zero_grad(set_to_none=True)
        loss = method.backward(losses, rays, _unwrap(model), progress)
    for p in method.frozen_parameters(progress):
        p.grad = None
    optimizer.step()
    return loss.item(), losses.detach()


def train_epoch(model: nn.Module, method: Method, optimizer: torch.optim.Optimizer, split: Split, epoch: int,
                epochs: int, global_batch: int, seed: int, device: torch.device | str = "cpu", rank: int = 0,
                world_size: int = 1, per_sample: bool = False, tasks: list[Task] | None = None) -> dict[str, float]:
    """One pass over this rank's shard; τ runs from epoch/epochs to (epoch+1)/epochs.

    ``tasks`` default to 10-way classification, one task per target (the MultiMNIST family).
    """
    model.train()
    criterion = global_task_losses(tasks or classification_tasks(len(split.targets)))
    batches = list(shard_batches(len(split), global_batch, epoch, seed, rank, world_size))
    total, task_sum = 0.0, None
    for i, idx in enumerate(batches):
        progress = (epoch + i / len(batches)) / epochs
        x = split.inputs(device, idx)
        y = split.targets_at(idx, device)
        loss, losses = train_step(model, method, optimizer, x, y, progress, per_sample, criterion)
        total += loss
        mean_losses = losses.mean(0)
        task_sum = mean_losses if task_sum is None else task_sum + mean_losses
    out = {"train_loss": total / len(batches)}
    for t, v in enumerate((task_sum / len(batches)).tolist()):
        out[f"train_loss_{t + 1}"] = v
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    params = param_groups(model, lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: expected adam or sgd")


def step_learning_rate(optimizer: torch.optim.Optimizer, epoch: int, every: int | None, gamma: float) -> None:
    """StepLR as a function of the epoch: each group's rate is its first rate × ``gamma ** (epoch // every)``.

    Stateless (the first rate travels in the optimizer's state as ``initial_lr``), so a run resumed from a
    checkpoint continues the schedule where it was; ``every=None`` leaves the rates alone.
    """
    if every is None:
        return
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * gamma ** (epoch // every)


def param_groups(model: nn.Module, lr: float) -> list[dict]:
    """Trainable parameters grouped by learning rate.

    A module may set ``lr_multiplier`` for its own parameters (PaMaL's
    ensemble layers train at T× the base rate); all others use ``lr``.
    """
    multiplier: dict[nn.Parameter, float] = {}
    for module in model.modules():
        scale = getattr(module, "lr_multiplier", None)
        if scale is not None:
            for p in module.parameters(recurse=False):
                multiplier[p] = float(scale)
    groups: dict[float, list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(multiplier.get(p, 1.0), []).append(p)
    return [{"params": ps, "lr": lr * scale} for scale, ps in groups.items()]
