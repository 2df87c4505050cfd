"""Tasks: what the model predicts for each objective, its loss, its metrics and which way is better.

A task is a small declared object: a name, a kind, the size of its output and
the metric that forms the Pareto front (with its direction and hypervolume
reference).  Everything a kind does — the loss, the metrics, the missing-label
rule, the width of the head — lives in one ``TaskKind`` per kind:

| kind | output per sample | target per sample | loss | metrics (front metric first) |
|---|---|---|---|---|
| ``classification`` | C logits | class id (int) | cross-entropy | acc ↑, loss ↓ |
| ``binary`` | 1 logit | 0/1 | BCE with logits | acc ↑, loss ↓ |
| ``regression`` | d values | d floats | MSE, Huber or L1 | loss ↓, mae ↓ |
| ``segmentation`` | C×H×W logits | H×W class ids | pixel cross-entropy | miou ↑, pixacc ↑, loss ↓ |
| ``depth`` | 1×H×W | 1×H×W (or H×W) | L1 on valid pixels | abs_err ↓, rel_err ↓, loss ↓ |
| ``normals`` | 3×H×W | 3×H×W unit vectors | 1 − cos, valid pixels | mean_angle ↓, median_angle ↓, within_x ↑, loss ↓ |

**Missing labels.**  A target entry that is NaN (float targets), equals the
task's ``ignore_index`` (integer targets), or — for depth and normals — is
all zeros at a pixel (the MTAN/LibMTL convention for invalid pixels), drops
out of that task's loss and metrics and leaves every other task untouched.  A
batch without any label of a task gives that task a loss of 0 (and no
gradient); an evaluation without any gives NaN metrics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

Kind = Literal["classification", "binary", "regression", "segmentation", "depth", "normals"]
#: Median-angle histogram: bins of this many degrees (the median is exact to half of it).
ANGLE_BIN = 0.05


@dataclass(frozen=True)
class Task:
    """One objective of a multi-task dataset.

    ``outputs``: classes (classification, segmentation) or output values (regression); 1 for binary and
    depth, 3 for normals.  ``front``: the metric that forms the front (default: the kind's first metric),
    ``reference``: its hypervolume reference (default: the kind's).  ``loss``: regression only
    (``mse``, ``huber`` with ``huber_delta``, ``l1``).  ``target_mean``/``target_std``: regression targets
    are stored normalized as (y − mean) / std; predictions are presented in the original units.
    """

    name: str
    kind: Kind
    outputs: int = 1
    loss: Literal["mse", "huber", "l1"] | None = None
    huber_delta: float = 1.0
    ignore_index: int = -1
    front: str | None = None
    reference: float | None = None
    labels: tuple[str, ...] | None = None
    target_mean: float = 0.0
    target_std: float = 1.0

    def __post_init__(self) -> None:
        kind = KINDS.get(self.kind)
        if kind is None:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        kind.check(self)
        if self.front is not None and self.front not in kind.metrics:
            raise ValueError(f"task {self.name!r}: front metric {self.front!r} is not one of the {self.kind} metrics "
                             f"{', '.join(kind.metrics)}")

    @property
    def behaviour(self) -> TaskKind:
        return KINDS[self.kind]

    @property
    def front_metric(self) -> str:
        return self.front or self.behaviour.metrics[0]

    @property
    def front_reference(self) -> float:
        if self.reference is not None:
            return self.reference
        return self.behaviour.references[self.front_metric]

    @property
    def higher_is_better(self) -> bool:
        """Direction of the front metric."""
        return self.front_metric in self.behaviour.higher

    @property
    def head_outputs(self) -> int:
        return self.behaviour.head_outputs(self)

    @property
    def dense(self) -> bool:
        return self.behaviour.dense

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["labels"] = list(self.labels) if self.labels is not None else None
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        d = dict(d)
        if d.get("labels") is not None:
            d["labels"] = tuple(d["labels"])
        return cls(**d)


# --------------------------------------------------------------------------------------------- kinds

class TaskKind:
    """How a kind of task is trained and scored.  Outputs are ``[M, N, ...]`` (M rays), targets ``[N, ...]``."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    higher: ClassVar[frozenset[str]] = frozenset()
    references: ClassVar[dict[str, float]]
    dense: ClassVar[bool] = False

    def check(self, task: Task) -> None:
        if task.outputs < 1:
            raise ValueError(f"task {task.name!r}: outputs must be >= 1, got {task.outputs}")

    def head_outputs(self, task: Task) -> int:
        return task.outputs

    def valid(self, task: Task, target: torch.Tensor) -> torch.Tensor:
        """Mask of labelled target entries (the shape of the per-entry loss)."""
        if target.is_floating_point():
            return ~torch.isnan(target)
        return target != task.ignore_index

    def entry_losses(self, task: Task, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-entry losses ``[M, N, ...]`` (any value where the label is missing: it is masked)."""
        raise NotImplementedError

    def loss_terms(self, task: Task, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the losses over the labelled entries per ray ``[M]``, number of labelled entries)."""
        mask = self.valid(task, target)
        losses = self.entry_losses(task, output, target)
        mask = mask.expand_as(losses[0]) if mask.shape != losses.shape[1:] else mask
        total = torch.where(mask, losses, torch.zeros((), dtype=losses.dtype, device=losses.device))
        return total.flatten(1).sum(1), mask.sum().to(losses.dtype)

    def new_state(self, task: Task, rays: int) -> dict[str, torch.Tensor]:
        """Accumulators for ``rays`` rays over an evaluation."""
        return {"loss_sum": torch.zeros(rays, dtype=torch.float64), "count": torch.zeros(rays, dtype=torch.float64)}

    def update(self, task: Task, state: dict[str, torch.Tensor], output: torch.Tensor, target: torch.Tensor) -> None:
        mask = self.valid(task, target)
        losses = self.entry_losses(task, output, target)
        mask_l = mask.expand_as(losses[0]) if mask.shape != losses.shape[1:] else mask
        state["loss_sum"] += torch.where(mask_l, losses, 0).flatten(1).sum(1).double().cpu()
        state["count"] += float(mask_l.sum())

    def compute(self, task: Task, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {"loss": _ratio(state["loss_sum"], state["count"])}

    def predict(self, task: Task, output: torch.Tensor) -> dict[str, Any]:
        """What a prediction ``[N, ...]`` is, per sample: e.g. the class and its probabilities."""
        raise NotImplementedError


def _ratio(num: torch.Tensor, den: torch.Tensor) -> np.ndarray:
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, math.nan)).numpy()


class Classification(TaskKind):
    name = "classification"
    metrics = ("acc", "loss")
    higher = frozenset({"acc"})
    references = {"acc": 0.0, "loss": 2.0}

    def check(self, task: Task) -> None:
        if task.outputs < 2:
            raise ValueError(f"task {task.name!r}: classification needs outputs >= 2 classes (use kind binary for one "
                             f"logit), got {task.outputs}")

    def entry_losses(self, task: Task, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        m, n = output.shape[:2]
        safe = torch.where(target == task.ignore_index, 0, target).long()
        ce = F.cross_entropy(output.reshape(m * n, *output.shape[2:]), safe.repeat(m, *([1] * (safe.dim() - 1))),
                             reduction="none")
        return ce.view(m, n, *ce.shape[1:])

    def new_state(self, task: Task, rays: int) -> dict[str, torch.Tensor]:
        return super().new_state(task, rays) | {"correct": torch.zeros(rays, dtype=torch.float64)}

    def update(self, task: Task, state: dict[str, torch.Tensor], output: torch.Tensor, target: torch.Tensor) -> None:
        super().update(task, state, output, target)
        hit = (output.argmax(2) == target) & self.valid(task, target)
        state["correct"] += hit.flatten(1).sum(1).double().cpu()

    def compute(self, task: Task, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {"acc": _ratio(state["correct"], state["count"])} | super().compute(task, state)

    def predict(self, task: Task, output: torch.Tensor) -> dict[str, Any]:
        probs = output.softmax(-1)
        return {"classes": probs.argmax(-1), "probabilities": probs}


class Binary(TaskKind):
    name = "binary"
    metrics = ("acc", "loss")
    higher = frozenset({"acc"})
    references = {"acc": 0.0, "loss": 1.0}

    def check(self, task: Task) -> None:
        if task.outputs != 1:
            raise ValueError(f"task {task.name!r}: binary tasks have one logit (outputs 1), got {task.outputs}")

    def _target(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return target.reshape(target.shape[0], *output.shape[2:]) if target.dim() == 1 else target

    def valid(self, task: Task, target: torch.Tensor) -> torch.Tensor:
        mask = super().valid(task, target)
        return mask.unsqueeze(-1) if target.dim() == 1 else mask

    def entry_losses(self, task: Task, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = self._target(output, target).to(output.dtype)
        y = torch.where(torch.isnan(y) | (y == task.ignore_index), 0, y)
        return F.binary_cross_entropy_with_logits(output, y.expand_as(output), reduction="none")

    def new_state(self, task: Task, rays: int) -> dict[str, torch.Tensor]:
        return super().new_state(task, rays) | {"correct": torch.zeros(rays, dtype=torch.float64)}

    def update(self, task: Task, state: dict[str, torch.Tensor], output: torch.Tensor, target: torch.Tensor) -> None:
        super().update(task, state, output, target)
        y = self._target(output, target)
        hit = ((output > 0) == (y > 0.5)) & self.valid(task, target)
        state["correct"] += hit.flatten(1).sum(1).double().cpu()

    def compute(self, task: Task, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {"acc": _ratio(state["correct"], state["count"])} | super().compute(task, state)

    def predict(self, task: Task, output: torch.Tensor) -> dict[str, Any]:
        p = torch.sigmoid(output[..., 0])
        return {"probability": p, "label": (p > 0.5).long()}


class Regression(TaskKind):
    name = "regression"
    metrics = ("loss", "mae")
    references = {"loss": 1.0, "mae": 1.0}

    def check(self, task: Task) -> None:
        super().check(task)
        if task.loss not in (None, "mse", "huber", "l1"):
            raise ValueError(f"task {task.name!r}: regression loss must be mse, huber or l1, got {task.loss!r}")
        if task.target_std <= 0:
            raise ValueError(f"task {task.name!r}: target_std must be > 0, got {task.target_std}")

    def _target(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return target.reshape(target.shape[0], *output.shape[2:]).to(output.dtype)

    def valid(self, task: Task, target: torch.Tensor) -> torch.Tensor:
        mask = ~torch.isnan(target.float())
        return mask.unsqueeze(-1) if target.dim() == 1 else mask

    def entry_losses(self, task: Task, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = self._target(output, target)
        y = torch.where(torch.isnan(y), output.detach()[0], y).expand_as(output)
        if task.loss == "huber":
            return F.huber_loss(output, y, reduction="none", delta=task.huber_delta)
        if task.loss == "l1":
            return (output - y).abs()
        return (output - y).pow(2)

    def new_state(self, task: Task, rays: int) -> dict[str, torch.Tensor]:
        return super().new_state(task, rays) | {"abs_sum": torch.zeros(rays, dtype=torch.float64)}

    def update(self, task: Task, state: dict[str, torch.Tensor], output: torch.Tensor, target: torch.Tensor) -> None:
        super().update(task, state, output, target)
        y = self._target(output, target)
        err = torch.where(self.valid(task, target), (output - y).abs(), 0) * task.target_std  # in the target's units
        state["abs_sum"] += err.flatten(1).sum(1).double().cpu()

    def compute(self, task: Task, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return super().compute(task, state) | {"mae": _ratio(state["abs_sum"], state["count"])}

    def predict(self, task: Task, output: torch.Tensor) -> dict[str, Any]:
        return {"values": output * task.target_std + task.target_mean}


class Segmentation(Classification):
    name = "segmentation"
    metrics = ("miou", "pixacc", "loss")
    higher = frozenset({"miou", "pixacc"})
    references = {"miou": 0.0, "pixacc": 0.0, "loss": 2.0}
    dense = True

    def check(self, task: Task) -> None:
        if task.outputs < 2:
            raise ValueError(f"task {task.name!r}: segmentation needs outputs >= 2 classes, got {task.outputs}")

    def new_state(self, task: Task, rays: int) -> dict[str, torch.Tensor]:
        c = task.outputs
        return {"loss_sum": torch.zeros(rays, dtype=torch.float64), "count": torch.zeros(rays, dtype=torch.float64),
                "correct": torch.zeros(rays, dtype=torch.float64),
                "intersection": torch.zeros(rays, c, dtype=torch.float64), "union": torch.zeros(rays, c, dtype=torch.float64)}

    def update(self, task: Task, state: dict[str, torch.Tensor], output: torch.Tensor, target: torch.Tensor) -> None:
        TaskKind.update(self, task, state, output, target)
        valid = self.valid(task, target)  # [N, H, W]
        pred = output.argmax(2)  # [M, N, H, W]
        state["correct"] += ((pred == target) & valid).flatten(1).sum(1).double().cpu()
        c = task.outputs
        for k in range(c):  # per-class intersection and union over the labelled pixels (mIoU of the whole split)
            p, t = (pred == k) & valid, (target == k) & valid
            state["intersection"][:, k] += (p & t).flatten(1).sum(1).double().cpu()
            state["union"][:, k] += (p | t).flatten(1).sum(1).double().cpu()

    def compute(self, task: Task, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        union = state["union"]
        iou = torch.where(union > 0, state["intersection"] / union.clamp_min(1), torch.nan)
        present = union > 0  # classes absent from both prediction and labels do not count
        miou = torch.where(present.any(1), torch.nansum(iou, 1) / present.sum(1).clamp_min(1), torch.nan)
        return {"miou": miou.numpy(), "pixacc": _ratio(state["correct"], state["count"]),
                "loss": _ratio(state["loss_sum"], state["count"])}

    def predict(self, task: Task, output: torch.Tensor) -> dict[str, Any]:
        return {"mask": output.argmax(1)}


def _pixel_valid(target: torch.Tensor) -> torch.Tensor:
    """Labelled pixels of a dense float target ``[N, C, H, W]``: finite and not all zero (``[N, 1, H, W]``)."""
    finite = torch.isfinite(target).all(1, keepdim=True)
    return finite & (torch.nan_to_num(target).abs().sum(1, keepdim=True) > 0)


class Depth(TaskKind):
    name = "depth"
    metrics = ("abs_err", "rel_err", "loss")
    references = {"abs_err": 1.0, "rel_err": 1.0, "loss": 1.0}
    dense = True

    def check(self, task: Task) -> None:
        if task.outputs != 1:
            raise ValueError(f"task {task.name!r}: depth has one output channel, got {task.outputs}")

    @staticmethod
    def _target(target: torch.Tensor) -> torch.Tensor:
        return target.unsqueeze(1) if target.dim() == 3 else target

    def valid(self, task: Task, target: torch.Tensor) -> torch.Tensor:
        return _pixel_valid(self._target(target))

    def entry_losses(self, task: Task, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (output - torch.nan_to_num(self._target(target)).to(output.dtype)).abs()

    def new_state(self, task: Task, rays: int) -> dict[str, torch.Tensor]:
        return super().new_state(task, rays) | {"rel_sum": torch.zeros(rays, dtype=torch.float64)}

    def update(self, task: Task, state: dict[str, torch.Tensor], output: torch.Tensor, target: torch.Tensor) -> None:
        super().update(task, state, output, target)
        y = torch.nan_to_num(self._target(target)).to(output.dtype)
        valid = self.valid(task, target)
        rel = torch.where(valid, (output - y).abs() / y.abs().clamp_min(1e-12), 0)
        state["rel_sum"] += rel.flatten(1).sum(1).double().cpu()

    def compute(self, task: Task, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        loss = _ratio(state["loss_sum"], state["count"])
        return {"abs_err": loss, "rel_err": _ratio(state["rel_sum"], state["count"]), "loss": loss}

    def predict(self, task: Task, output: torch.Tensor) -> dict[str, Any]:
        return {"depth": output[:, 0]}


class Normals(TaskKind):
    name = "normals"
    metrics = ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30", "loss")
    higher = frozenset({"within_11.25", "within_22.5", "within_30"})
    references = {"mean_angle": 90.0, "median_angle": 90.0, "within_11.25": 0.0, "within_22.5": 0.0,
                  "within_30": 0.0, "loss": 1.0}
    dense = True

    def check(self, task: Task) -> None:
        if task.outputs != 3:
            raise ValueError(f"task {task.name!r}: normals have three output channels, got {task.outputs}")

    def valid(self, task: Task, target: torch.Tensor) -> torch.Tensor:
        return _pixel_valid(target)[:, 0]

    def _cosine(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = F.normalize(torch.nan_to_num(target).to(output.dtype), dim=1)
        return (F.normalize(output, dim=2) * y).sum(2)  # [M, N, H, W]

    def entry_losses(self, task: Task, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1 - self._cosine(output, target)

    def new_state(self, task: Task, rays: int) -> dict[str, torch.Tensor]:
        bins = int(round(180 / ANGLE_BIN))
        return super().new_state(task, rays) | {"angle_sum": torch.zeros(rays, dtype=torch.float64),
                                                "histogram": torch.zeros(rays, bins, dtype=torch.float64)}

    def update(self, task: Task, state: dict[str, torch.Tensor], output: torch.Tensor, target: torch.Tensor) -> None:
        super().update(task, state, output, target)
        valid = self.valid(task, target)
        angle = torch.rad2deg(torch.acos(self._cosine(output, target).clamp(-1, 1)))
        state["angle_sum"] += torch.where(valid, angle, 0).flatten(1).sum(1).double().cpu()
        bins = state["histogram"].shape[1]
        idx = (angle / ANGLE_BIN).long().clamp(0, bins - 1)
        for m in range(angle.shape[0]):
            state["histogram"][m] += torch.bincount(idx[m][valid], minlength=bins).double().cpu()

    def compute(self, task: Task, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        hist, count = state["histogram"], state["count"]
        cumulative = hist.cumsum(1)
        edges = torch.arange(hist.shape[1] + 1, dtype=torch.float64) * ANGLE_BIN
        median_bin = (cumulative < (count[:, None] / 2)).sum(1).clamp(max=hist.shape[1] - 1)
        median = torch.where(count > 0, (edges[median_bin] + edges[median_bin + 1]) / 2, torch.nan)
        out = {"mean_angle": _ratio(state["angle_sum"], count), "median_angle": median.numpy()}
        for limit in (11.25, 22.5, 30):
            within = cumulative[:, int(round(limit / ANGLE_BIN)) - 1]  # bins entirely below the limit
            out[f"within_{limit:g}"] = _ratio(within, count)
        return out | {"loss": _ratio(state["loss_sum"], count)}

    def predict(self, task: Task, output: torch.Tensor) -> dict[str, Any]:
        return {"normals": F.normalize(output, dim=1)}


KINDS: dict[str, TaskKind] = {k.name: k() for k in (Classification, Binary, Regression, Segmentation, Depth, Normals)}


# --------------------------------------------------------------------------------------------- a task list

@dataclass
class TaskEvaluation:
    """Accumulated metrics of every task under M rays."""

    tasks: list[Task]
    rays: int
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.states = [t.behaviour.new_state(t, self.rays) for t in self.tasks]

    def update(self, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> None:
        for task, state, out, y in zip(self.tasks, self.states, outputs, targets):
            task.behaviour.update(task, state, out.detach(), y.to(out.device))

    def compute(self) -> list[dict[str, np.ndarray]]:
        return [t.behaviour.compute(t, s) for t, s in zip(self.tasks, self.states)]


def loss_terms(tasks: list[Task], outputs: list[torch.Tensor],
               targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(``[M, T]`` loss sums over the labelled entries, ``[T]`` labelled-entry counts) of a batch."""
    sums, counts = zip(*(t.behaviour.loss_terms(t, out, y) for t, out, y in zip(tasks, outputs, targets)))
    return torch.stack(sums, dim=1), torch.stack(counts)


def task_losses(tasks: list[Task], outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """``[M, T]`` mean losses: ray m's loss on task t over the batch's labelled entries (0 where there are none)."""
    sums, counts = loss_terms(tasks, outputs, targets)
    return sums / counts.clamp_min(1)


def classification_tasks(num_tasks: int, classes: int = 10, names: list[str] | None = None) -> list[Task]:
    """``num_tasks`` C-way classification tasks (the MultiMNIST family: one digit each)."""
    names = names or [f"task_{t + 1}" for t in range(num_tasks)]
    return [Task(name, "classification", classes) for name in names]


def as_tasks(tasks: list[Task] | int) -> list[Task]:
    """A task list, or a number of 10-way classification tasks (the MultiMNIST family's)."""
    return classification_tasks(tasks) if isinstance(tasks, int) else list(tasks)
