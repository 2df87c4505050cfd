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

from dataclasses import dataclass, field

import pyarrow as pa
import torch

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
from pareto_ray.splits import NORMALIZE_MEAN, NORMALIZE_STD

#: The MultiMNIST family's inputs: uint8 pixels normalized as (pixel/255 − 0.1307) / 0.3081.
DIGITS_INPUT = {"shape": list(INPUT_SHAPE), "dtype": "uint8", "scale": 1 / 255, "mean": NORMALIZE_MEAN,
                "std": NORMALIZE_STD}


@dataclass(frozen=True)
class ModelSummary:
    """What the ingress needs from the model deployment, once: the tasks' count, the inputs' shape and
    normalization (the checkpoint's ``dataset.json``) and the evaluated front."""

    num_tasks: int
    front: pa.Table | None
    input_shape: tuple[int, ...] = INPUT_SHAPE
    input: dict = field(default_factory=lambda: dict(DIGITS_INPUT))

    def trained_range(self) -> tuple[float, float]:
        """The model inputs' range over stored values in [0, 1/scale] (pixels 0…255 for uint8 images)."""
        scale, mean, std = self.input["scale"], self.input["mean"], self.input["std"]
        means = mean if isinstance(mean, (list, tuple)) else [mean]
        stds = std if isinstance(std, (list, tuple)) else [std]
        top = 255.0 * scale if self.input.get("dtype") == "uint8" else 1.0
        lows = [(0.0 - m) / s for m, s in zip(means, stds)]
        highs = [(top - m) / s for m, s in zip(means, stds)]
        return min(lows), max(highs)


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
        return BatchItem(parse_inputs(request.inputs, s.max_inputs, self.summary.input_shape), key)

    def parse_predict(self, body: bytes) -> BatchItem:
        """A ``/v1/predict`` body → a validated item, or a ``RequestError`` naming the field."""
        return self.validate(parse_body(body, PredictRequest))

    @staticmethod
    def parse_select(body: bytes) -> SelectRequest:
        return parse_body(body, SelectRequest)

    def response(self, item: BatchItem, result: ItemResult) -> PredictResponse:
        """The response for ``item``; a non-finite output (inputs far outside the trained range) is a 422."""
        if not all(bool(torch.isfinite(p).all()) for p in result.probabilities):
            lo, hi = self.summary.trained_range()
            spec = self.summary.input
            raise RequestError(
                "inputs", "the model's output for these inputs is not finite (NaN/Inf): they lie far outside the "
                          "range it was trained on",
                f"inputs normalized like training, (value·{spec['scale']:g} − mean) / std with mean {spec['mean']} "
                f"and std {spec['std']}, i.e. within [{lo:.4f}, {hi:.4f}]")
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
        self.input_shape = served.dataset.input_shape
        self.predictor = make_predictor(served.model, self.settings, backbone_only, self.input_shape)
        self.backbone_only = backbone_only
        self.frontend = Frontend(self.summary(), self.settings)

    def summary(self) -> ModelSummary:
        return ModelSummary(num_tasks=self.num_tasks, front=self.served.front, input_shape=self.input_shape,
                            input=dict(self.served.dataset.input))

    def configure(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.predictor.configure(settings)
        self.frontend.configure(settings)

    def validate(self, request: PredictRequest) -> BatchItem:
        return self.frontend.validate(request)

    def run_batch(self, items: list[BatchItem]) -> list[ItemResult]:
        return self.predictor.run_batch(items, self.settings)

    def response(self, item: BatchItem, result: ItemResult) -> PredictResponse:
        return self.frontend.response(item, result)

    def info(self) -> ModelInfo:
        s = self.served
        costs = self.predictor.costs()
        return ModelInfo(
            method=s.method + (" (backbone only)" if self.backbone_only else ""),
            preference_conditioned=self.predictor.preference_conditioned, num_tasks=self.num_tasks,
            num_classes=s.num_classes, backbone=s.cfg.model.backbone, input_shape=list(self.input_shape),
            input_normalization=_normalization(s.dataset.input), source=s.source,
            version=s.version, weights_sha256=s.weights_sha256, epoch=s.epoch, has_front=s.front is not None,
            settings=self.settings, forward_costs_ms=costs.as_ms() if costs else None, torch_threads=torch.get_num_threads(),
            cache=self.predictor.cache_stats())

    def front(self) -> list[dict[str, float]]:
        return self.frontend.front()

    def select(self, request: SelectRequest) -> SelectResponse:
        return self.frontend.select(request)


def _normalization(spec: dict) -> dict[str, float]:
    """``ModelInfo.input_normalization``: the model sees (value − mean) / std with value = stored · scale;
    reported as mean, std and the stored values' divisor (255 for pixels)."""
    mean, std = spec["mean"], spec["std"]
    single = not isinstance(mean, (list, tuple))
    return {"mean": float(mean) if single else float(mean[0]), "std": float(std) if single else float(std[0]),
            "scale": 1.0 / spec["scale"]}
