"""The serving core, free of Ray: request schemas, validation, batching by λ,
merged-weight caching, the merged-vs-per-sample rule and operating-point
selection on the evaluated front.  ``serve/app.py`` wraps it in a Ray Serve
deployment; everything here runs (and is tested) without Ray.

How a batch of requests is run (``Engine.run_batch``):

1. every request was validated alone (``Engine.validate``), so a bad body never
   reaches the model; its λ was rounded to multiples of ``preference_tolerance``
   and renormalized — that rounded λ is the λ used and reported;
2. the batch's requests are grouped by rounded λ;
3. a λ-conditioned model then runs either
   * **merged**: one forward per group; for low-rank models (PaLoRA) through
     the base network with W(λ) = W + ΔW(λ), the merged weights taken from an
     LRU cache keyed by λ; for other preference models ``forward_ray(x, λ)``, or
   * **per-sample**: one forward for the whole batch, each sample under its λ
     (``PreferenceModel.predict``);
   chosen by a cost model measured on the serving machine at start-up
   (``PathCosts``): merged costs ``k·c_call + N·c_sample + misses·c_merge``,
   per-sample ``p_call + N·p_sample``; the cheaper one runs.  One group always
   runs merged.  ``forward_path`` in the settings can force either path.
4. a model that ignores λ (``FixedModel``, method ``ls``) runs one forward.

A discrete front (K models trained for K preferences, as Pareto MTL gives)
runs through the generic path (``forward_ray`` answers λ with the nearest
key's model).  A dedicated ``Predictor`` would group requests by nearest key
rather than by λ, one forward per key used, and ``select_preference`` would
pick among the K points without interpolating; validation, batching and the
HTTP layer stay as they are.
"""

from __future__ import annotations

import copy
import hashlib
import math
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, ValidationError, model_validator
from torch import nn
from torch.func import functional_call

from pareto_ray.checkpoint import CheckpointError, load_model, read_front, read_state
from pareto_ray.config import Config
from pareto_ray.data import IMAGE_SIZE, NORMALIZE_MEAN, NORMALIZE_STD
from pareto_ray.evaluation import front_arrays
from pareto_ray.layers import LowRankPreferenceLayer, inject
from pareto_ray.models import AdaptedModel, FixedModel, PreferenceModel
from pareto_ray.preferences import validate_preference

#: Every backbone reads MultiMNIST-style composites: one channel, 28×28.
INPUT_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)
TOKEN_ENV = "PARETO_RAY_API_TOKEN"
PrefKey = tuple[float, ...]


# ----------------------------------------------------------------------------- settings and schemas

class ServeSettings(BaseModel):
    """Per-deployment options; Serve's ``user_config``, so they change without a redeploy."""

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
    task: int = Field(ge=1, description="task number, 1-based")
    metric: Literal["acc", "loss"] = "acc"
    min: float | None = Field(default=None, description="metric ≥ min")
    max: float | None = Field(default=None, description="metric ≤ max")

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
    task: int | None = Field(default=None, ge=1, description="task to optimize; none = the mean over tasks")
    metric: Literal["acc", "loss"] = "acc"
    goal: Literal["max", "min"] = "max"


class SelectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    constraints: list[Constraint] = Field(default_factory=list, examples=[[{"task": 2, "metric": "acc", "min": 0.9}]])
    objective: Objective = Field(default_factory=Objective, examples=[{"task": 1, "metric": "acc", "goal": "max"}])
    resolution: int = Field(default=100, ge=1, le=1000,
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


class RequestError(ValueError):
    """A request that cannot be served; ``field`` and ``expected`` go into the 4xx body."""

    def __init__(self, field: str, message: str, expected: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.expected, self.status = field, message, expected, status

    def body(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "message": self.message, "expected": self.expected}}


def validation_error_body(exc: ValidationError | Any, prefix: str = "") -> dict[str, Any]:
    """The first error of a pydantic/FastAPI validation error, in ``RequestError``'s form."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    name = ".".join(loc) or prefix or "body"
    expected = "a JSON object as documented at /docs" if not loc else f"see the schema of '{name}' at /docs"
    return {"error": {"field": name, "message": err.get("msg", "invalid"), "expected": expected}}


# ----------------------------------------------------------------------------- validation

def check_preference(values: list[float], num_tasks: int, tolerance: float, allow_pseudo: bool = False) -> PrefKey:
    """Validate λ and return it rounded to multiples of ``tolerance``, renormalized to sum 1.

    Rejects (never normalizes) a λ whose sum is off 1 by more than ``tolerance``.
    """
    expected = (f"{num_tasks} finite numbers summing to 1 (±{tolerance:g})"
                + ("" if allow_pseudo else ", each ≥ 0"))
    try:
        pref = validate_preference(torch.tensor(values, dtype=torch.float64), num_tasks, allow_pseudo, atol=tolerance)
    except (ValueError, TypeError) as exc:
        raise RequestError("preference", str(exc), expected) from None
    return preference_key(pref.double().numpy(), tolerance)


def preference_key(pref: np.ndarray, tolerance: float) -> PrefKey:
    """λ rounded to multiples of ``tolerance`` and renormalized: the batching and cache key."""
    q = np.round(np.asarray(pref, dtype=np.float64) / tolerance) * tolerance
    q = q / q.sum()
    return tuple(round(float(v), 12) for v in q)


def parse_inputs(values: list[Any], max_inputs: int, input_shape: tuple[int, ...] = INPUT_SHAPE) -> torch.Tensor:
    """Nested lists → a float32 ``[B, *input_shape]`` tensor, or a ``RequestError`` naming the problem."""
    expected = f"a list of 1 to {max_inputs} inputs, nested lists of numbers shaped [B, {', '.join(map(str, input_shape))}]"
    if not values:
        raise RequestError("inputs", "empty batch: send at least one input", expected)
    if len(values) > max_inputs:
        raise RequestError("inputs", f"{len(values)} inputs exceed the limit of {max_inputs} per request", expected)
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):
        raise RequestError("inputs", "ragged nested lists (rows of unequal length)", expected) from None
    if arr.dtype.kind not in "iuf":
        kind = {"b": "booleans", "U": "strings", "S": "strings", "O": "mixed or non-numeric values"}.get(arr.dtype.kind,
                                                                                                       str(arr.dtype))
        raise RequestError("inputs", f"inputs must be numbers, got {kind}", expected)
    if arr.shape[1:] != tuple(input_shape):
        raise RequestError("inputs", f"got shape {list(arr.shape)}", expected)
    with np.errstate(over="ignore"):  # out-of-range values become inf and are rejected below
        x = torch.from_numpy(arr.astype(np.float32))
    if not torch.isfinite(x).all():
        raise RequestError("inputs", "inputs must be finite numbers (no NaN/Inf, within float32 range)", expected)
    return x


# ----------------------------------------------------------------------------- running a batch

@dataclass
class BatchItem:
    """One validated request: its inputs and its rounded λ."""

    inputs: torch.Tensor
    preference: PrefKey


@dataclass
class ItemResult:
    probabilities: list[torch.Tensor]  # per task, [n, C]
    path: str
    batch_size: int
    groups: int


def group_by_preference(items: list[BatchItem]) -> dict[PrefKey, list[int]]:
    """Item indices per rounded λ, in order of first appearance."""
    groups: dict[PrefKey, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.preference, []).append(i)
    return groups


def _split(outputs: list[torch.Tensor], sizes: list[int]) -> list[list[torch.Tensor]]:
    """Per-task ``[sum(sizes), C]`` outputs → per item, per task ``[size, C]``."""
    per_task = [out.split(sizes) for out in outputs]
    return [list(parts) for parts in zip(*per_task)]


class MergedWeightCache:
    """LRU cache: rounded λ → merged weight per adapted layer (``{"<layer>.weight": W(λ)}``)."""

    def __init__(self, model: AdaptedModel, capacity: int):
        self.layers = {name: m for name, m in model.net.named_modules() if isinstance(m, LowRankPreferenceLayer)}
        self.capacity = capacity
        self.hits = self.misses = 0
        self._entries: OrderedDict[PrefKey, dict[str, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def supports(model: PreferenceModel) -> bool:
        """Whether λ only enters through low-rank weight deltas (then W(λ) can be merged and cached)."""
        return isinstance(model, AdaptedModel) and bool(model.preference_layers()) and all(
            isinstance(layer, LowRankPreferenceLayer) for layer in model.preference_layers())

    def __contains__(self, key: PrefKey) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def resize(self, capacity: int) -> None:
        with self._lock:
            self.capacity = capacity
            while len(self._entries) > capacity:
                self._entries.popitem(last=False)

    @torch.no_grad()
    def merge(self, key: PrefKey) -> dict[str, torch.Tensor]:
        pref = torch.tensor(key, dtype=torch.float32)
        return {f"{name}.weight": layer.merged_weight(pref) for name, layer in self.layers.items()}

    def get(self, key: PrefKey) -> dict[str, torch.Tensor]:
        with self._lock:
            weights = self._entries.get(key)
            if weights is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return weights
            self.misses += 1
        weights = self.merge(key)
        with self._lock:
            self._entries[key] = weights
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return weights

    def stats(self) -> dict[str, int]:
        return {"size": len(self._entries), "capacity": self.capacity, "hits": self.hits, "misses": self.misses}


def base_network(model: AdaptedModel) -> nn.Module:
    """A copy of the adapted network with every low-rank preference layer replaced by its base layer.

    With the merged weights passed to ``functional_call`` it computes W(λ);
    with its own weights it is the bare backbone (no preference conditioning).
    """
    net = copy.deepcopy(model.net)
    names = [name for name, m in net.named_modules() if isinstance(m, LowRankPreferenceLayer)]
    inject(net, names, lambda layer: layer.base_layer)
    return net.eval()


@dataclass
class PathCosts:
    """Measured linear costs (seconds) of the two forward paths of a λ-conditioned model."""

    merged_call: float
    merged_sample: float
    merge_weights: float
    per_sample_call: float
    per_sample_sample: float

    def merged(self, groups: int, samples: int, misses: int) -> float:
        return groups * self.merged_call + samples * self.merged_sample + misses * self.merge_weights

    def per_sample(self, samples: int) -> float:
        return self.per_sample_call + samples * self.per_sample_sample

    def choose(self, groups: int, samples: int, misses: int) -> Literal["merged", "per_sample"]:
        if groups == 1:
            return "merged"
        return "merged" if self.merged(groups, samples, misses) <= self.per_sample(samples) else "per_sample"

    def as_ms(self) -> dict[str, float]:
        return {k: round(v * 1e3, 4) for k, v in self.__dict__.items()}


class Predictor(ABC):
    """Runs a batch of validated requests; one subclass per kind of model."""

    preference_conditioned: bool

    @abstractmethod
    def forward(self, items: list[BatchItem], groups: dict[PrefKey, list[int]],
                path: str) -> list[list[torch.Tensor]]:
        """Logits per item, per task."""

    def choose_path(self, groups: dict[PrefKey, list[int]], samples: int, settings: ServeSettings) -> str:
        return "fixed"

    def costs(self) -> PathCosts | None:
        return None

    def cache_stats(self) -> dict[str, int]:
        return {}

    def configure(self, settings: ServeSettings) -> None:
        """Apply new settings (e.g. the cache size); nothing to do by default."""
        return None

    @torch.inference_mode()
    def run_batch(self, items: list[BatchItem], settings: ServeSettings) -> list[ItemResult]:
        groups = group_by_preference(items)
        samples = sum(len(item.inputs) for item in items)
        path = self.choose_path(groups, samples, settings)
        logits = self.forward(items, groups, path)
        return [ItemResult([t.softmax(-1) for t in per_task], path, len(items), len(groups)) for per_task in logits]


class FixedPredictor(Predictor):
    """A network that ignores λ: the whole batch in one forward."""

    preference_conditioned = False

    def __init__(self, net: nn.Module):
        self.net = net.eval()

    def forward(self, items, groups, path):
        out = self.net(torch.cat([item.inputs for item in items]))
        return _split(out, [len(item.inputs) for item in items])


class ConditionedPredictor(Predictor):
    """A λ-conditioned model: one forward per λ group ("merged"), or per-sample λ in one forward.

    For low-rank adapted models (PaLoRA) a group runs the base network with
    W(λ) from the LRU cache; for any other preference model it runs
    ``model.forward_ray(x, λ)``.
    """

    preference_conditioned = True

    def __init__(self, model: PreferenceModel, settings: ServeSettings, costs: PathCosts | None = None):
        self.model = model.eval()
        self.cache = MergedWeightCache(model, settings.cache_size) if MergedWeightCache.supports(model) else None
        self.base = base_network(model) if self.cache is not None else None
        self._costs = costs or measure_path_costs(self)

    def costs(self) -> PathCosts:
        return self._costs

    def cache_stats(self) -> dict[str, int]:
        return self.cache.stats() if self.cache is not None else {}

    def configure(self, settings: ServeSettings) -> None:
        if self.cache is not None:
            self.cache.resize(settings.cache_size)

    def choose_path(self, groups, samples, settings):
        if settings.forward_path != "auto":
            return settings.forward_path
        misses = sum(key not in self.cache for key in groups) if self.cache is not None else 0
        return self._costs.choose(len(groups), samples, misses)

    def forward_merged(self, x: torch.Tensor, key: PrefKey) -> list[torch.Tensor]:
        if self.cache is None:
            return self.model.forward_ray(x, torch.tensor(key, dtype=torch.float32))
        return functional_call(self.base, self.cache.get(key), (x,))

    def forward_per_sample(self, x: torch.Tensor, prefs: torch.Tensor) -> list[torch.Tensor]:
        return self.model.predict(x, prefs)

    def forward(self, items, groups, path):
        if path == "per_sample":
            x = torch.cat([item.inputs for item in items])
            prefs = torch.cat([torch.tensor(item.preference, dtype=torch.float32).expand(len(item.inputs), -1)
                               for item in items])
            return _split(self.forward_per_sample(x, prefs), [len(item.inputs) for item in items])
        out: list[list[torch.Tensor]] = [[] for _ in items]
        for key, idx in groups.items():
            logits = self.forward_merged(torch.cat([items[i].inputs for i in idx]), key)
            for i, parts in zip(idx, _split(logits, [len(items[i].inputs) for i in idx])):
                out[i] = parts
        return out


def _best_seconds(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    """Best of ``repeats`` timings of each function, taken round-robin.

    Interleaving spreads each function's samples over the whole measurement,
    so a burst of other load on the machine cannot inflate all of them; the
    best is the least disturbed.
    """
    for fn in fns.values():
        fn()  # warm-up
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


@torch.inference_mode()
def measure_path_costs(predictor: ConditionedPredictor, small: int = 1, large: int = 16, repeats: int = 20) -> PathCosts:
    """Time both paths at two batch sizes on this machine and fit ``call + n·sample`` to each.

    With a weight cache the merged path is timed on cached weights and the
    merge itself separately (paid once per cache miss).
    """
    t = predictor.model.num_tasks
    key = tuple([1.0 / t] * t)
    sizes = (small, large)
    xs = {n: torch.zeros(n, *INPUT_SHAPE) for n in sizes}
    prefs = {n: torch.full((n, t), 1.0 / t) for n in sizes}
    fns: dict[str, Any] = {f"per_sample{n}": (lambda n=n: predictor.forward_per_sample(xs[n], prefs[n])) for n in sizes}
    if predictor.cache is not None:
        weights = predictor.cache.merge(key)
        fns |= {f"merged{n}": (lambda n=n: functional_call(predictor.base, weights, (xs[n],))) for n in sizes}
        fns["merge"] = lambda: predictor.cache.merge(key)
    else:
        fns |= {f"merged{n}": (lambda n=n: predictor.forward_merged(xs[n], key)) for n in sizes}
    best = _best_seconds(fns, repeats)

    def fit(path: str) -> tuple[float, float]:
        slope = max((best[f"{path}{large}"] - best[f"{path}{small}"]) / (large - small), 0.0)
        return max(best[f"{path}{small}"] - small * slope, 0.0), slope

    (m_call, m_sample), (p_call, p_sample) = fit("merged"), fit("per_sample")
    return PathCosts(m_call, m_sample, best.get("merge", 0.0), p_call, p_sample)


def make_predictor(model: PreferenceModel, settings: ServeSettings, backbone_only: bool = False) -> Predictor:
    """The predictor for a model.  ``backbone_only`` serves the bare base network, ignoring λ
    (the no-conditioning limit the load benchmark compares against)."""
    if isinstance(model, FixedModel):
        return FixedPredictor(model.net)
    if backbone_only:
        if not MergedWeightCache.supports(model):
            raise ValueError("backbone_only needs a low-rank adapted model (e.g. PaLoRA): others have no bare backbone")
        return FixedPredictor(base_network(model))
    return ConditionedPredictor(model, settings)


# ----------------------------------------------------------------------------- loading

@dataclass
class ServedModel:
    model: PreferenceModel
    cfg: Config
    method: str
    preference_conditioned: bool
    front: pa.Table | None
    source: str
    version: str
    weights_sha256: str
    epoch: int | None
    num_classes: int


MLFLOW_SCHEMES = ("models:/", "runs:/")


def load_served_model(source: str, tracking_uri: str | None = None) -> ServedModel:
    """Load what a deployment serves; any problem is a ``CheckpointError`` naming the cause.

    ``source`` is a checkpoint directory, or an MLflow URI (``models:/<name>/<version>``,
    ``models:/<name>/latest``, ``models:/<name>@<alias>``, ``runs:/<run_id>/model``),
    downloaded to a temporary folder that is removed once the model is in memory.
    """
    if source.startswith(MLFLOW_SCHEMES):
        with tempfile.TemporaryDirectory(prefix="pareto-ray-serve-") as tmp:
            path, version = fetch_from_mlflow(source, tracking_uri, tmp)
            return _load(path, source, version)
    path = Path(source).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path} (expected a `pareto-ray train` checkpoint "
                              f"or models:/<name>/<version>)")
    return _load(path.resolve(), source, "checkpoint")


def fetch_from_mlflow(source: str, tracking_uri: str | None, dst: str) -> tuple[Path, str]:
    """Download an MLflow model URI into ``dst`` → (local checkpoint directory, version label)."""
    import mlflow

    from pareto_ray.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    try:
        version, artifact_uri = registry_version(source, uri) if source.startswith("models:/") else ("run", source)
        path = mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, tracking_uri=uri, dst_path=dst)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; all mean "cannot resolve"
        raise CheckpointError(f"cannot fetch model {source} from MLflow at {uri}: {exc}") from exc
    return Path(path), version


def registry_version(source: str, tracking_uri: str) -> tuple[str, str]:
    """(``<name>/<version>``, artifact URI) of a ``models:/`` URI; ``latest`` and ``@alias`` resolved.

    The registry is the tracking store (``tracking_uri``), as ``pareto_ray.tracking.register_model`` uses it.
    """
    from mlflow.tracking import MlflowClient

    ref = source.removeprefix("models:/").rstrip("/")
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = ref.rpartition("/")
        if version == "latest":
            version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return f"{name}/{version}", client.get_model_version_download_uri(name, str(version))


def _load(path: Path, source: str, version: str) -> ServedModel:
    try:
        model, method, cfg = load_model(path)
    except (ValidationError, ValueError) as exc:
        raise CheckpointError(f"{path}/config.json does not describe a pareto-ray run: {exc}") from exc
    sha = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    front = None
    if (path / "front.parquet").is_file():
        try:
            front = read_front(path)
        except (OSError, pa.ArrowException) as exc:
            raise CheckpointError(f"{path}/front.parquet is not readable Parquet: {exc}") from exc
    try:
        epoch = int(read_state(path)["epoch"])
    except (CheckpointError, ValueError, KeyError, TypeError):
        epoch = None
    with torch.inference_mode():
        t = model.num_tasks
        num_classes = model.forward_ray(torch.zeros(1, *INPUT_SHAPE), torch.full((t,), 1.0 / t))[0].shape[-1]
    return ServedModel(model=model, cfg=cfg, method=cfg.method.name, preference_conditioned=method.preference_conditioned,
                       front=front, source=source, version=version, weights_sha256=sha, epoch=epoch,
                       num_classes=int(num_classes))


# ----------------------------------------------------------------------------- front selection

def _candidate_grid(num_tasks: int, resolution: int, max_points: int = 20_000) -> np.ndarray:
    if num_tasks == 2:
        t = np.linspace(0.0, 1.0, resolution + 1)
        return np.stack([t, 1 - t], axis=1)
    from pymoo.util.ref_dirs import get_reference_directions

    p = resolution
    while p > 1 and math.comb(p + num_tasks - 1, num_tasks - 1) > max_points:
        p -= 1
    return get_reference_directions("uniform", num_tasks, n_partitions=p)


def _interpolate(rays: np.ndarray, values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation of ``values [K, D]`` from ``rays`` to ``points`` (NaN outside the hull)."""
    if rays.shape[1] == 2:
        order = np.argsort(rays[:, 0])
        r = rays[order, 0]
        out = np.stack([np.interp(points[:, 0], r, values[order, j]) for j in range(values.shape[1])], axis=1)
        out[(points[:, 0] < r[0] - 1e-9) | (points[:, 0] > r[-1] + 1e-9)] = np.nan
        return out
    from scipy.interpolate import LinearNDInterpolator

    return LinearNDInterpolator(rays[:, :-1], values)(points[:, :-1])


def select_preference(front: pa.Table, request: SelectRequest) -> SelectResponse:
    """The λ (on or between the front's rays) that best meets ``request``.

    Candidates are the evaluated rays and a dense simplex grid inside their hull,
    with metrics interpolated linearly between rays.  Feasible candidates are
    ranked by the objective; if none is feasible, the least-violating one is
    returned with ``feasible = False``.
    """
    rays, acc, loss = front_arrays(front)
    k, t = rays.shape
    for i, c in enumerate(request.constraints):
        if c.task > t:
            raise RequestError(f"constraints.{i}.task", f"task {c.task} does not exist", f"a task number in 1..{t}")
    if request.objective.task is not None and request.objective.task > t:
        raise RequestError("objective.task", f"task {request.objective.task} does not exist", f"a task number in 1..{t}")
    values = np.concatenate([acc, loss], axis=1)  # columns acc_1..acc_T, loss_1..loss_T
    cands, metrics, exact = rays, values, np.ones(k, dtype=bool)
    if k > 1:
        grid = _candidate_grid(t, request.resolution)
        interp = _interpolate(rays, values, grid)
        keep = np.isfinite(interp).all(axis=1)
        cands = np.concatenate([rays, grid[keep]])
        metrics = np.concatenate([values, interp[keep]])
        exact = np.concatenate([exact, np.zeros(int(keep.sum()), dtype=bool)])

    def column(metric: str, task: int) -> np.ndarray:
        return metrics[:, (0 if metric == "acc" else t) + task - 1]

    violation = np.zeros(len(cands))
    for c in request.constraints:
        v = column(c.metric, c.task)
        if c.min is not None:
            violation += np.maximum(c.min - v, 0.0)
        if c.max is not None:
            violation += np.maximum(v - c.max, 0.0)
    obj = request.objective
    score = (column(obj.metric, obj.task) if obj.task is not None
             else metrics[:, :t].mean(1) if obj.metric == "acc" else metrics[:, t:].mean(1))
    signed = score if obj.goal == "max" else -score
    feasible_mask = violation <= 1e-12
    if feasible_mask.any():
        best = int(np.argmax(np.where(feasible_mask, signed, -np.inf)))
        what = f"task {obj.task} {obj.metric}" if obj.task else f"mean {obj.metric}"
        message = f"feasible: {'max' if obj.goal == 'max' else 'min'}imizes {what} = {score[best]:.4f}"
        if request.constraints:
            message += " subject to " + "; ".join(c.describe() for c in request.constraints)
    else:
        best = int(np.lexsort((-signed, violation))[0])
        message = ("infeasible: no λ on the evaluated front meets " + "; ".join(c.describe() for c in request.constraints)
                   + f"; returning the closest (total shortfall {violation[best]:.4f})")
    expected = {f"acc_{i + 1}": float(metrics[best, i]) for i in range(t)}
    expected |= {f"loss_{i + 1}": float(metrics[best, t + i]) for i in range(t)}
    return SelectResponse(feasible=bool(feasible_mask[best]), preference=[round(float(v), 6) for v in cands[best]],
                          expected=expected, objective=float(score[best]), interpolated=not bool(exact[best]),
                          message=message)


def front_rows(front: pa.Table) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in front.to_pylist()]


# ----------------------------------------------------------------------------- the engine

class Engine:
    """Everything a replica does, minus HTTP: validate, batch, run, describe, select."""

    def __init__(self, served: ServedModel, settings: ServeSettings | None = None, backbone_only: bool = False):
        self.served = served
        self.settings = settings or ServeSettings()
        self.num_tasks = served.model.num_tasks
        self.predictor = make_predictor(served.model, self.settings, backbone_only)
        self.backbone_only = backbone_only

    def configure(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.predictor.configure(settings)

    def validate(self, request: PredictRequest) -> BatchItem:
        s = self.settings
        key = check_preference(request.preference, self.num_tasks, s.preference_tolerance, s.allow_pseudo)
        return BatchItem(parse_inputs(request.inputs, s.max_inputs), key)

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
            num_classes=s.num_classes, backbone=s.cfg.model.backbone, input_shape=list(INPUT_SHAPE),
            input_normalization={"mean": NORMALIZE_MEAN, "std": NORMALIZE_STD, "scale": 255.0}, source=s.source,
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
