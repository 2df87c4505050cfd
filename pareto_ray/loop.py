"""The training loop every method shares; it knows nothing of Ray.

A step: the method's rays for progress τ → one forward of the batch under all
rays (merged weights per ray, or one per-sample batch) → the ``[M, T]`` task
losses → the method's backward (one backward of its scalar loss, or its own
gradient combination) → gradients of the parameters frozen at τ dropped →
optimizer step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
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


#: ``train.precision`` → the autocast dtype of the forward (None: plain float32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_step(method: Method, precision: str = "fp32", grad_accumulation: int = 1,
               device: torch.device | str = "cpu") -> None:
    """Refuse what the step cannot do, naming the fix.

    * ``fp16`` needs CUDA (a GradScaler keeps its gradients from underflowing; float16 arithmetic on most CPUs
      is emulated and slower than float32): use ``bf16`` on CPU;
    * a gradient-combining method (MGDA, Pareto MTL, EPO, PaMaL gradient balancing) solves over the task
      gradients of the whole batch, so it takes no accumulation steps, and no fp16 (its per-task gradients are
      taken from the unscaled float32 losses, which fp16's loss scaling would have to enter): use a larger
      ``train.batch_size`` or more workers, and ``bf16``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown train.precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if grad_accumulation < 1:
        raise ValueError(f"train.grad_accumulation must be >= 1, got {grad_accumulation}")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise ValueError("train.precision=fp16 needs a CUDA device (its GradScaler); on CPU use train.precision=bf16 "
                         "(or fp32)")
    if method.combines_gradients and grad_accumulation > 1:
        raise ValueError(f"method {method.name} combines per-task gradients over the whole batch, so it cannot "
                         f"accumulate them over train.grad_accumulation={grad_accumulation} steps: set "
                         f"train.grad_accumulation=1 (raise train.batch_size or ray.num_workers instead)")
    if method.combines_gradients and precision == "fp16":
        raise ValueError(f"method {method.name} combines per-task gradients, which fp16's loss scaling does not "
                         f"reach: use train.precision=bf16 (no scaling needed) or fp32")


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The forward's autocast context for ``train.precision`` (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 on CUDA (kept across epochs by the caller), else None."""
    if precision == "fp16" and torch.device(device).type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def optimizer_step(model: nn.Module, method: Method, optimizer: torch.optim.Optimizer,
                   micro_batches: list[tuple[torch.Tensor, Any]], progress: float, per_sample: bool,
                   criterion: Criterion = task_losses, precision: str = "fp32",
                   scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over ``k = len(micro_batches)`` accumulation steps; returns detached tensors on the
    device (the scalar loss and the ``[M, T]`` task losses, each the mean over the micro-batches) — nothing
    here reads a value back to the host, so a step of a method that needs no host value does not sync.

    All micro-batches train on the same rays (drawn once for the step).  Each adds ``loss / k`` to ``.grad``;
    DDP all-reduces only on the last one (``no_sync`` before), so k micro-batches of B/k give the step one
    batch of B gives when the loss is linear in the batch's mean task losses (LS, PaLoRA, LORPMAN, PHN with LS)
    and every micro-batch holds the same number of labelled entries; terms non-linear in the losses (COSMOS'
    cosine, PaMaL's multi-forward and loss balancing, PHN-LoRA's HVI) are averaged over the micro-batches.
    Under ``bf16``/``fp16`` the forward runs in autocast and the task losses in float32 from float32 outputs,
    so gradient-combining methods take float32 per-task gradients (their solvers then work in float64).
    """
    k = len(micro_batches)
    device = micro_batches[0][0].device
    rays = method.train_rays(progress).to(device)
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    net = _unwrap(model)
    optimizer.zero_grad(set_to_none=True)
    total, task_sum = None, None
    for j, (x, y) in enumerate(micro_batches):
        sync = j == k - 1 and not method.combines_gradients
        with model.no_sync() if ddp and not sync else contextlib.nullcontext():
            with autocast(precision, device):
                outputs = model(x, rays, per_sample=per_sample)
            if precision != "fp32":
                outputs = [o.float() for o in outputs]
            losses = criterion(outputs, y)
            if method.combines_gradients:  # k == 1 (check_step)
                loss = method.backward(losses, rays, net, progress)
            else:
                loss = method.loss(losses, rays, net)
                scaled = loss / k if k > 1 else loss
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total = loss.detach() if total is None else total + loss.detach()
        task_sum = losses.detach() if task_sum is None else task_sum + losses.detach()
    for p in method.frozen_parameters(progress):
        p.grad = None
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return (total / k, task_sum / k) if k > 1 else (total, task_sum)


def split_batch(x: torch.Tensor, y: Any, k: int) -> list[tuple[torch.Tensor, Any]]:
    """``k`` equal micro-batches of ``(x, y)`` (``y``: a tensor, a list of per-task tensors, or None)."""
    if k == 1:
        return [(x, y)]
    if x.shape[0] % k:
        raise ValueError(f"a batch of {x.shape[0]} samples does not split into train.grad_accumulation={k} equal "
                         f"micro-batches: make the per-worker batch divisible by {k}")
    xs = x.tensor_split(k)
    if y is None:
        return [(part, None) for part in xs]
    if isinstance(y, torch.Tensor):
        return list(zip(xs, y.tensor_split(k)))
    parts = [t.tensor_split(k) for t in y]
    return [(xs[j], [p[j] for p in parts]) for j in range(k)]


def train_step(model: nn.Module, method: Method, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: Any, progress: float, per_sample: bool, criterion: Criterion = task_losses,
               precision: str = "fp32", grad_accumulation: int = 1) -> tuple[float, torch.Tensor]:
    """One optimizer step; returns (scalar loss, detached ``[M, T]`` task losses).

    ``criterion(outputs, y)`` gives the ``[M, T]`` task losses (classification cross-entropy on ``[N, T]``
    labels by default; training passes ``global_task_losses(tasks)``, the toy problems their objectives).
    Reads the loss back to the host (one sync); ``train_epoch`` uses ``optimizer_step``, which does not.
    """
    check_step(method, precision, grad_accumulation, x.device)
    loss, losses = optimizer_step(model, method, optimizer, split_batch(x, y, grad_accumulation), progress,
                                  per_sample, criterion, precision, grad_scaler(precision, x.device))
    return loss.item(), losses


def train_epoch(model: nn.Module, method: Method, optimizer: torch.optim.Optimizer, split: Split, epoch: int,
                epochs: int, global_batch: int, seed: int, device: torch.device | str = "cpu", rank: int = 0,
                world_size: int = 1, per_sample: bool = False, tasks: list[Task] | None = None,
                precision: str = "fp32", grad_accumulation: int = 1,
                scaler: torch.amp.GradScaler | None = None,
                streamed: tuple[Iterable[tuple[torch.Tensor, Any]], int] | None = None) -> dict[str, float]:
    """One pass over this rank's shard; τ runs from epoch/epochs to (epoch+1)/epochs.

    ``tasks`` default to 10-way classification, one task per target (the MultiMNIST family).  Each global
    batch is one optimizer step of ``grad_accumulation`` micro-batches per worker.  The step losses stay on
    the device and are read back once, at the end of the epoch.  ``scaler``: fp16's GradScaler on CUDA
    (``grad_scaler``; made here for the epoch when not given).  ``streamed``: ``(batches, steps)``, this
    worker's ``(x, targets)`` batches of B/W samples already on the device (``training.streaming``) and how
    many there are, instead of ``split``'s samples (then ``split`` is not read).
    """
    check_step(method, precision, grad_accumulation, device)
    if scaler is None:
        scaler = grad_scaler(precision, device)
    model.train()
    criterion = global_task_losses(tasks or classification_tasks(len(split.targets)))
    if global_batch % (world_size * grad_accumulation):
        raise ValueError(f"global batch {global_batch} is not divisible by {world_size} workers × "
                         f"{grad_accumulation} accumulation steps")
    if streamed is None:
        indices = list(shard_batches(len(split), global_batch, epoch, seed, rank, world_size))
        steps = len(indices)
        batches = ([(split.inputs(device, part), split.targets_at(part, device))
                    for part in idx.tensor_split(grad_accumulation)] for idx in indices)
    else:
        source, steps = streamed
        batches = (split_batch(x, y, grad_accumulation) for x, y in source)
    total, task_sum, done = None, None, 0
    for i, micro in enumerate(batches):
        if i == steps:
            break
        progress = (epoch + i / steps) / epochs
        loss, losses = optimizer_step(model, method, optimizer, micro, progress, per_sample, criterion, precision,
                                      scaler)
        mean_losses = losses.mean(0)
        total = loss if total is None else total + loss
        task_sum = mean_losses if task_sum is None else task_sum + mean_losses
        done += 1
    if done != steps:
        raise RuntimeError(f"the epoch's data ended after {done} of {steps} steps")
    values = (torch.cat([total.view(1), task_sum]) / steps).tolist()  # the epoch's one read-back
    out = {"train_loss": values[0]}
    for t, v in enumerate(values[1:]):
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
