"""Ray Serve application: one deployed model answers for every trade-off λ.

Run it::

    serve run serve/config.yaml
    serve run pareto_ray.serving.app:build_app model=<checkpoint dir | models:/<name>/<version>>
    pareto-ray serve --model SOURCE [--port P]

Two deployments in one application:

* ``ParetoFrontIngress`` (the HTTP ingress, light, no CPU reserved): the
  ``Guard`` (header limits, auth, the body read whole under a deadline), then
  parsing and validating the request, ``/healthz``, ``/v1/front`` and
  ``/v1/select`` on its own; ``/v1/predict`` and ``/v1/model`` call
  the model deployment through a ``DeploymentHandle`` (retried on another
  replica when one dies, within ``model_timeout_s``);
* ``ParetoFrontServer`` (the model): loads the model once, a ``Batcher``
  collects validated requests while a batch runs (the next batch is cut when
  the model is free), batches by λ and runs the forward.

So a slow or hostile client never holds a slot of the model's queue, and
health checks never wait behind predictions.  The work itself lives in
``pareto_ray.serving.engine`` and the modules it uses (no Ray there).
Endpoints are documented in the generated OpenAPI at ``/docs``.
"""

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import Application
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from pareto_ray import __version__
from pareto_ray.checkpoint import CheckpointError
from pareto_ray.model_tracking import MLFLOW_SCHEMES
from pareto_ray.runtime import init_ray
from pareto_ray.serving.engine import Engine, Frontend, ModelSummary
from pareto_ray.serving.explorer import PAGE_PATH, ExplorerCard, explorer_card, page
from pareto_ray.serving.guard import PUBLIC_PATHS, Guard, GuardConfig, error_response, read_token
from pareto_ray.serving.inputs import is_plain_json
from pareto_ray.serving.loading import load_served_model
from pareto_ray.serving.predictors import BatchItem, ItemResult
from pareto_ray.serving.schemas import (
    INGRESS_SETTINGS,
    TOKEN_ENV,
    ErrorBody,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    RequestError,
    SelectRequest,
    SelectResponse,
    ServeSettings,
    validation_error_body,
)
from pareto_ray.tracking import resolve_tracking_uri

__all__ = ["PUBLIC_PATHS", "AppArgs", "ParetoFrontIngress", "ParetoFrontServer", "app", "build_app", "run"]

logger = logging.getLogger("ray.serve")

#: Replica deaths and a deployment with no replica yet: worth another try (a predict is idempotent).
RETRIABLE = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
#: Bodies larger than this are parsed off the event loop, so /healthz never waits behind a big JSON parse.
PARSE_IN_THREAD_BYTES = 32 * 1024

app = FastAPI(
    title="pareto-ray",
    version=__version__,
    description="A Pareto-front model served for any preference λ: send λ with the inputs, get the predictions "
                "of the model formed for that trade-off; or pick λ by outcome with /v1/select.",
)


class FrontResponse(BaseModel):
    num_tasks: int
    rows: list[dict[str, float]] = Field(description="one row per evaluated ray: ray_t, acc_t, loss_t (validation)")


class Health(BaseModel):
    status: str


def _guard_config() -> GuardConfig:
    return serve.get_replica_context().servable_object.guard_config()


app.add_middleware(Guard, config=_guard_config)


@app.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return JSONResponse(exc.body(), exc.status, headers)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    expected = {404: "one of the paths listed at /docs", 405: f"one of: {(exc.headers or {}).get('Allow', '')}"}
    return error_response(exc.status_code, "path", f"{request.method} {request.url.path}: {exc.detail}",
                          expected.get(exc.status_code, "a request as documented at /docs"), exc.headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(validation_error_body(exc), 422)


@app.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error answering %s %s", request.method, request.url.path)
    return error_response(500, "server", f"internal error ({type(exc).__name__})", "a retry; see the replica's log")


_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "a bad request: the error names the field and the expected form"},
    "5XX": {"model": ErrorBody, "description": "the model is unavailable (503, with Retry-After) or failed (500)"},
}


def _openapi() -> dict[str, Any]:
    """FastAPI's schema plus the request bodies, which the routes read themselves (under the body deadline)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for path, model in (("/v1/predict", PredictRequest), ("/v1/select", SelectRequest)):
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(js.pop("$defs", {}))
        components[model.__name__] = js
        schema["paths"][path]["post"]["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"] = {"schema": MULTIPART_SCHEMA}
    app.openapi_schema = schema
    return schema


app.openapi = _openapi

#: ``/v1/predict`` as a file upload (``curl -F``): what ``inputs.parse_multipart`` reads.
MULTIPART_SCHEMA = {
    "type": "object", "required": ["preference"],
    "properties": {
        "preference": {"type": "string", "description": "λ as a JSON array, e.g. [0.3, 0.7]"},
        "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                   "description": "image models: one PNG or JPEG file per part (repeat the field)"},
        "npy": {"type": "string", "format": "binary", "description": "or one .npy file of model inputs [B, *shape]"},
        "output": {"type": "string", "description": 'options as a JSON object, e.g. {"top_k": 3}'},
    },
}


class Batcher:
    """Collects the model replica's requests while a batch runs, and cuts the next batch when the model is free.

    Ray Serve's ``@serve.batch`` (2.60) cuts a batch as soon as ``batch_wait_timeout_s`` has passed since its first
    request and queues it behind the running one (``max_concurrent_batches``): under load the batches stay at
    about one request each (measured: mean batch 1.1 with 64 clients, docs/results.md, issue 17).  Here the
    requests wait in one list; when the model is free it takes up to ``max_batch_size`` of them (waiting up to
    ``wait_s`` for more while it has fewer), runs them in a thread (the event loop keeps accepting meanwhile)
    and answers each caller.  A caller that gave up (cancelled) is dropped before its batch runs.
    """

    def __init__(self, run: Any, max_batch_size: int, wait_s: float):
        self.run, self.max_batch_size, self.wait_s = run, max_batch_size, wait_s
        self.pending: list[tuple[BatchItem, asyncio.Future]] = []
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, item: BatchItem) -> ItemResult:
        loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Event()
        future = loop.create_future()
        self.pending.append((item, future))
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work())
        return await future

    async def _gather(self) -> None:
        """Wait up to ``wait_s`` for a fuller batch (returns at once when ``max_batch_size`` are pending)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while len(self.pending) < self.max_batch_size and (remaining := deadline - loop.time()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _work(self) -> None:
        while self.pending:
            await self._gather()
            batch, self.pending = self.pending[:self.max_batch_size], self.pending[self.max_batch_size:]
            live = [(item, f) for item, f in batch if not f.done()]
            if not live:
                continue
            try:
                results = await asyncio.to_thread(self.run, [item for item, _ in live])
            except Exception as exc:  # every caller of the batch gets the error, as with @serve.batch
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for (_, f), result in zip(live, results):
                if not f.done():
                    f.set_result(result)


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
class ParetoFrontServer:
    """The model deployment: loads the model once, then batches validated requests of every λ."""

    def __init__(self, model: str, tracking_uri: str | None = None, backbone_only: bool = False):
        # A missing or corrupted checkpoint raises CheckpointError here, which fails the deployment's start.
        self.engine = Engine(load_served_model(model, tracking_uri), ServeSettings(), backbone_only)
        settings = self.engine.settings
        self.batcher = Batcher(self.engine.run_batch, settings.max_batch_size, settings.batch_wait_timeout_s)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        settings = ServeSettings.model_validate(user_config or {})
        self.engine.configure(settings)
        self.batcher.max_batch_size = settings.max_batch_size
        self.batcher.wait_s = settings.batch_wait_timeout_s

    async def predict(self, item: BatchItem) -> ItemResult:
        return await self.batcher.submit(item)

    def summary(self) -> ModelSummary:
        return self.engine.summary()

    def info(self) -> ModelInfo:
        return self.engine.info()

    def explorer_card(self) -> ExplorerCard:
        return explorer_card(self.engine.served)


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class ParetoFrontIngress:
    """The HTTP ingress: limits, auth, the body deadline and validation; the model is behind a handle."""

    def __init__(self, model: DeploymentHandle, token_file: str | None = None, require_token: bool = False):
        self.model = model
        self.token = read_token(token_file, require_token)  # a TokenError fails the start: auth is never silently off
        self.settings = ServeSettings()
        self._frontend: Frontend | None = None
        self._frontend_lock = asyncio.Lock()
        self._card: ExplorerCard | None = None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.settings = ServeSettings.model_validate(user_config or {})
        if self._frontend is not None:
            self._frontend.configure(self.settings)

    def guard_config(self) -> GuardConfig:
        return GuardConfig(self.settings, self.token)

    async def call_model(self, method: str, *args: Any) -> Any:
        """``method`` of the model deployment; a replica that dies mid-request is retried on another, until
        ``model_timeout_s``; then, or on back-pressure, a 503 ``RequestError``."""
        timeout = self.settings.model_timeout_s
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                return await asyncio.wait_for(getattr(self.model, method).remote(*args),
                                              max(deadline - time.monotonic(), 1e-3))
            except asyncio.TimeoutError:
                raise RequestError("model", f"the model deployment did not answer within {timeout:g} s",
                                   "a retry later (see Retry-After)", status=503) from None
            except BackPressureError:
                raise RequestError("model", "the model deployment's queue is full",
                                   "a retry later (see Retry-After)", status=503) from None
            except RETRIABLE as exc:
                if time.monotonic() + delay >= deadline:
                    raise RequestError("model", f"no model replica answered within {timeout:g} s "
                                                f"({type(exc).__name__})", "a retry later (see Retry-After)",
                                       status=503) from None
                logger.warning("model replica unavailable (%s); retrying %s", type(exc).__name__, method)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)

    async def frontend(self) -> Frontend:
        """The validation and selection side, built once from the model deployment's summary."""
        if self._frontend is not None:
            return self._frontend
        async with self._frontend_lock:
            if self._frontend is None:
                summary: ModelSummary = await self.call_model("summary")
                self._frontend = Frontend(summary, self.settings)
        return self._frontend

    @app.get("/healthz", response_model=Health, summary="Liveness of the ingress (never waits on the model)")
    async def healthz(self) -> Health:
        return Health(status="ok")

    @app.get(PAGE_PATH, include_in_schema=False)
    async def explorer_page(self) -> Response:
        body, headers = page()
        return Response(body, headers=headers)

    @app.get("/v1/explorer/card", response_model=ExplorerCard, responses=_ERRORS,
             summary="The front explorer's model card (tasks, training run, test HV) and stored test samples")
    async def explorer_card(self) -> ExplorerCard:
        if self._card is None:
            self._card = await self.call_model("explorer_card")
        return self._card

    @app.get("/v1/model", response_model=ModelInfo, summary="Method, tasks, input shape, version and settings",
             responses=_ERRORS)
    async def model_info(self) -> ModelInfo:
        info: ModelInfo = await self.call_model("info")
        # each key as applied where it is used: the ingress's own, the model replica's for the rest
        mine = self.settings.model_dump(include=set(INGRESS_SETTINGS))
        limits = {k: v for k, v in mine.items() if k in info.input.limits}
        return info.model_copy(update={"settings": info.settings.model_copy(update=mine),
                                       "input": info.input.model_copy(update={"limits": limits})})

    @app.get("/v1/front", response_model=FrontResponse, summary="The model's evaluated front (validation split)",
             responses=_ERRORS)
    async def front(self) -> FrontResponse:
        frontend = await self.frontend()
        return FrontResponse(num_tasks=frontend.num_tasks, rows=frontend.front())

    @app.post("/v1/select", response_model=SelectResponse, summary="Pick λ by outcome: targets and constraints",
              responses=_ERRORS)
    async def select(self, request: Request) -> SelectResponse:
        frontend = await self.frontend()
        body = frontend.parse_select(await request.body())
        return await asyncio.to_thread(frontend.select, body)

    @app.post("/v1/predict", response_model=PredictResponse, response_model_exclude_none=True, responses=_ERRORS,
              summary="Predictions of the model formed for λ: one typed answer per task")
    async def predict(self, request: Request, response: Response) -> PredictResponse:
        frontend = await self.frontend()
        body = await request.body()
        content_type = request.headers.get("content-type")
        # Parsing, image decoding and row encoding run here, in the ingress, in a thread (so /healthz never waits
        # behind them and the model replica's forward overlaps them); a RequestError (4xx) means bad input never
        # reaches the model deployment.
        item = (await asyncio.to_thread(frontend.parse_predict, body, content_type)
                if len(body) > PARSE_IN_THREAD_BYTES or not is_plain_json(body, content_type)
                else frontend.parse_predict(body, content_type))
        result: ItemResult = await self.call_model("predict", item)
        response.headers["X-Batch-Size"] = str(result.batch_size)
        response.headers["X-Batch-Groups"] = str(result.groups)
        response.headers["X-Forward-Path"] = result.path
        return frontend.response(item, result)


class AppArgs(BaseModel):
    """Arguments of the application builder (``serve run pareto_ray.serving.app:build_app model=...`` or config ``args``)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="checkpoint directory, or an MLflow URI models:/<name>/<version>")
    tracking_uri: str | None = Field(default=None, description="MLflow tracking/registry URI for models:/ sources")
    backbone_only: bool = Field(default=False, description="serve the bare base network, ignoring λ (benchmark limit)")
    settings: dict[str, Any] = Field(default_factory=dict, description="initial user_config (ServeSettings) of both")
    num_cpus: float = Field(default=1.0, gt=0, description="CPUs reserved per model replica (torch threads follow it)")
    num_replicas: int = Field(default=2, ge=1, description="model replicas (2: one can die without an outage)")
    ingress_replicas: int = Field(default=2, ge=1, description="ingress replicas (no CPU reserved)")
    token_file: str | None = Field(default=None, description="file holding the API token, read by each ingress "
                                                             "replica (else it reads $PARETO_RAY_API_TOKEN itself)")


def build_app(args: dict[str, Any]) -> Application:
    """Application builder: checks the source, then binds the ingress to the model deployment.

    The API token never passes through Ray: each ingress replica reads it from ``token_file`` or from its
    own ``PARETO_RAY_API_TOKEN``.  A token in the builder's environment (or ``token_file``) makes it
    required, so a replica without one fails to start instead of serving without auth.
    """
    a = AppArgs.model_validate(args)
    model, tracking_uri = a.model, a.tracking_uri
    if model.startswith(MLFLOW_SCHEMES):
        tracking_uri = resolve_tracking_uri(tracking_uri)  # absolute, so replicas find the same store
    else:
        path = Path(model).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"checkpoint directory not found: {path}")
        model = str(path.resolve())
    user_config = ServeSettings.model_validate(a.settings).model_dump()
    token_file = str(Path(a.token_file).expanduser().resolve()) if a.token_file else None
    server = ParetoFrontServer.options(user_config=user_config, num_replicas=a.num_replicas,
                                       ray_actor_options={"num_cpus": a.num_cpus})
    ingress = ParetoFrontIngress.options(user_config=user_config, num_replicas=a.ingress_replicas)
    handle = server.bind(model=model, tracking_uri=tracking_uri, backbone_only=a.backbone_only)
    return ingress.bind(handle, token_file=token_file, require_token=bool(token_file or os.environ.get(TOKEN_ENV)))


def run(model: str, host: str = "127.0.0.1", port: int = 8000, tracking_uri: str | None = None,
        settings: dict[str, Any] | None = None, blocking: bool = True, num_replicas: int | None = None,
        access_log: bool = False, token_file: str | None = None) -> None:
    """Start Serve on ``host:port`` and deploy the app (what ``pareto-ray serve`` runs).

    ``num_replicas`` None: 2 model replicas where the local Ray has the CPUs for them, else 1.
    """
    init_ray()
    if num_replicas is None:  # a model replica reserves one CPU
        num_replicas = 2 if ray.cluster_resources().get("CPU", 0) >= 2 else 1
    logging_config = {"enable_access_log": access_log}
    serve.start(http_options={"host": host, "port": port}, logging_config=logging_config)
    application = build_app({"model": model, "tracking_uri": tracking_uri, "settings": settings or {},
                             "num_replicas": num_replicas, "token_file": token_file})
    serve.run(application, name="pareto-ray", route_prefix="/", logging_config=logging_config)
    print(json.dumps({"url": f"http://{host}:{port}", "docs": f"http://{host}:{port}/docs",
                      "explorer": f"http://{host}:{port}{PAGE_PATH}", "model": model,
                      "model_replicas": num_replicas}), flush=True)
    if not blocking:
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C or `kill`: shut Serve and the local Ray down cleanly (SIGINT is ignored in background jobs otherwise).
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
