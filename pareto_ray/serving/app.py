"""Ray Serve application: one deployed model answers for every trade-off λ.

Run it::

    serve run serve/config.yaml
    serve run pareto_ray.serving.app:build_app model=<checkpoint dir | models:/<name>/<version>>
    pareto-ray serve --model SOURCE [--port P]

The HTTP layer only: validation, batching by λ, caching and front selection
live in ``pareto_ray.serving.engine`` and the modules it uses (no Ray there).
Endpoints are documented in the generated OpenAPI at ``/docs``.
"""

import asyncio
import hmac
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from pareto_ray import __version__
from pareto_ray.checkpoint import CheckpointError
from pareto_ray.runtime import init_ray
from pareto_ray.serving.engine import Engine
from pareto_ray.serving.loading import load_served_model
from pareto_ray.serving.predictors import BatchItem, ItemResult
from pareto_ray.serving.schemas import (
    TOKEN_ENV,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    RequestError,
    SelectRequest,
    SelectResponse,
    ServeSettings,
    validation_error_body,
)
from pareto_ray.tracking import MLFLOW_SCHEMES, resolve_tracking_uri

#: Paths open without the bearer token (health checks and the API's own documentation).
PUBLIC_PATHS = ("/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc")

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


def _error(status: int, field: str, message: str, expected: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message, "expected": expected}}, status, headers)


class Guard:
    """ASGI middleware run before the body is read: bearer-token auth and the body size limit."""

    def __init__(self, asgi_app: Any):
        self.app = asgi_app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        server = serve.get_replica_context().servable_object
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if server.token and not scope["path"].rstrip("/").endswith(PUBLIC_PATHS):  # the path may carry a route prefix
            sent = headers.get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {server.token}".encode()):
                response = _error(401, "Authorization", "missing or wrong bearer token", "Authorization: Bearer <token>",
                                  {"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            limit = server.engine.settings.max_body_bytes
            length = headers.get("content-length")
            if length is None or not length.isdigit():
                response = _error(411, "Content-Length", "request bodies must state their length",
                                  "a Content-Length header")
                return await response(scope, receive, send)
            if int(length) > limit:
                response = _error(413, "body", f"{int(length)} bytes exceed the limit of {limit}",
                                  f"a JSON body of at most {limit} bytes (fewer inputs per request)")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


app.add_middleware(Guard)


@app.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    if any(err.get("type") == "json_invalid" for err in exc.errors()):
        return _error(400, "body", "the body is not valid JSON", "a JSON object as documented at /docs")
    return JSONResponse(validation_error_body(exc), 422)


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
@serve.ingress(app)
class ParetoFrontServer:
    """A replica: loads the model once, then serves every λ."""

    def __init__(self, model: str, tracking_uri: str | None = None, backbone_only: bool = False):
        self.token = os.environ.get(TOKEN_ENV) or None
        # A missing or corrupted checkpoint raises CheckpointError here, which fails the deployment's start.
        self.engine = Engine(load_served_model(model, tracking_uri), ServeSettings(), backbone_only)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        settings = ServeSettings.model_validate(user_config or {})
        self.engine.configure(settings)
        self.run_batch.set_max_batch_size(settings.max_batch_size)
        self.run_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def run_batch(self, items: list[BatchItem]) -> list[ItemResult]:
        # In a thread: the event loop keeps accepting (and batching) requests meanwhile.
        return await asyncio.to_thread(self.engine.run_batch, items)

    @app.get("/healthz", response_model=Health, summary="Liveness")
    async def healthz(self) -> Health:
        return Health(status="ok")

    @app.get("/v1/model", response_model=ModelInfo, summary="Method, tasks, input shape, version and settings")
    async def model_info(self) -> ModelInfo:
        return self.engine.info()

    @app.get("/v1/front", response_model=FrontResponse, summary="The model's evaluated front (validation split)")
    async def front(self) -> FrontResponse:
        return FrontResponse(num_tasks=self.engine.num_tasks, rows=self.engine.front())

    @app.post("/v1/select", response_model=SelectResponse, summary="Pick λ by outcome: targets and constraints",
              responses={404: {"description": "the checkpoint has no evaluated front"},
                         422: {"description": "malformed body; the error names the field"}})
    async def select(self, body: SelectRequest) -> SelectResponse:
        return self.engine.select(body)

    @app.post("/v1/predict", response_model=PredictResponse, summary="Predictions of the model formed for λ",
              responses={400: {"description": "invalid JSON"}, 401: {"description": "missing or wrong token"},
                         413: {"description": "body too large"},
                         422: {"description": "bad λ or inputs; the error names the field and the expected form"}})
    async def predict(self, body: PredictRequest, response: Response) -> PredictResponse:
        item = self.engine.validate(body)  # raises RequestError (4xx): bad input never reaches the batch
        result = await self.run_batch(item)
        response.headers["X-Batch-Size"] = str(result.batch_size)
        response.headers["X-Batch-Groups"] = str(result.groups)
        response.headers["X-Forward-Path"] = result.path
        return self.engine.response(item, result)


class AppArgs(BaseModel):
    """Arguments of the application builder (``serve run pareto_ray.serving.app:build_app model=...`` or config ``args``)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="checkpoint directory, or an MLflow URI models:/<name>/<version>")
    tracking_uri: str | None = Field(default=None, description="MLflow tracking/registry URI for models:/ sources")
    backbone_only: bool = Field(default=False, description="serve the bare base network, ignoring λ (benchmark limit)")
    settings: dict[str, Any] = Field(default_factory=dict, description="initial user_config (ServeSettings)")
    num_cpus: float = Field(default=1.0, gt=0, description="CPUs reserved per replica (torch threads follow it)")


def build_app(args: dict[str, Any]) -> Application:
    """Application builder: checks the source, then binds the deployment.

    ``PARETO_RAY_API_TOKEN`` in the builder's environment is passed to the
    replicas (unset or empty: no auth).
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
    settings = ServeSettings.model_validate(a.settings)
    deployment = ParetoFrontServer.options(
        user_config=settings.model_dump(),
        ray_actor_options={"num_cpus": a.num_cpus,
                           "runtime_env": {"env_vars": {TOKEN_ENV: os.environ.get(TOKEN_ENV, "")}}},
    )
    return deployment.bind(model=model, tracking_uri=tracking_uri, backbone_only=a.backbone_only)


def run(model: str, host: str = "127.0.0.1", port: int = 8000, tracking_uri: str | None = None,
        settings: dict[str, Any] | None = None, blocking: bool = True) -> None:
    """Start Serve on ``host:port`` and deploy the app (what ``pareto-ray serve`` runs)."""
    init_ray()
    serve.start(http_options={"host": host, "port": port})
    application = build_app({"model": model, "tracking_uri": tracking_uri, "settings": settings or {}})
    serve.run(application, name="pareto-ray", route_prefix="/")
    print(json.dumps({"url": f"http://{host}:{port}", "docs": f"http://{host}:{port}/docs", "model": model}), flush=True)
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
