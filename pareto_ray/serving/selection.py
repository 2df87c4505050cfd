"""Operating-point selection: the λ on (or between) the evaluated front's rays that meets a request's targets."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from pymoo.util.ref_dirs import get_reference_directions
from scipy.interpolate import LinearNDInterpolator

from pareto_ray.fronts import front_tasks, metric_block
from pareto_ray.serving.schemas import RequestError, SelectRequest, SelectResponse
from pareto_ray.tasks import Task


def _candidate_grid(num_tasks: int, resolution: int, max_points: int = 20_000) -> np.ndarray:
    if num_tasks == 2:
        t = np.linspace(0.0, 1.0, resolution + 1)
        return np.stack([t, 1 - t], axis=1)
    p = resolution
    while p > 1 and math.comb(p + num_tasks - 1, num_tasks - 1) > max_points:
        p -= 1
    return get_reference_directions("uniform", num_tasks, n_partitions=p)


def _interpolate(rays: np.ndarray, values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation of ``values [K, D]`` from ``rays`` to ``points`` (NaN outside the hull)."""
    if rays.shape[1] == 2:
        order = np.argsort(rays[:, 0])
        r = rays[order, 0]
        out = np.stack([np.interp(points[:, 0], r, values[order, j]) for j in range(values.shape[1])], axis=1)
        out[(points[:, 0] < r[0] - 1e-9) | (points[:, 0] > r[-1] + 1e-9)] = np.nan
        return out
    return LinearNDInterpolator(rays[:, :-1], values)(points[:, :-1])


def front_columns(front: pa.Table) -> tuple[np.ndarray, list[Task], list[str], np.ndarray]:
    """(rays ``[K, T]``, the tasks, the metric columns ``<metric>_<t>``, their values ``[K, D]``)."""
    tasks = front_tasks(front)
    rays = metric_block(front, ["ray"] * len(tasks))
    names = [n for n in front.column_names if not n.startswith("ray_")]
    values = np.stack([front.column(n).to_numpy().astype(np.float64) for n in names], axis=1)
    return rays, tasks, names, values


def _task_index(ref: int | str, tasks: list[Task], field: str) -> int:
    """The 0-based index of a task named by its 1-based number or its name, or a 422 at ``field``."""
    if isinstance(ref, int):
        if not 1 <= ref <= len(tasks):
            raise RequestError(field, f"task {ref} does not exist", f"a task number in 1..{len(tasks)} or a task name")
        return ref - 1
    names = [t.name for t in tasks]
    if ref not in names:
        raise RequestError(field, f"task {ref!r} does not exist", f"a task number in 1..{len(tasks)} or one of "
                                                                   f"{', '.join(names)}")
    return names.index(ref)


def _metric(metric: str | None, task: Task, t: int, columns: list[str], field: str) -> str:
    """The column ``<metric>_<t+1>`` for a task's metric (default: its front metric), or a 422 at ``field``."""
    name = metric or task.front_metric
    column = f"{name}_{t + 1}"
    if column not in columns:
        have = [c.rsplit("_", 1)[0] for c in columns if c.rsplit("_", 1)[1] == str(t + 1)]
        raise RequestError(field, f"task {task.name!r} ({task.kind}) has no metric {name!r} on the front",
                           f"one of {', '.join(have)}")
    return column


def select_preference(front: pa.Table, request: SelectRequest) -> SelectResponse:
    """The λ (on or between the front's rays) that best meets ``request``.

    Targets are in each task's own metrics (any metric the front holds for it, default its front metric),
    the objective's goal defaults to the metric's better direction.  Candidates are the evaluated rays and a
    dense simplex grid inside their hull, with metrics interpolated linearly between rays.  Feasible
    candidates are ranked by the objective; if none is feasible, the least-violating one is returned with
    ``feasible = False``.
    """
    rays, tasks, columns, values = front_columns(front)
    k, t = rays.shape
    bounds = []
    for i, c in enumerate(request.constraints):
        ti = _task_index(c.task, tasks, f"constraints.{i}.task")
        bounds.append((c, columns.index(_metric(c.metric, tasks[ti], ti, columns, f"constraints.{i}.metric")), ti))
    obj = request.objective
    if obj.task is not None:
        ti = _task_index(obj.task, tasks, "objective.task")
        targets = [columns.index(_metric(obj.metric, tasks[ti], ti, columns, "objective.metric"))]
        metric = obj.metric or tasks[ti].front_metric
        higher = metric in tasks[ti].behaviour.higher
        what = f"task {obj.task} {metric}"
    else:
        metric = obj.metric or tasks[0].front_metric
        if obj.metric is None and len({task.front_metric for task in tasks}) > 1:
            raise RequestError("objective.task", "the tasks' front metrics differ (" + ", ".join(
                f"{task.name}: {task.front_metric}" for task in tasks) + "): a mean over tasks is not defined",
                "an objective naming a task (its number or name)")
        targets = [columns.index(_metric(metric, task, j, columns, "objective.metric")) for j, task in enumerate(tasks)]
        higher = metric in tasks[0].behaviour.higher
        what = f"mean {metric}"
    goal = obj.goal or ("max" if higher else "min")
    used = sorted({col for _, col, _ in bounds} | set(targets))
    cands, metrics, exact = rays, values, np.ones(k, dtype=bool)
    if k > 1:
        grid = _candidate_grid(t, request.resolution)
        interp = _interpolate(rays, values, grid)
        keep = np.isfinite(interp[:, used]).all(axis=1)
        cands = np.concatenate([rays, grid[keep]])
        metrics = np.concatenate([values, interp[keep]])
        exact = np.concatenate([exact, np.zeros(int(keep.sum()), dtype=bool)])

    violation = np.zeros(len(cands))
    for c, col, _ in bounds:
        v = metrics[:, col]
        missing = np.isnan(v)  # a metric the front could not measure (no labels) meets no bound
        if c.min is not None:
            violation += np.where(missing, np.inf, np.maximum(c.min - v, 0.0))
        if c.max is not None:
            violation += np.where(missing, np.inf, np.maximum(v - c.max, 0.0))
    score = metrics[:, targets].mean(1)
    signed = np.nan_to_num(score if goal == "max" else -score, nan=-np.inf)
    feasible_mask = violation <= 1e-12
    described = "; ".join(c.describe(columns[col].rsplit("_", 1)[0]) for c, col, _ in bounds)
    if feasible_mask.any():
        best = int(np.argmax(np.where(feasible_mask, signed, -np.inf)))
        message = f"feasible: {goal}imizes {what} = {score[best]:.4f}"
        if request.constraints:
            message += " subject to " + described
    else:
        best = int(np.lexsort((-signed, violation))[0])
        message = (f"infeasible: no λ on the evaluated front meets {described}; returning the closest (total "
                   f"shortfall {violation[best]:.4f})")
    expected = {name: float(metrics[best, j]) for j, name in enumerate(columns) if np.isfinite(metrics[best, j])}
    return SelectResponse(feasible=bool(feasible_mask[best]), preference=[round(float(v), 6) for v in cands[best]],
                          expected=expected, objective=float(score[best]), interpolated=not bool(exact[best]),
                          message=message)


def front_rows(front: pa.Table) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in front.to_pylist()]
