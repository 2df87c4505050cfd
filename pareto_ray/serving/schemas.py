"""The HTTP API's schemas: settings, requests, responses, and the 4xx error body."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)

#: The bearer token of the API, if any, is read from this environment variable (by the ingress replica itself).
TOKEN_ENV = "PARETO_RAY_API_TOKEN"

#: A JSON number that is finite and not a boolean (``true`` is no bound, ``"NaN"`` is no number).
FiniteNumber = Annotated[float, Strict(), AllowInfNan(False)]

#: The settings the ingress deployment applies (HTTP limits, request validation); the model deployment applies the rest.
INGRESS_SETTINGS = frozenset({"preference_tolerance", "allow_pseudo", "max_inputs", "max_body_bytes", "body_timeout_s",
                              "max_header_bytes", "max_headers", "model_timeout_s"})


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
    max_inputs: int = Field(default=256, ge=1, le=65_536, description="inputs per request")
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


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preference: list[StrictFloat] = Field(
        description="λ: one weight per task, each ≥ 0, summing to 1 (±preference_tolerance)", examples=[[0.5, 0.5]])
    inputs: list[Any] = Field(
        description="B ≥ 1 inputs as nested lists of numbers, shaped [B, 1, 28, 28]: images normalized like "
                    "training, (pixel/255 − 0.1307) / 0.3081 (see GET /v1/model)")


class TaskPrediction(BaseModel):
    task: int = Field(description="task number, 1-based")
    classes: list[int] = Field(description="predicted class per input")
    probabilities: list[list[float]] = Field(description="class probabilities per input")


class PredictResponse(BaseModel):
    preference: list[float] = Field(description="the λ used: the request's λ rounded to the tolerance")
    predictions: list[TaskPrediction]
    forward: Literal["merged", "per_sample", "fixed"] = Field(description="how the batch holding this request ran")
    batch_size: int = Field(description="requests in the batch that served this one")


class Constraint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: StrictInt = Field(ge=1, description="task number, 1-based")
    metric: Literal["acc", "loss"] = "acc"
    min: FiniteNumber | None = Field(default=None, description="metric ≥ min (a finite number)")
    max: FiniteNumber | None = Field(default=None, description="metric ≤ max (a finite number)")

    @model_validator(mode="after")
    def _bounded(self) -> Constraint:
        if self.min is None and self.max is None:
            raise ValueError("a constraint needs min or max")
        return self

    def describe(self) -> str:
        parts = ([f"≥ {self.min:g}"] if self.min is not None else []) + ([f"≤ {self.max:g}"] if self.max is not None else [])
        return f"task {self.task} {self.metric} {' and '.join(parts)}"


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: StrictInt | None = Field(default=None, ge=1, description="task to optimize; none = the mean over tasks")
    metric: Literal["acc", "loss"] = "acc"
    goal: Literal["max", "min"] = "max"


class SelectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    constraints: list[Constraint] = Field(default_factory=list, examples=[[{"task": 2, "metric": "acc", "min": 0.9}]])
    objective: Objective = Field(default_factory=Objective, examples=[{"task": 1, "metric": "acc", "goal": "max"}])
    resolution: StrictInt = Field(default=100, ge=1, le=1000,
                            description="partitions of the simplex grid searched between the front's rays")


class SelectResponse(BaseModel):
    feasible: bool = Field(description="whether the chosen λ meets every constraint")
    preference: list[float] = Field(description="the chosen λ (send it to /v1/predict)")
    expected: dict[str, float] = Field(description="front metrics expected at λ (linear between evaluated rays)")
    objective: float
    interpolated: bool = Field(description="λ lies between the evaluated rays, not on one")
    message: str


class ModelInfo(BaseModel):
    method: str
    preference_conditioned: bool
    num_tasks: int
    num_classes: int
    backbone: str
    input_shape: list[int]
    input_normalization: dict[str, float]
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
