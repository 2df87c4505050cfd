"""The HTTP API's schemas: settings, requests, responses, and the 4xx error body."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

#: The bearer token of the API, if any, is read from this environment variable (by the ingress replica itself).
TOKEN_ENV = "PARETO_RAY_API_TOKEN"

#: A JSON number that is finite and not a boolean (``true`` is no bound, ``"NaN"`` is no number).
FiniteNumber = Annotated[float, Strict(), AllowInfNan(False)]

#: The settings the ingress deployment applies (HTTP limits, request validation); the model deployment applies the rest.
INGRESS_SETTINGS = frozenset({"preference_tolerance", "allow_pseudo", "max_inputs", "max_body_bytes", "body_timeout_s",
                              "max_header_bytes", "max_headers", "model_timeout_s", "max_image_pixels",
                              "max_request_pixels"})
#: The request fields that carry inputs: exactly one per request.
INPUT_FORMS = ("inputs", "npy", "images", "rows")


class ServeSettings(BaseModel):
    """Per-deployment options; Serve's ``user_config``, so they change without a redeploy.

    Both deployments take the same settings; each applies its own keys (``INGRESS_SETTINGS`` the ingress, the
    others the model deployment), so one block in the config serves both.
    """

    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(default=32, ge=1, le=1024, description="requests per batch (1 = batching off)")
    batch_wait_timeout_s: float = Field(default=0.005, ge=0, le=1, description="how long a batch waits to fill")
    preference_tolerance: float = Field(
        default=1e-3, gt=0, le=0.05,
        description="λ must sum to 1 within this; it is rounded to multiples of it (the batching key)")
    allow_pseudo: bool = Field(default=False, description="accept pseudopreferences (entries < 0 or > 1, sum 1)")
    forward_path: Literal["auto", "merged", "per_sample"] = Field(
        default="auto", description="auto = the measured cost model picks per batch")
    cache_size: int = Field(default=64, ge=1, le=100_000, description="λ whose merged weights are kept (LRU)")
    max_inputs: int = Field(default=256, ge=1, le=65_536, description="inputs per request (images, rows, tensors)")
    max_image_pixels: int = Field(
        default=16_777_216, ge=1, description="pixels per image (width × height, read from its header before decoding); "
                                              "more is a 413")
    max_request_pixels: int = Field(
        default=67_108_864, ge=1, description="pixels of all images of one request, from their headers before any is "
                                              "decoded; more is a 413 (bounds the decoding work per request)")
    max_body_bytes: int = Field(default=8 * 2**20, ge=1024, description="larger request bodies get 413")
    body_timeout_s: float = Field(
        default=10.0, gt=0, le=600,
        description="the whole request body must arrive within this, else 408 (a slow client frees its slot)")
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, description="request headers larger in total get 431")
    max_headers: int = Field(default=100, ge=8, description="requests with more header fields get 431")
    model_timeout_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="how long the ingress waits for the model deployment, retries after a replica died included; "
                    "then 503")


class OutputOptions(BaseModel):
    """What to add to the answers (per task kind)."""

    model_config = ConfigDict(extra="forbid")
    top_k: StrictInt | None = Field(default=None, ge=1, le=1000,
                                    description="classification: also the k most probable classes of each input")
    areas: StrictBool = Field(default=False, description="segmentation: also the fraction of pixels of each class")


class PredictRequest(BaseModel):
    """λ and the inputs, in exactly one of the forms ``inputs``, ``npy``, ``images`` or ``rows`` (GET /v1/model
    says which the model takes: ``input.forms``)."""

    model_config = ConfigDict(extra="forbid")
    preference: list[StrictFloat] = Field(
        description="λ: one weight per task, each ≥ 0, summing to 1 (±preference_tolerance)", examples=[[0.5, 0.5]])
    inputs: list[Any] | None = Field(
        default=None,
        description="B ≥ 1 model inputs as nested lists of numbers shaped [B, *input.shape], normalized like training: "
                    "(stored · scale − mean) / std (see GET /v1/model)")
    npy: str | None = Field(default=None, description="the same model inputs as one base64 .npy file of shape "
                                                      "[B, *input.shape] (numpy.save; no object arrays)")
    images: list[str] | None = Field(
        default=None, description="image models: B base64 PNG or JPEG images (a data: URL too), decoded, converted, "
                                  "resized and normalized as the training images were")
    rows: list[dict[str, Any]] | None = Field(
        default=None, description="tabular models: B rows, objects by column name (GET /v1/model: input.columns), "
                                  "encoded with the encoder fitted at training time",
        examples=[[{"alcohol": 13.2, "color": "red"}]])
    output: OutputOptions = Field(default_factory=OutputOptions)

    def forms(self) -> list[str]:
        """The input forms this request sends (exactly one is valid)."""
        return [name for name in INPUT_FORMS if getattr(self, name) is not None]


class _Prediction(BaseModel):
    task: int = Field(description="task number, 1-based")
    name: str = Field(description="the task's name (its attribute, target, ...)")


class TopClass(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_id: int = Field(alias="class")
    name: str | None = Field(default=None, description="the class's name, when the task has labels")
    probability: float


class ClassificationPrediction(_Prediction):
    kind: Literal["classification"] = "classification"
    classes: list[int] = Field(description="predicted class per input")
    class_names: list[str] | None = Field(default=None, description="their names, when the task has labels")
    probabilities: list[list[float]] = Field(description="class probabilities per input")
    top_k: list[list[TopClass]] | None = Field(default=None, description="the k most probable classes per input "
                                                                         "(output.top_k)")


class BinaryPrediction(_Prediction):
    kind: Literal["binary"] = "binary"
    probability: list[float] = Field(description="P(attribute) per input")
    label: list[int] = Field(description="1 where probability > 0.5, else 0")


class RegressionPrediction(_Prediction):
    kind: Literal["regression"] = "regression"
    values: list[list[float]] = Field(description="per input, the task's outputs in the target's original units "
                                                  "(the training normalization undone)")


class SegmentationPrediction(_Prediction):
    kind: Literal["segmentation"] = "segmentation"
    masks: list[str] = Field(description="per input, the class of every pixel as a base64 PNG: palette (mode P, "
                                         "pixel value = class id) for ≤ 256 classes, else 16-bit grayscale")
    areas: list[dict[str, float]] | None = Field(
        default=None, description="per input, the fraction of pixels of each predicted class, by class name or id "
                                  "(output.areas)")


class DepthPrediction(_Prediction):
    kind: Literal["depth"] = "depth"
    depth: list[str] = Field(description="per input, the depth map as a base64 .npy float32 [H, W] (numpy.load)")


class NormalsPrediction(_Prediction):
    kind: Literal["normals"] = "normals"
    normals: list[str] = Field(description="per input, unit surface normals as a base64 .npy float32 [3, H, W]")


TaskPrediction = Annotated[ClassificationPrediction | BinaryPrediction | RegressionPrediction | SegmentationPrediction
                           | DepthPrediction | NormalsPrediction, Field(discriminator="kind")]


class PredictResponse(BaseModel):
    preference: list[float] = Field(description="the λ used: the request's λ rounded to the tolerance")
    predictions: list[TaskPrediction] = Field(description="one answer per task, typed by its kind")
    forward: Literal["merged", "per_sample", "fixed"] = Field(description="how the batch holding this request ran")
    batch_size: int = Field(description="requests in the batch that served this one")


def _task_name(name: str) -> str:
    if name.strip().lstrip("+-").isdigit():
        raise ValueError("a task number must be a JSON number, not a string")
    return name


#: A task by its 1-based number or by its name (a name is never a number in a string: "1" is refused).
TaskRef = Annotated[StrictInt, Field(ge=1)] | Annotated[StrictStr, AfterValidator(_task_name)]


class Constraint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: TaskRef = Field(description="task number (1-based) or name")
    metric: str | None = Field(default=None, description="one of the task's metrics on the front (GET /v1/model: "
                                                         "tasks[].metrics); default its front metric")
    min: FiniteNumber | None = Field(default=None, description="metric ≥ min (a finite number)")
    max: FiniteNumber | None = Field(default=None, description="metric ≤ max (a finite number)")

    @model_validator(mode="after")
    def _bounded(self) -> Constraint:
        if self.min is None and self.max is None:
            raise ValueError("a constraint needs min or max")
        return self

    def describe(self, metric: str | None = None) -> str:
        parts = ([f"≥ {self.min:g}"] if self.min is not None else []) + ([f"≤ {self.max:g}"] if self.max is not None else [])
        return f"task {self.task} {metric or self.metric} {' and '.join(parts)}"


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: TaskRef | None = Field(default=None, description="task to optimize (number or name); none = the mean over "
                                                           "tasks (when they share the metric)")
    metric: str | None = Field(default=None, description="default: the task's front metric")
    goal: Literal["max", "min"] | None = Field(default=None, description="default: the metric's better direction")


class SelectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    constraints: list[Constraint] = Field(default_factory=list, examples=[[{"task": 2, "metric": "acc", "min": 0.9}]])
    objective: Objective = Field(default_factory=Objective, examples=[{"task": 1, "metric": "acc", "goal": "max"}])
    resolution: StrictInt = Field(default=100, ge=1, le=1000,
                            description="partitions of the simplex grid searched between the front's rays")


class SelectResponse(BaseModel):
    feasible: bool = Field(description="whether the chosen λ meets every constraint")
    preference: list[float] = Field(description="the chosen λ (send it to /v1/predict)")
    expected: dict[str, float] = Field(description="every front metric expected at λ, as <metric>_<task> (linear "
                                                   "between evaluated rays)")
    objective: float
    interpolated: bool = Field(description="λ lies between the evaluated rays, not on one")
    message: str


class MetricInfo(BaseModel):
    name: str
    higher_is_better: bool


class TaskInfo(BaseModel):
    task: int = Field(description="task number, 1-based")
    name: str
    kind: Literal["classification", "binary", "regression", "segmentation", "depth", "normals"]
    outputs: int = Field(description="classes (classification, segmentation) or output values")
    labels: list[str] | None = Field(description="class names, when the dataset gives them")
    front_metric: str
    metrics: list[MetricInfo] = Field(description="the metrics on the front (/v1/front, /v1/select), with direction")


class ColumnInfo(BaseModel):
    name: str
    type: Literal["number", "category", "boolean"]
    categories: list[str] | None = None
    nullable: bool = False


class InputInfo(BaseModel):
    kind: Literal["image", "tabular", "tensor"]
    forms: list[str] = Field(description="the request fields this model takes: images (and multipart uploads), rows, "
                                         "npy, inputs")
    shape: list[int] = Field(description="one stored input: [C, H, W] images, [F] encoded rows")
    dtype: str = Field(description="the stored inputs' dtype (uint8 pixels)")
    channels: int | None = Field(default=None, description="images: 3 (RGB) or 1 (grayscale)")
    size: list[int] | None = Field(default=None, description="images: [H, W] every image is resized to")
    resize: str | None = Field(default=None, description="images: PIL's resampling filter")
    scale: float
    mean: float | list[float]
    std: float | list[float] = Field(description="the model sees (stored · scale − mean) / std (inputs and npy are "
                                                 "in that space already)")
    columns: list[ColumnInfo] | None = Field(default=None, description="tabular: the columns rows are sent by")
    features: list[str] | None = Field(default=None, description="tabular: the encoded features, in order")
    limits: dict[str, int] = Field(description="max_inputs, max_body_bytes, max_image_pixels, max_request_pixels")


class ModelInfo(BaseModel):
    method: str
    preference_conditioned: bool
    num_tasks: int
    num_classes: int
    backbone: str
    input_shape: list[int]
    input_normalization: dict[str, float]
    input: InputInfo = Field(description="the input spec: kind, accepted forms, shape, normalization, columns, limits")
    tasks: list[TaskInfo]
    source: str
    version: str = Field(description="registry version when served from MLflow, else 'checkpoint'")
    weights_sha256: str
    epoch: int | None
    has_front: bool
    settings: ServeSettings
    forward_costs_ms: dict[str, float] | None = Field(description="the measured cost model (None: λ is ignored)")
    torch_threads: int
    cache: dict[str, int]


class ErrorDetail(BaseModel):
    field: str = Field(description="what is wrong: a body field (dotted), a header, 'body', 'path' or 'model'")
    message: str
    expected: str = Field(description="what would have been accepted")


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer of the API."""

    error: ErrorDetail


class RequestError(ValueError):
    """A request that cannot be served; ``field`` and ``expected`` go into the 4xx/5xx body."""

    def __init__(self, field: str, message: str, expected: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.expected, self.status = field, message, expected, status

    def body(self) -> dict[str, Any]:
        return error_body(self.field, self.message, self.expected)


def error_body(field: str, message: str, expected: str) -> dict[str, Any]:
    """``{"error": {"field", "message", "expected"}}``: the body of every error answer."""
    return {"error": {"field": field, "message": message, "expected": expected}}


def validation_error_body(exc: ValidationError | Any, prefix: str = "") -> dict[str, Any]:
    """The first error of a pydantic/FastAPI validation error, in ``RequestError``'s form."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    name = ".".join(loc) or prefix or "body"
    expected = "a JSON object as documented at /docs" if not loc else f"see the schema of '{name}' at /docs"
    return error_body(name, err.get("msg", "invalid"), expected)
