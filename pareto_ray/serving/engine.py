"""Everything the deployments do, minus HTTP and Ray: validate, batch, run, describe, select.

Two objects, one per deployment:

* ``Frontend`` — what the ingress does without the model: parse and validate a
  request body, select λ on the stored front, turn a model result into the
  response (refusing non-finite outputs);
* ``Engine`` — the model deployment: the predictor (batching by λ, weight
  cache) and the model's description; it holds a ``Frontend`` too, so the
  whole request path runs in one process in tests and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import torch

from pareto_ray.data import NORMALIZE_MEAN, NORMALIZE_STD
from pareto_ray.serving.inputs import INPUT_SHAPE, check_preference, parse_body, parse_inputs
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

#: What the model was trained on: MultiMNIST-style pixels normalized as ``(pixel/255 − mean) / std``.
TRAINED_RANGE = ((0.0 - NORMALIZE_MEAN) / NORMALIZE_STD, (1.0 - NORMALIZE_MEAN) / NORMALIZE_STD)


@dataclass(frozen=True)
class ModelSummary:
    """What the ingress needs from the model deployment, once: the number of tasks and the evaluated front."""

    num_tasks: int
    front: pa.Table | None


class Frontend:
    """The ingress's share of a request: validation, front selection and the response, no model."""

    def __init__(self, summary: ModelSummary, settings: ServeSettings | None = None):
        self.summary = summary
        self.num_tasks = summary.num_tasks
        self.settings = settings or ServeSettings()

    def configure(self, settings: ServeSettings) -> None:
        self.settings = settings

    def validate(self, request: PredictRequest) -> BatchItem:
        s = self.settings
        key = check_preference(request.preference, self.num_tasks, s.preference_tolerance, s.allow_pseudo)
        return BatchItem(parse_inputs(request.inputs, s.max_inputs), key)

    def parse_predict(self, body: bytes) -> BatchItem:
        """A ``/v1/predict`` body → a validated item, or a ``RequestError`` naming the field."""
        return self.validate(parse_body(body, PredictRequest))

    @staticmethod
    def parse_select(body: bytes) -> SelectRequest:
        return parse_body(body, SelectRequest)

    @staticmethod
    def response(item: BatchItem, result: ItemResult) -> PredictResponse:
        """The response for ``item``; a non-finite output (inputs far outside the trained range) is a 422."""
        if not all(bool(torch.isfinite(p).all()) for p in result.probabilities):
            lo, hi = TRAINED_RANGE
            raise RequestError(
                "inputs", "the model's output for these inputs is not finite (NaN/Inf): they lie far outside the "
                          "range it was trained on",
                f"inputs normalized like training, (pixel/255 − {NORMALIZE_MEAN}) / {NORMALIZE_STD}, "
                f"i.e. within [{lo:.4f}, {hi:.4f}]")
        preds = [TaskPrediction(task=t + 1, classes=p.argmax(-1).tolist(), probabilities=p.tolist())
                 for t, p in enumerate(result.probabilities)]
        return PredictResponse(preference=list(item.preference), predictions=preds, forward=result.path,
                               batch_size=result.batch_size)

    def front(self) -> list[dict[str, float]]:
        if self.summary.front is None:
            raise RequestError("front", "this checkpoint has no evaluated front (front.parquet)",
                               "a checkpoint written by `pareto-ray train`", status=404)
        return front_rows(self.summary.front)

    def select(self, request: SelectRequest) -> SelectResponse:
        if self.summary.front is None:
            raise RequestError("front", "this checkpoint has no evaluated front to select from",
                               "a checkpoint written by `pareto-ray train`", status=404)
        return select_preference(self.summary.front, request)


class Engine:
    """The model deployment's work, minus Ray: the predictor and the model's description (and a ``Frontend``)."""

    def __init__(self, served: ServedModel, settings: ServeSettings | None = None, backbone_only: bool = False):
        self.served = served
        self.settings = settings or ServeSettings()
        self.num_tasks = served.model.num_tasks
        self.predictor = make_predictor(served.model, self.settings, backbone_only)
        self.backbone_only = backbone_only
        self.frontend = Frontend(self.summary(), self.settings)

    def summary(self) -> ModelSummary:
        return ModelSummary(num_tasks=self.num_tasks, front=self.served.front)

    def configure(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.predictor.configure(settings)
        self.frontend.configure(settings)

    def validate(self, request: PredictRequest) -> BatchItem:
        return self.frontend.validate(request)

    def run_batch(self, items: list[BatchItem]) -> list[ItemResult]:
        return self.predictor.run_batch(items, self.settings)

    @staticmethod
    def response(item: BatchItem, result: ItemResult) -> PredictResponse:
        return Frontend.response(item, result)

    def info(self) -> ModelInfo:
        s = self.served
        costs = self.predictor.costs()
        return ModelInfo(
            method=s.method + (" (backbone only)" if self.backbone_only else ""),
            preference_conditioned=self.predictor.preference_conditioned, num_tasks=self.num_tasks,
            num_classes=s.num_classes, backbone=s.cfg.model.backbone, input_shape=list(INPUT_SHAPE),
            input_normalization={"mean": NORMALIZE_MEAN, "std": NORMALIZE_STD, "scale": 255.0}, source=s.source,
            version=s.version, weights_sha256=s.weights_sha256, epoch=s.epoch, has_front=s.front is not None,
            settings=self.settings, forward_costs_ms=costs.as_ms() if costs else None, torch_threads=torch.get_num_threads(),
            cache=self.predictor.cache_stats())

    def front(self) -> list[dict[str, float]]:
        return self.frontend.front()

    def select(self, request: SelectRequest) -> SelectResponse:
        return self.frontend.select(request)
