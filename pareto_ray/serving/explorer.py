"""The front explorer: one offline HTML page, served by the ingress, to pick λ and watch the predictions change.

The page (``static/explorer.html`` with ``static/explorer.js`` inlined, plain SVG drawn by its own script: no
CDN, no library) is public, since it must be able to ask for the token; it holds nothing of the model.
Everything it shows comes from the API with the bearer token when auth is on: the model card and stored
samples from ``GET /v1/explorer/card``, the front from ``/v1/front``, targets from ``/v1/select``, predictions
from ``/v1/predict``.  The token stays in the page's memory (never in a URL, a cookie or storage).

No Ray here: the ingress serves ``page()``, the model deployment answers ``explorer_card(served)``.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pareto_ray.serving.loading import ServedModel

STATIC = Path(__file__).with_name("static")
#: The page's path (relative to the app's route prefix); public, like /docs.
PAGE_PATH = "/explorer"
PAGE_PATHS = (PAGE_PATH,)
SCRIPT_MARK = "/*EXPLORER_JS*/"


class TaskCard(BaseModel):
    name: str
    kind: str
    metric: str = Field(description="the task's front metric (a column <metric>_<t> of /v1/front)")
    higher_is_better: bool
    labels: list[str] | None = None


class Sample(BaseModel):
    inputs: list[Any] = Field(description="one input, as /v1/predict takes it (append it to `inputs`)")
    target: list[float | int] | None = Field(description="its target per task, when each is one value")


class ExplorerCard(BaseModel):
    method: str
    backbone: str
    dataset: str
    tasks: list[TaskCard]
    input_shape: list[int]
    source: str
    version: str
    epoch: int | None
    run_id: str | None = Field(description="the MLflow run that trained the model, when known")
    tracking_uri: str | None = Field(description="the MLflow server of that run (http/https only)")
    test_hv: float | None
    val_hv: float | None
    samples_split: str | None
    samples: list[Sample]


def explorer_card(served: ServedModel) -> ExplorerCard:
    """The model card and the stored samples of ``served`` (what the page shows besides the front)."""
    run = served.run or {}
    samples = served.samples or {}
    inputs, targets = samples.get("inputs", []), samples.get("targets") or []
    tasks = [TaskCard(name=t.name, kind=t.kind, metric=t.front_metric, higher_is_better=t.higher_is_better,
                      labels=list(t.labels) if t.labels else None) for t in served.dataset.tasks]
    return ExplorerCard(
        method=served.method, backbone=served.cfg.model.backbone, dataset=served.cfg.data.dataset, tasks=tasks,
        input_shape=list(served.dataset.input_shape), source=served.source, version=served.version,
        epoch=served.epoch, run_id=run.get("run_id"), tracking_uri=run.get("tracking_uri"), test_hv=run.get("test_hv"),
        val_hv=run.get("val_hv"), samples_split=samples.get("split"),
        samples=[Sample(inputs=x, target=targets[i] if i < len(targets) else None) for i, x in enumerate(inputs)])


@lru_cache(maxsize=1)
def _page() -> tuple[bytes, str]:
    html = (STATIC / "explorer.html").read_text(encoding="utf-8")
    script = (STATIC / "explorer.js").read_text(encoding="utf-8")
    if SCRIPT_MARK not in html:
        raise RuntimeError(f"{STATIC / 'explorer.html'} has no {SCRIPT_MARK} placeholder")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return html.replace(SCRIPT_MARK, script).encode("utf-8"), digest


def page() -> tuple[bytes, dict[str, str]]:
    """The page's HTML (script inlined) and its headers: a CSP that allows only this script and same-origin
    requests, no caching, no referrer."""
    body, digest = _page()
    csp = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; connect-src 'self'; "
           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return body, {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": csp,
                  "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
