"""Pareto MTL (Lin et al., 2019): K preference vectors u_1..u_K split the loss
space into regions Ω_k = {v : u_jᵀv ≤ u_kᵀv ∀j}; subproblem k trains its own
network towards a Pareto point inside Ω_k (§4, Algorithm 1).

Per subproblem k, with constraints G_j = (u_j − u_k)ᵀL (j ≠ k) tested on the
normalized loss vector L/‖L‖ (as the official code does):

1. **initial solution** (§4.2.1, eq. 9): while some G_j > 0 and at most
   ``init_steps`` steps, descend along the min-norm element of the active
   constraint gradients ∇G_j = (u_j − u_k)ᵀ∇L;
2. **constrained phase** (eq. 10–14): min-norm over the task gradients and
   the ε-active constraint gradients (G_j > −ε); the step is the adaptively
   weighted loss Σ_i α_i L_i with α_i = λ_i + Σ_j β_j (u_ji − u_ki) (eq. 18),
   rescaled to Σ|α_i| = T as the official code does.

The result is a discrete front: ``DiscreteFrontModel`` holds one network per
subproblem, keyed by a preference ray on the simplex, and answers a
preference λ with the network of the nearest key — so a front of K models is
evaluated, checkpointed and served like any preference-conditioned model.
The key of u_k is r ∝ 1/u_k (the loss vector points along u_k, so a small
u_ki means task i is favoured — EPO's convention r ⊙ L uniform); u = (1, 0)
gets the key (0, 1).

``subproblem: null`` means the whole front: ``pareto-ray train`` then runs K
Ray Train runs, one per subproblem (``pareto_ray.discrete``), and in a single
process (``pareto-ray toy``) all K networks train side by side.  The phase of
a subproblem is not checkpointed: a resumed run starts in phase 1 again and
leaves it at its first step if the solution is still inside its region.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from pareto_ray.methods.base import Method
from pareto_ray.methods.gradients import MinNormConfig, combined_backward
from pareto_ray.models import MultiTaskNet, PreferenceModel
from pareto_ray.preferences import simplex_grid
from pareto_ray.solvers.minnorm import min_norm


class ParetoMTLConfig(MinNormConfig):
    name: Literal["pareto_mtl"] = "pareto_mtl"
    gradients: Literal["shared", "all"] = Field(
        default="all", description="parameters whose task gradients enter the min-norm problems "
                                   "(the official code uses all of them)")
    num_preferences: int = Field(default=5, ge=2, le=256, description="K subproblems (preference vectors)")
    preferences: list[list[float]] | None = Field(
        default=None, description="the K preference vectors u_k in loss space (any scale, >= 0); default: unit "
                                  "vectors at angles linspace(0, π/2, K) for 2 tasks, the normalized simplex grid beyond")
    subproblem: int | None = Field(default=None, ge=0, description="train only subproblem k (0-based); "
                                                                   "null = the whole front")
    init_steps: int = Field(default=100, ge=0, description="cap on the initial-solution steps (0 = skip phase 1)")
    epsilon: float = Field(default=0.01, ge=0, description="a constraint is active when G_j > −ε (eq. 11; the paper "
                                                           "gives no value, its code uses 0: solutions then sit on "
                                                           "the region boundary, or a step past it)")
    parallel: int | None = Field(default=None, ge=1, description="subproblems trained at once on Ray; default: as many "
                                                                 "as the cluster's free CPUs (GPUs) hold")

    @model_validator(mode="before")
    @classmethod
    def _count_from_preferences(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preferences") and "num_preferences" not in data:
            data = {**data, "num_preferences": len(data["preferences"])}
        return data

    @field_validator("preferences")
    @classmethod
    def _valid_preferences(cls, prefs: list[list[float]] | None) -> list[list[float]] | None:
        if prefs is None:
            return prefs
        if len({len(p) for p in prefs}) != 1:
            raise ValueError("preference vectors must all have the same length (the number of tasks)")
        for p in prefs:
            if any(not math.isfinite(v) or v < 0 for v in p) or sum(p) <= 0:
                raise ValueError(f"preference vectors must be finite, >= 0 and non-zero, got {p}")
        return prefs

    @model_validator(mode="after")
    def _consistent(self) -> ParetoMTLConfig:
        if self.preferences is not None and len(self.preferences) != self.num_preferences:
            raise ValueError(f"num_preferences ({self.num_preferences}) must equal the number of preference "
                             f"vectors given ({len(self.preferences)})")
        if self.subproblem is not None and self.subproblem >= self.num_preferences:
            raise ValueError(f"subproblem {self.subproblem} out of range for {self.num_preferences} preferences "
                             f"(0 .. {self.num_preferences - 1})")
        return self


def preference_vectors(num_tasks: int, count: int) -> torch.Tensor:
    """K evenly spread unit vectors in R^T_+: angles linspace(0, π/2, K) for 2 tasks, else the normalized simplex grid."""
    if num_tasks == 2:
        t = torch.linspace(0, math.pi / 2, count, dtype=torch.float64)
        return torch.stack([torch.cos(t), torch.sin(t)], dim=1).clamp_min(0)
    grid = simplex_grid(num_tasks, count).double()
    return grid / grid.norm(dim=1, keepdim=True)


def preference_keys(prefs: torch.Tensor) -> torch.Tensor:
    """Simplex ray of each preference vector: r ∝ 1/u (all weight on the zero entries of u, if any)."""
    u = prefs / prefs.norm(dim=1, keepdim=True)
    zero = u < 1e-12
    inv = torch.where(zero.any(dim=1, keepdim=True), zero.to(u.dtype), 1 / u.clamp_min(1e-12))
    return inv / inv.sum(dim=1, keepdim=True)


def constraint_directions(prefs: torch.Tensor, k: int) -> torch.Tensor:
    """Rows u_j − u_k (unit vectors) for j ≠ k: G_j = (u_j − u_k)ᵀL ≤ 0 keeps L in region k."""
    u = prefs / prefs.norm(dim=1, keepdim=True)
    others = torch.cat([u[:k], u[k + 1:]])
    return others - u[k]


def constraint_values(losses: torch.Tensor, prefs: torch.Tensor, k: int) -> torch.Tensor:
    """G_j on the normalized loss vector L/‖L‖ (the region test); all ≤ 0 ⇔ L ∈ Ω_k."""
    losses = losses.double()
    return constraint_directions(prefs, k) @ (losses / losses.norm().clamp_min(1e-30))


def initial_weights(gram: torch.Tensor, active: torch.Tensor, max_iter: int = 100, tol: float = 1e-10) -> torch.Tensor:
    """Task weights α = Σ_j β_j (u_j − u_k) of the min-norm element of the active constraint gradients (eq. 9)."""
    beta = min_norm(active @ gram @ active.T, max_iter, tol).weights
    return beta @ active


def constrained_weights(gram: torch.Tensor, active: torch.Tensor, max_iter: int = 100,
                        tol: float = 1e-10) -> torch.Tensor:
    """Task weights α_i = λ_i + Σ_j β_j (u_ji − u_ki) of problem (14) / eq. 18, scaled to Σ|α| = T."""
    t = gram.shape[0]
    combos = torch.cat([torch.eye(t, dtype=gram.dtype), active])  # [T + A, T]: ∇L_i, then ∇G_j = (u_j − u_k)ᵀ∇L
    sol = min_norm(combos @ gram @ combos.T, max_iter, tol).weights
    alpha = sol @ combos
    return alpha * (t / alpha.abs().sum().clamp_min(1e-30))


class DiscreteFrontModel(PreferenceModel):
    """K networks keyed by simplex rays; a preference is answered by the nearest key's network."""

    def __init__(self, nets: list[MultiTaskNet], keys: torch.Tensor):
        super().__init__()
        if len(nets) != len(keys):
            raise ValueError(f"{len(nets)} networks for {len(keys)} preference keys")
        self.nets = nn.ModuleList(nets)
        self.num_tasks = nets[0].num_tasks
        self.register_buffer("keys", keys.float(), persistent=False)

    def nearest(self, prefs: torch.Tensor) -> torch.Tensor:
        """Index of the nearest key (Euclidean on the simplex) for each row of ``prefs [N, T]``."""
        return torch.cdist(prefs.to(self.keys), self.keys).argmin(dim=1)

    def forward_ray(self, x: torch.Tensor, pref: torch.Tensor) -> list[torch.Tensor]:
        return self.nets[int(self.nearest(pref.view(1, -1))[0])](x)

    def predict(self, x: torch.Tensor, prefs: torch.Tensor) -> list[torch.Tensor]:
        idx = self.nearest(prefs)
        used = torch.unique(idx).tolist()
        if len(used) == 1:
            return self.nets[used[0]](x)
        outs: list[torch.Tensor] | None = None
        for k in used:
            mask = idx == k
            part = self.nets[k](x[mask])
            if outs is None:
                outs = [p.new_empty(len(x), *p.shape[1:]) for p in part]
            for out, p in zip(outs, part):
                out[mask] = p
        return outs


class ParetoMTL(Method):
    name = "pareto_mtl"
    cfg: ParetoMTLConfig

    def __init__(self, cfg: ParetoMTLConfig, num_tasks: int):
        super().__init__(cfg, num_tasks)
        if cfg.preferences is not None:
            if len(cfg.preferences[0]) != num_tasks:
                raise ValueError(f"method.preferences have {len(cfg.preferences[0])} entries but the data has "
                                 f"{num_tasks} tasks")
            prefs = torch.tensor(cfg.preferences, dtype=torch.float64)
            self.preferences = prefs / prefs.norm(dim=1, keepdim=True)
        else:
            self.preferences = preference_vectors(num_tasks, cfg.num_preferences)
        self.keys = preference_keys(self.preferences).float()
        #: the subproblems this model trains (one network each)
        self.members = list(range(cfg.num_preferences)) if cfg.subproblem is None else [cfg.subproblem]
        self.phase = ["init" if cfg.init_steps > 0 else "constrained" for _ in self.members]
        self.init_steps_taken = [0 for _ in self.members]
        self.last_weights: list[torch.Tensor | None] = [None for _ in self.members]

    @classmethod
    def combines_gradients_for(cls, cfg: ParetoMTLConfig) -> bool:
        return True

    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        nets = [net] + [copy.deepcopy(net) for _ in self.members[1:]]
        return DiscreteFrontModel(nets, self.keys[self.members])

    def train_rays(self, progress: float) -> torch.Tensor:
        return self.keys[self.members]

    def eval_rays(self, grid: torch.Tensor) -> torch.Tensor:
        return self.keys[self.members]

    def task_weights(self, row: int, grads: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Weights α for subproblem ``self.members[row]`` from its averaged task gradients and losses."""
        k, cfg = self.members[row], self.cfg
        g = grads.double()
        gram = g @ g.T
        values = constraint_values(losses, self.preferences, k)
        directions = constraint_directions(self.preferences, k)
        if self.phase[row] == "init":
            active = directions[values > 0]
            if len(active) == 0 or self.init_steps_taken[row] >= cfg.init_steps:
                self.phase[row] = "constrained"
            else:
                self.init_steps_taken[row] += 1
                weights = initial_weights(gram, active, cfg.solver_max_iter, cfg.solver_tol)
                self.last_weights[row] = weights
                return weights
        weights = constrained_weights(gram, directions[values > -cfg.epsilon], cfg.solver_max_iter, cfg.solver_tol)
        self.last_weights[row] = weights
        return weights

    def backward(self, task_losses: torch.Tensor, rays: torch.Tensor, model: PreferenceModel,
                 progress: float) -> torch.Tensor:
        return combined_backward(task_losses, list(model.nets), self.cfg.gradients, self.task_weights)
