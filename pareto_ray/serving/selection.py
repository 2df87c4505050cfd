"""Operating-point selection: the λ on (or between) the evaluated front's rays that meets a request's targets."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from pymoo.util.ref_dirs import get_reference_directions
from scipy.interpolate import LinearNDInterpolator

from pareto_ray.fronts import front_arrays
from pareto_ray.serving.schemas import RequestError, SelectRequest, SelectResponse


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


def select_preference(front: pa.Table, request: SelectRequest) -> SelectResponse:
    """The λ (on or between the front's rays) that best meets ``request``.

    Candidates are the evaluated rays and a dense simplex grid inside their hull,
    with metrics interpolated linearly between rays.  Feasible candidates are
    ranked by the objective; if none is feasible, the least-violating one is
    returned with ``feasible = False``.
    """
    rays, acc, loss = front_arrays(front)
    k, t = rays.shape
    for i, c in enumerate(request.constraints):
        if c.task > t:
            raise RequestError(f"constraints.{i}.task", f"task {c.task} does not exist", f"a task number in 1..{t}")
    if request.objective.task is not None and request.objective.task > t:
        raise RequestError("objective.task", f"task {request.objective.task} does not exist", f"a task number in 1..{t}")
    values = np.concatenate([acc, loss], axis=1)  # columns acc_1..acc_T, loss_1..loss_T
    cands, metrics, exact = rays, values, np.ones(k, dtype=bool)
    if k > 1:
        grid = _candidate_grid(t, request.resolution)
        interp = _interpolate(rays, values, grid)
        keep = np.isfinite(interp).all(axis=1)
        cands = np.concatenate([rays, grid[keep]])
        metrics = np.concatenate([values, interp[keep]])
        exact = np.concatenate([exact, np.zeros(int(keep.sum()), dtype=bool)])

    def column(metric: str, task: int) -> np.ndarray:
        return metrics[:, (0 if metric == "acc" else t) + task - 1]

    violation = np.zeros(len(cands))
    for c in request.constraints:
        v = column(c.metric, c.task)
        if c.min is not None:
            violation += np.maximum(c.min - v, 0.0)
        if c.max is not None:
            violation += np.maximum(v - c.max, 0.0)
    obj = request.objective
    score = (column(obj.metric, obj.task) if obj.task is not None
             else metrics[:, :t].mean(1) if obj.metric == "acc" else metrics[:, t:].mean(1))
    signed = score if obj.goal == "max" else -score
    feasible_mask = violation <= 1e-12
    if feasible_mask.any():
        best = int(np.argmax(np.where(feasible_mask, signed, -np.inf)))
        what = f"task {obj.task} {obj.metric}" if obj.task else f"mean {obj.metric}"
        message = f"feasible: {'max' if obj.goal == 'max' else 'min'}imizes {what} = {score[best]:.4f}"
        if request.constraints:
            message += " subject to " + "; ".join(c.describe() for c in request.constraints)
    else:
        best = int(np.lexsort((-signed, violation))[0])
        message = ("infeasible: no λ on the evaluated front meets " + "; ".join(c.describe() for c in request.constraints)
                   + f"; returning the closest (total shortfall {violation[best]:.4f})")
    expected = {f"acc_{i + 1}": float(metrics[best, i]) for i in range(t)}
    expected |= {f"loss_{i + 1}": float(metrics[best, t + i]) for i in range(t)}
    return SelectResponse(feasible=bool(feasible_mask[best]), preference=[round(float(v), 6) for v in cands[best]],
                          expected=expected, objective=float(score[best]), interpolated=not bool(exact[best]),
                          message=message)


def front_rows(front: pa.Table) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in front.to_pylist()]
