"""Linear scalarization: one multi-task model trained on fixed task weights."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from pareto_ray.methods.base import Method, MethodConfig
from pareto_ray.models import FixedModel, MultiTaskNet, PreferenceModel


class LSConfig(MethodConfig):
    name: Literal["ls"] = "ls"
    weights: list[float] | None = Field(
        default=None, description="task weights on the simplex; default uniform 1/T")

    @field_validator("weights")
    @classmethod
    def _on_simplex(cls, w: list[float] | None) -> list[float] | None:
        if w is not None and (min(w) < 0 or abs(sum(w) - 1) > 1e-6):
            raise ValueError(f"weights must be >= 0 and sum to 1, got {w}")
        return w


class LinearScalarization(Method):
    name = "ls"
    preference_conditioned = False
    cfg: LSConfig

    def _weights(self) -> torch.Tensor:
        if self.cfg.weights is None:
            return torch.full((1, self.num_tasks), 1.0 / self.num_tasks)
        if len(self.cfg.weights) != self.num_tasks:
            raise ValueError(f"method.weights has {len(self.cfg.weights)} entries but the data has "
                             f"{self.num_tasks} tasks")
        return torch.tensor([self.cfg.weights], dtype=torch.float32)

    def build_model(self, net: MultiTaskNet) -> PreferenceModel:
        return FixedModel(net)

    def train_rays(self, progress: float) -> torch.Tensor:
        return self._weights()

    def eval_rays(self, grid: torch.Tensor) -> torch.Tensor:
        return self._weights()
