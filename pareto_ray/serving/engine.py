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
from pydantic import ValidationError

from pareto_ray.inputs_spec import InputError, InputSpec, read_npy
from pareto_ray.serving.inputs import (
    INPUT_SHAPE,
    MULTIPART_EXPECTED,
    accepted_forms,
    b64decode,
    check_preference,
    input_error,
    one_form,
    parse_array,
    parse_body,
    parse_images,
    parse_inputs,
    parse_json,
    parse_multipart,
    parse_npy,
    parse_rows,
)
from pareto_ray.serving.loading import ServedModel
from pareto_ray.serving.outputs import present
from pareto_ray.serving.predictors import BatchItem, ItemResult, make_predictor
from pareto_ray.serving.schemas import (
    ColumnInfo,
    InputInfo,
    MetricInfo,
    ModelInfo,
    OutputOptions,
    PredictRequest,
    PredictResponse,
    RequestError,
    SelectRequest,
    SelectResponse,
    ServeSettings,
    TaskInfo,
    validation_error_body,
)
from pareto_ray.serving.selection import front_rows, select_preference
from pareto_ray.splits import NORMALIZE_MEAN, NORMALIZE_STD
from pareto_ray.tasks import Task, classification_tasks

#: The MultiMNIST family's inputs: uint8 pixels normalized as (pixel/255 − 0.1307) / 0.3081.
DIGITS_INPUT = {"kind": "image", "shape": list(INPUT_SHAPE), "dtype": "uint8", "scale": 1 / 255,
                "mean": NORMALIZE_MEAN, "std": NORMALIZE_STD}


@dataclass(frozen=True)
class ModelSummary:
    """What the ingress needs from the model deployment, once: the tasks, the input spec (the checkpoint's
    ``dataset.json``) and the evaluated front."""

    num_tasks: int
    front: pa.Table | None
    input_shape: tuple[int, ...] = INPUT_SHAPE
    input: dict = field(default_factory=lambda: dict(DIGITS_INPUT))
    tasks: tuple[Task, ...] = ()

    @property
    def spec(self) -> InputSpec:
        return InputSpec.from_dict(self.input)

    def task_list(self) -> list[Task]:
        return list(self.tasks) or classification_tasks(self.num_tasks)

    def trained_range(self) -> tuple[float, float]:
        """The model inputs' range over stored values in [0, 1/scale] (pixels 0…255 for uint8 images)."""
        return self.spec.model_range()


class Frontend:
    """The ingress's share of a request: parsing and decoding, validation, front selection and the answer, no model."""

    def __init__(self, summary: ModelSummary, settings: ServeSettings | None = None):
        self.summary = summary
        self.num_tasks = summary.num_tasks
        self.spec = summary.spec
        self.tasks = summary.task_list()
        self.settings = settings or ServeSettings()

    def configure(self, settings: ServeSettings) -> None:
        self.settings = settings

    def preference(self, values: list[float]) -> tuple[float, ...]:
        """λ validated and rounded (the batching key), or a 422 naming ``preference``."""
        s = self.settings
        return check_preference(values, self.num_tasks, s.preference_tolerance, s.allow_pseudo)

    def validate(self, request: PredictRequest) -> BatchItem:
        """A parsed request → a validated item: λ checked and rounded, the inputs in their one form turned into
        the model's float tensor (images decoded, rows encoded)."""
        s = self.settings
        key = self.preference(request.preference)
        form = one_form(request.forms())
        shape = tuple(self.spec.shape)
        if form == "inputs":
            x = parse_inputs(request.inputs, s.max_inputs, shape)
        elif form == "npy":
            x = parse_npy(request.npy, shape, s.max_inputs, s.max_body_bytes)
        elif form == "images":
            x = parse_images(self.image_bytes(request.images), self.spec, s.max_inputs, s.max_image_pixels,
                             s.max_request_pixels)
        else:
            x = parse_rows(request.rows, self.spec, s.max_inputs)
        return BatchItem(x, key, request.output)

    def image_bytes(self, images: list[str]) -> list[tuple[str, bytes]]:
        expected = "a base64 PNG or JPEG image (a data: URL too)"
        return [(f"images.{i}", b64decode(text, f"images.{i}", expected)) for i, text in enumerate(images)]

    def parse_predict(self, body: bytes, content_type: str | None = None) -> BatchItem:
        """A ``/v1/predict`` body (JSON, or ``multipart/form-data``) → a validated item, or a ``RequestError``
        naming the field."""
        if content_type and content_type.lower().startswith("multipart/form-data"):
            return self.parse_multipart_predict(body, content_type)
        return self.validate(parse_body(body, PredictRequest))

    def parse_multipart_predict(self, body: bytes, content_type: str) -> BatchItem:
        s = self.settings
        fields = parse_multipart(body, content_type, s.max_inputs + 2)
        for name in ("preference", "output"):
            if len(fields.get(name, [])) > 1:
                raise RequestError(name, f"the field {name!r} appears more than once", "each field once", status=400)
        if "preference" not in fields:
            raise RequestError("preference", "missing", MULTIPART_EXPECTED)
        values = {"preference": parse_json(fields["preference"][0][1])}
        if "output" in fields:
            values["output"] = parse_json(fields["output"][0][1])
        try:
            request = PredictRequest.model_validate(values)
        except ValidationError as exc:
            err = validation_error_body(exc)["error"]
            raise RequestError(err["field"], err["message"], err["expected"]) from None
        key = self.preference(request.preference)
        form = one_form([name for name in ("images", "npy") if name in fields])
        if form == "npy":
            if len(fields["npy"]) > 1:
                raise RequestError("npy", "more than one .npy file", "one .npy file holding the batch")
            try:
                arr = read_npy(fields["npy"][0][1], s.max_body_bytes)
            except InputError as exc:
                raise input_error(exc, "npy") from None
            return BatchItem(parse_array(arr, tuple(self.spec.shape), s.max_inputs), key, request.output)
        images = [(f"images.{i}", data) for i, (_, data) in enumerate(fields["images"])]
        x = parse_images(images, self.spec, s.max_inputs, s.max_image_pixels, s.max_request_pixels)
        return BatchItem(x, key, request.output)

    @staticmethod
    def parse_select(body: bytes) -> SelectRequest:
        return parse_body(body, SelectRequest)

    def response(self, item: BatchItem, result: ItemResult) -> PredictResponse:
        """The answer for ``item``, one typed object per task; a non-finite output (inputs far outside the trained
        range) is a 422."""
        if not all(bool(torch.isfinite(p).all()) for p in result.outputs):
            lo, hi = self.summary.trained_range()
            spec = self.spec
            raise RequestError(
                "inputs", "the model's output for these inputs is not finite (NaN/Inf): they lie far outside the "
                          "range it was trained on",
                f"inputs normalized like training, (value·{spec.scale:g} − mean) / std with mean {spec.mean} "
                f"and std {spec.std}, i.e. within [{lo:.4f}, {hi:.4f}]")
        options = item.output or OutputOptions()
        preds = [present(t + 1, task, out, options) for t, (task, out) in enumerate(zip(self.tasks, result.outputs))]
        return PredictResponse(preference=list(item.preference), predictions=preds, forward=result.path,
                               batch_size=result.batch_size)

    def input_info(self) -> InputInfo:
        spec, s = self.spec, self.settings
        image = spec.kind == "image"
        encoder = spec.encoder
        columns = None if encoder is None else [
            ColumnInfo(name=c.name, type=c.type, categories=list(c.categories) or None, nullable=c.nullable)
            for c in encoder.columns]
        return InputInfo(
            kind=spec.kind, forms=accepted_forms(spec), shape=list(spec.shape), dtype=spec.dtype,
            channels=spec.channels if image else None, size=list(spec.size) if image else None,
            resize=spec.resize if image else None, scale=spec.scale,
            mean=list(spec.mean) if isinstance(spec.mean, tuple) else spec.mean,
            std=list(spec.std) if isinstance(spec.std, tuple) else spec.std, columns=columns,
            features=encoder.feature_names() if encoder else None,
            limits={"max_inputs": s.max_inputs, "max_body_bytes": s.max_body_bytes,
                    "max_image_pixels": s.max_image_pixels, "max_request_pixels": s.max_request_pixels})

    def task_info(self) -> list[TaskInfo]:
        metrics = front_metrics_of(self.summary.front, self.tasks)
        return [TaskInfo(task=t + 1, name=task.name, kind=task.kind, outputs=task.outputs,
                         labels=list(task.labels) if task.labels else None, front_metric=task.front_metric,
                         metrics=[MetricInfo(name=m, higher_is_better=m in task.behaviour.higher) for m in metrics[t]])
                for t, task in enumerate(self.tasks)]

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
                            input=dict(self.served.dataset.input), tasks=tuple(self.served.dataset.tasks))

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

    def predict(self, request: PredictRequest) -> PredictResponse:
        """One request through the whole path in this process (validation, a batch of one, the answer)."""
        item = self.validate(request)
        return self.response(item, self.run_batch([item])[0])

    def info(self) -> ModelInfo:
        s = self.served
        costs = self.predictor.costs()
        return ModelInfo(
            method=s.method + (" (backbone only)" if self.backbone_only else ""),
            preference_conditioned=self.predictor.preference_conditioned, num_tasks=self.num_tasks,
            num_classes=s.num_classes, backbone=s.cfg.model.backbone, input_shape=list(self.input_shape),
            input_normalization=_normalization(s.dataset.input), input=self.frontend.input_info(),
            tasks=self.frontend.task_info(), source=s.source,
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


def front_metrics_of(front: pa.Table | None, tasks: list[Task]) -> list[list[str]]:
    """Per task, the metrics the front holds for it (``<metric>_<t>`` columns); without a front, the kind's."""
    if front is None:
        return [list(task.behaviour.metrics) for task in tasks]
    names = set(front.column_names)
    return [[m for m in task.behaviour.metrics if f"{m}_{t + 1}" in names] for t, task in enumerate(tasks)]


