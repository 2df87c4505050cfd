"""Problems with known Pareto fronts, their scoring, and a small trainer.

Here the "network" is the parameter vector itself: θ ∈ R^d is the weight of
an ``nn.Linear(1, d, bias=False)`` applied to the constant input 1, with an
identity head per task.  So every method adapts it with its own layers —
LoRA adapters, ensemble members, a hypernetwork, or λ as extra input — and
trains through the same ``loop.train_step``; the task losses are the
problem's objectives of θ(λ).

Problems (minimization, two objectives):

* ``toy`` / ``toy_scaled`` — the two-objective toy of Yu et al. / Navon et
  al. (PaMaL App. B.2, LORPMAN App. D.2), θ ∈ R², ℓ₁ scaled by c = 1 / 0.1.
  Reference front: a 1001×1001 grid over [−10, 10]², non-dominated filter,
  resampled evenly along the front (computed once, cached on disk).
* ``concave`` — Pareto MTL's eq. 19, d = 20; Pareto set x = t·1/√d, t ∈ [−1, 1]; starts in [−0.5, 0.5]^d.
* ``zdt1`` (convex) and ``zdt2`` (concave) — d = 30, the box [0, 1]^30 as
  x = sigmoid(θ); fronts from pymoo.

Scores of a learned front (the objectives at ``eval_points`` evenly spread
rays): IGD to the reference front (also relative to the front's diameter),
the hypervolume ratio to the reference front's (reference point: the front's
nadir plus 10% of its range), and the non-dominated count.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymoo.indicators.igd import IGD
from torch import nn

from pareto_ray.config import ConfigError, apply_overrides
from pareto_ray.data.cache import cache_root
from pareto_ray.layers import EnsemblePreferenceLayer
from pareto_ray.loop import build_optimizer, param_groups, train_step
from pareto_ray.methods import METHODS, build_method
from pareto_ray.methods.hypernetwork import HyperModel
from pareto_ray.methods.pareto_mtl import DiscreteFrontModel
from pareto_ray.metrics import hypervolume, nondominated_count
from pareto_ray.models import MultiTaskNet, PreferenceModel
from pareto_ray.preferences import simplex_grid

FRONT_POINTS = 1000
TOY_STARTS = ((-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0))  # PaMaL App. B.2


@dataclass(frozen=True)
class Problem:
    """A multi-objective problem over θ ∈ R^d with a known front."""

    name: str
    dim: int
    objectives: Callable[[torch.Tensor], torch.Tensor]  # θ [..., d] → [..., T]
    initial: Callable[[int, torch.Generator], torch.Tensor]  # k starting points [k, d]
    front: Callable[[], np.ndarray]  # reference front [K, T]
    steps: int = 2000  # trainer defaults for Adam with a cosine-decayed learning rate (see ``PAPER_OPTIMIZERS``)
    lr: float = 0.04
    hyper_lr: float = 0.01  # for hypernetworks, whose output moves ~100× faster per step
    num_tasks: int = 2


# --- objectives ----------------------------------------------------------------------------------------------

def toy_objectives(theta: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    t1, t2 = theta[..., 0], theta[..., 1]
    f1 = torch.log(torch.clamp_min(torch.abs(0.5 * (-t1 - 7) - torch.tanh(-t2)), 5e-6)) + 6
    f2 = torch.log(torch.clamp_min(torch.abs(0.5 * (-t1 + 3) - torch.tanh(-t2) + 2), 5e-6)) + 6
    g1 = ((-t1 + 7) ** 2 + 0.1 * (-t2 - 8) ** 2) / 10 - 20
    g2 = ((-t1 - 7) ** 2 + 0.1 * (-t2 - 8) ** 2) / 10 - 20
    c1 = torch.clamp_min(torch.tanh(0.5 * t2), 0)
    c2 = torch.clamp_min(torch.tanh(-0.5 * t2), 0)
    return torch.stack([c * (c1 * f1 + c2 * g1), c1 * f2 + c2 * g2], dim=-1)


def concave_objectives(theta: torch.Tensor) -> torch.Tensor:
    d = theta.shape[-1]
    shift = 1 / math.sqrt(d)
    f1 = 1 - torch.exp(-((theta - shift) ** 2).sum(-1))
    f2 = 1 - torch.exp(-((theta + shift) ** 2).sum(-1))
    return torch.stack([f1, f2], dim=-1)


def zdt_objectives(theta: torch.Tensor, concave: bool) -> torch.Tensor:
    x = torch.sigmoid(theta)  # the box [0, 1]^d, smoothly: clamping would leave dead zones without gradient
    f1 = x[..., 0]
    g = 1 + 9 / (x.shape[-1] - 1) * x[..., 1:].sum(-1)
    ratio = f1 / g
    f2 = g * (1 - ratio ** 2) if concave else g * (1 - torch.sqrt(ratio.clamp_min(1e-12)))
    return torch.stack([f1, f2], dim=-1)


# --- reference fronts ----------------------------------------------------------------------------------------

def nondominated_2d(points: np.ndarray) -> np.ndarray:
    """Non-dominated rows of a ``[N, 2]`` minimization set, sorted by f1 (O(N log N))."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    pts = points[order]
    best_before = np.minimum.accumulate(np.concatenate([[np.inf], pts[:-1, 1]]))
    return pts[pts[:, 1] < best_before]


def resample_front(points: np.ndarray, n: int = FRONT_POINTS) -> np.ndarray:
    """``n`` points evenly spaced along the arc length of a sorted 2-D front (for an unbiased IGD)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    target = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(target, s, points[:, k]) for k in range(points.shape[1])], axis=1)


@functools.cache
def toy_front(c: float = 1.0, resolution: int = 1001) -> np.ndarray:
    """The toy's front: grid over [−10, 10]², non-dominated filter, resampled; cached on disk."""
    path = cache_root() / f"toy-front-r{resolution}-v1.npy"
    if path.is_file():
        front = np.load(path)
    else:
        grid = torch.linspace(-10, 10, resolution, dtype=torch.float64)
        theta = torch.cartesian_prod(grid, grid)
        values = torch.cat([toy_objectives(chunk) for chunk in theta.split(1 << 20)]).numpy()
        front = resample_front(nondominated_2d(values))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, front)
        os.replace(tmp, path)
    return front if c == 1.0 else resample_front(front * np.array([c, 1.0]))


def concave_front(n: int = FRONT_POINTS) -> np.ndarray:
    t = np.linspace(-1.0, 1.0, n)
    return np.stack([1 - np.exp(-(t - 1) ** 2), 1 - np.exp(-(t + 1) ** 2)], axis=1)


def zdt_front(name: str) -> np.ndarray:
    from pymoo.problems import get_problem

    return get_problem(name, n_var=30).pareto_front(n_pareto_points=FRONT_POINTS)


def _toy_starts(k: int, g: torch.Generator) -> torch.Tensor:
    order = torch.randperm(len(TOY_STARTS), generator=g)[:k]
    return torch.tensor(TOY_STARTS, dtype=torch.float32)[order]


def _uniform(low: float, high: float, dim: int):
    return lambda k, g: low + (high - low) * torch.rand(k, dim, generator=g)


PROBLEMS: dict[str, Problem] = {
    "toy": Problem("toy", 2, toy_objectives, _toy_starts, toy_front, steps=2000, lr=0.04, hyper_lr=0.03),
    "toy_scaled": Problem("toy_scaled", 2, functools.partial(toy_objectives, c=0.1), _toy_starts,
                          functools.partial(toy_front, 0.1), steps=2000, lr=0.04, hyper_lr=0.03),
    # starts in [−0.5, 0.5]^20, where tests/test_pareto_mtl.py runs Pareto MTL's §5 example: from [−1, 1]^20 f is
    # near 1, its gradient near 0, and 100 plain gradient steps of size 1 stall (measured IGD 0.47 against 0.08)
    "concave": Problem("concave", 20, concave_objectives, _uniform(-0.5, 0.5, 20), concave_front, steps=1000,
                       lr=0.02, hyper_lr=0.001),
    "zdt1": Problem("zdt1", 30, functools.partial(zdt_objectives, concave=False), _uniform(-1, 1, 30),
                    functools.partial(zdt_front, "zdt1"), steps=1000, lr=0.02, hyper_lr=0.002),
    "zdt2": Problem("zdt2", 30, functools.partial(zdt_objectives, concave=True), _uniform(-1, 1, 30),
                    functools.partial(zdt_front, "zdt2"), steps=1000, lr=0.02, hyper_lr=0.002),
}


def get_problem(name: str) -> Problem:
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}: expected one of {', '.join(PROBLEMS)}")
    return PROBLEMS[name]


# --- scoring -------------------------------------------------------------------------------------------------

def hv_reference(front: np.ndarray) -> np.ndarray:
    """The front's nadir plus 10% of its range per objective."""
    hi, lo = front.max(axis=0), front.min(axis=0)
    return hi + 0.1 * (hi - lo)


def diameter(front: np.ndarray) -> float:
    from scipy.spatial.distance import pdist

    sub = front[:: max(1, len(front) // 500)]
    return float(pdist(np.concatenate([sub, front[[0, -1]]])).max())


def score(points: np.ndarray, front: np.ndarray) -> dict[str, float]:
    """IGD (absolute and relative to the front's diameter), HV ratio and non-dominated count."""
    points = np.asarray(points, dtype=float)
    ref = hv_reference(front)
    igd = float(IGD(front)(points))
    diam = diameter(front)
    return {
        "igd": igd,
        "igd_relative": igd / diam,
        "hv": hypervolume(points, ref, maximize=False),
        "hv_ratio": hypervolume(points, ref, maximize=False) / hypervolume(front, ref, maximize=False),
        "nondominated": float(nondominated_count(points, maximize=False)),
        "diameter": diam,
    }


def dent_points(points: np.ndarray, front: np.ndarray, tolerance: float = 0.02) -> np.ndarray:
    """Points near the front (distance < tolerance) that lie strictly above the chord joining the
    front's extremes — the non-convex part no linear scalarization can reach."""
    a, b = front[0], front[-1]
    normal = np.array([b[1] - a[1], a[0] - b[0]])
    normal = normal / np.linalg.norm(normal)
    if normal @ (front.mean(0) - a) < 0:  # orient towards the bulge of the front
        normal = -normal
    above = (points - a) @ normal > tolerance
    dist = np.min(np.linalg.norm(points[:, None, :] - front[None, :, :], axis=2), axis=1)
    return points[above & (dist < tolerance)]


# --- trainer -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ToyOptimizer:
    """How a method is optimized on these problems: Adam with a cosine-decayed rate, or plain gradient descent."""

    name: Literal["adam", "gd"]
    lr: float | None = None  # None: the problem's lr (its hyper_lr for hypernetworks)
    steps: int | None = None  # None: the problem's steps
    cosine: bool = True  # decay the rate to 0 along a cosine


#: Each method's optimizer on these problems, as its paper runs it.  Pareto MTL §5 (and MOO-MTL, as its Fig. 2
#: runs it) descends the synthetic problem with 100 plain gradient steps of size 1.  The PFL papers use Adam
#: (PaMaL App. B.2, after PHN: lr 2e-3 for 50K iterations); here with a cosine-decayed rate, at the problem's
#: budget of steps.
PAPER_OPTIMIZERS: dict[str, ToyOptimizer] = {
    "pareto_mtl": ToyOptimizer("gd", lr=1.0, steps=100, cosine=False),
    "mgda": ToyOptimizer("gd", lr=1.0, steps=100, cosine=False),
}
ADAM = ToyOptimizer("adam")


class ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    optimizer: Literal["adam", "gd"] | None = Field(
        default=None, description="adam (cosine-decayed rate) or gd (plain gradient descent, constant step); "
                                  "default: the method's paper's (PAPER_OPTIMIZERS), else adam")
    steps: int | None = Field(default=None, ge=1, description="optimizer steps (default: the method's or the problem's)")
    lr: float | None = Field(default=None, gt=0, description="learning rate (default: the method's, else the "
                                                             "problem's lr or hyper_lr)")
    seed: int = 0
    eval_points: int = Field(default=51, ge=2, description="rays the learned front is evaluated at")


def toy_optimizer(method: str, cfg: ToyConfig) -> ToyOptimizer:
    """The method's optimizer (``PAPER_OPTIMIZERS``, else Adam) with the configured name, steps and lr applied.

    Choosing the other optimizer by name drops the method's lr and steps, which belong to its own.
    """
    opt = PAPER_OPTIMIZERS.get(method, ADAM)
    if cfg.optimizer is not None and cfg.optimizer != opt.name:
        opt = ADAM if cfg.optimizer == "adam" else ToyOptimizer("gd", cosine=False)
    return ToyOptimizer(opt.name, cfg.lr or opt.lr, cfg.steps or opt.steps, opt.cosine)


def toy_network(problem: Problem, start: torch.Tensor) -> MultiTaskNet:
    """θ as the weight of ``Linear(1, d)`` (inside ``encoder``) and an identity head per task."""
    layer = nn.Linear(1, problem.dim, bias=False)
    with torch.no_grad():
        layer.weight.copy_(start.view(problem.dim, 1))
    return MultiTaskNet(nn.Sequential(layer), [nn.Identity() for _ in range(problem.num_tasks)])


def _unit_input() -> torch.Tensor:
    return torch.ones(1, 1)


def thetas(model: PreferenceModel, rays: torch.Tensor) -> torch.Tensor:
    """θ(λ) for each ray: ``[M, d]``."""
    return model(_unit_input(), rays)[0][:, 0, :]


def build_toy_model(method, problem: Problem, generator: torch.Generator) -> PreferenceModel:
    """The method's model around θ; ensemble members, and the networks of a discrete front (one per subproblem,
    Pareto MTL's Algorithm 1), each start from their own initial point."""
    starts = problem.initial(problem.num_tasks, generator)
    model = method.build_model(toy_network(problem, starts[0]))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, EnsemblePreferenceLayer):
                module.weight.copy_(starts.view(problem.num_tasks, problem.dim, 1))
        if isinstance(model, DiscreteFrontModel):
            own = problem.initial(len(model.nets), generator)  # the toy problem has 5 fixed starts: reused cyclically
            for k, net in enumerate(model.nets):
                net.encoder[0].weight.copy_(own[k % len(own)].view(problem.dim, 1))
    return model


def toy_lr(model: PreferenceModel, problem: Problem, opt: ToyOptimizer) -> float:
    """The optimizer's learning rate, else the problem's (its ``hyper_lr`` for hypernetwork models)."""
    if opt.lr is not None:
        return opt.lr
    return problem.hyper_lr if isinstance(model, HyperModel) else problem.lr


def _optimizer(model: PreferenceModel, opt: ToyOptimizer, lr: float) -> torch.optim.Optimizer:
    if opt.name == "gd":  # plain gradient descent: no momentum
        return torch.optim.SGD(param_groups(model, lr), lr=lr)
    return build_optimizer(model, "adam", lr)


def train_toy(method_cfg, problem: Problem, cfg: ToyConfig | None = None):
    """Train ``method_cfg`` on ``problem`` with its optimizer (``toy_optimizer``); returns (model, method)."""
    cfg = cfg or ToyConfig()
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    method = build_method(method_cfg, problem.num_tasks)
    model = build_toy_model(method, problem, g)
    opt = toy_optimizer(method_cfg.name, cfg)
    steps = opt.steps or problem.steps
    optimizer = _optimizer(model, opt, toy_lr(model, problem, opt))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=0.0) if opt.cosine else None

    def criterion(outputs: list[torch.Tensor], _: Any) -> torch.Tensor:
        return problem.objectives(outputs[0][:, 0, :])

    x = _unit_input()
    model.train()
    for step in range(steps):
        train_step(model, method, optimizer, x, None, step / steps, per_sample=True, criterion=criterion)
        if schedule is not None:
            schedule.step()
    return model, method


@torch.no_grad()
def learned_front(model: PreferenceModel, method, problem: Problem, points: int = 51) -> tuple[np.ndarray, np.ndarray]:
    """(rays, objectives) of the trained model along ``points`` evenly spread rays."""
    model.eval()
    rays = method.eval_rays(simplex_grid(problem.num_tasks, points))
    return rays.numpy(), problem.objectives(thetas(model, rays)).numpy()


def run_toy(method: str, problem: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train and score one (method, problem) pair; ``overrides`` are ``key=value`` strings for the
    toy trainer (optimizer, steps, lr, seed, eval_points) or the method config (optionally ``method.key``)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    if problem not in PROBLEMS:
        raise ConfigError(f"unknown problem {problem!r}: expected one of {', '.join(PROBLEMS)}")
    prob = PROBLEMS[problem]
    toy_raw: dict[str, Any] = {}
    method_raw: dict[str, Any] = {"name": method}
    for key, value in apply_overrides({}, overrides or []).items():
        if key == "method" and isinstance(value, dict):
            method_raw.update(value)
        elif key in ToyConfig.model_fields:
            toy_raw[key] = value
        else:
            method_raw[key] = value
    try:
        toy_cfg = ToyConfig.model_validate(toy_raw)
        method_cfg = METHODS[method][1].model_validate(method_raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid toy settings: {exc}") from None
    start = time.perf_counter()
    model, meth = train_toy(method_cfg, prob, toy_cfg)
    seconds = time.perf_counter() - start
    opt = toy_optimizer(method, toy_cfg)
    rays, points = learned_front(model, meth, prob, toy_cfg.eval_points)
    front = prob.front()
    return {"method": method, "problem": problem, **score(points, front), "seconds": seconds,
            "optimizer": opt.name, "steps": opt.steps or prob.steps, "lr": toy_lr(model, prob, opt),
            "rays": rays.tolist(), "points": points.tolist()}


def plot_toy(result: dict[str, Any], path: str | Path) -> Path:
    """The learned points over the reference front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = get_problem(result["problem"]).front()
    pts = np.asarray(result["points"])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(front[:, 0], front[:, 1], "-", color="0.6", label="true front")
    ax.scatter(pts[:, 0], pts[:, 1], c=np.asarray(result["rays"])[:, 0], cmap="viridis", s=14, label="learned")
    ax.set_xlabel("f1")
    ax.set_ylabel("f2")
    ax.set_title(f"{result['method']} on {result['problem']}: IGD {result['igd']:.3g}, HV ratio {result['hv_ratio']:.3f}")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
