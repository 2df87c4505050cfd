"""Everything a replica does, minus HTTP: validate, batch, run, describe, select (no Ray here)."""

from __future__ import annotations

import torch

from pareto_ray.data import input_normalization
from pareto_ray.serving.inputs import check_preference, parse_inputs
from pareto_ray.serving.loading import ServedModel
from pareto_ray.serving.predictors import BatchItem, ItemResult, make_predictor
from pareto_ray.serving.schemas import (
    ModelInfo,
    PredictRequest,
    PredictResponse,
    RequestError,
    SelectRequest,
    SelectResponse,
    ServeSettings,
    TaskPrediction,
)
from pareto_ray.serving.selection import front_rows, select_preference


class Engine:
    """Everything a replica does, minus HTTP: validate, batch, run, describe, select."""

    def __init__(self, served: ServedModel, settings: ServeSettings | None = None, backbone_only: bool = False):
        self.served = served
        self.settings = settings or ServeSettings()
        self.num_tasks = served.model.num_tasks
        self.input_shape = served.dataset.input_shape
        self.predictor = make_predictor(served.model, self.settings, backbone_only, self.input_shape)
        self.backbone_only = backbone_only

    def configure(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.predictor.configure(settings)

    def validate(self, request: PredictRequest) -> BatchItem:
        s = self.settings
        key = check_preference(request.preference, self.num_tasks, s.preference_tolerance, s.allow_pseudo)
        return BatchItem(parse_inputs(request.inputs, s.max_inputs, self.input_shape), key)

    def run_batch(self, items: list[BatchItem]) -> list[ItemResult]:
        return self.predictor.run_batch(items, self.settings)

    @staticmethod
    def response(item: BatchItem, result: ItemResult) -> PredictResponse:
        preds = [TaskPrediction(task=t + 1, classes=p.argmax(-1).tolist(), probabilities=p.tolist())
                 for t, p in enumerate(result.probabilities)]
        return PredictResponse(preference=list(item.preference), predictions=preds, forward=result.path,
                               batch_size=result.batch_size)

    def info(self) -> ModelInfo:
        s = self.served
        costs = self.predictor.costs()
        return ModelInfo(
            method=s.method + (" (backbone only)" if self.backbone_only else ""),
            preference_conditioned=self.predictor.preference_conditioned, num_tasks=self.num_tasks,
            num_classes=s.num_classes, backbone=s.cfg.model.backbone, input_shape=list(self.input_shape),
            input_normalization=dict(zip(("mean", "std"), input_normalization(s.cfg.data))) | {"scale": 255.0}, source=s.source,
            version=s.version, weights_sha256=s.weights_sha256, epoch=s.epoch, has_front=s.front is not None,
            settings=self.settings, forward_costs_ms=costs.as_ms() if costs else None, torch_threads=torch.get_num_threads(),
            cache=self.predictor.cache_stats())

    def front(self) -> list[dict[str, float]]:
        if self.served.front is None:
            raise RequestError("front", "this checkpoint has no evaluated front (front.parquet)",
                               "a checkpoint written by `pareto-ray train`", status=404)
        return front_rows(self.served.front)

    def select(self, request: SelectRequest) -> SelectResponse:
        if self.served.front is None:
            raise RequestError("front", "this checkpoint has no evaluated front to select from",
                               "a checkpoint written by `pareto-ray train`", status=404)
        return select_preference(self.served.front, request)
