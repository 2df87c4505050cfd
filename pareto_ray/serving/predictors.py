"""Running a batch of validated requests: grouping by λ, the merged-weight LRU, and the merged vs per-sample rule.

How a batch is run (``Predictor.run_batch``):

1. every request was validated alone, so a bad body never reaches the model;
   its λ was rounded to multiples of ``preference_tolerance`` and renormalized
   — that rounded λ is the λ used and reported;
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

The raw outputs go back per request; the ingress presents them per task kind
(``serving.outputs``).

A discrete front (K models trained for K preferences, as Pareto MTL gives)
runs through the generic path (``forward_ray`` answers λ with the nearest
key's model).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call

from pareto_ray.layers import LowRankPreferenceLayer, inject
from pareto_ray.models import AdaptedModel, FixedModel, PreferenceModel
from pareto_ray.serving.inputs import INPUT_SHAPE, PrefKey
from pareto_ray.serving.schemas import OutputOptions, ServeSettings


@dataclass
class BatchItem:
    """One validated request: its inputs (the model's float tensor), its rounded λ and what to add to its answer."""

    inputs: torch.Tensor
    preference: PrefKey
    output: OutputOptions | None = None


@dataclass
class ItemResult:
    outputs: list[torch.Tensor]  # per task, the raw outputs [n, ...] (logits, values, maps): the task kind presents them
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
        """Raw outputs per item, per task."""

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
        outputs = self.forward(items, groups, path)  # each request gets its own copy: a view would carry the batch
        return [ItemResult([t.clone() for t in per_task], path, len(items), len(groups)) for per_task in outputs]


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

    def __init__(self, model: PreferenceModel, settings: ServeSettings, costs: PathCosts | None = None,
                 input_shape: tuple[int, ...] = INPUT_SHAPE):
        self.input_shape = tuple(input_shape)
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
    xs = {n: torch.zeros(n, *predictor.input_shape) for n in sizes}
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


def make_predictor(model: PreferenceModel, settings: ServeSettings, backbone_only: bool = False,
                   input_shape: tuple[int, ...] = INPUT_SHAPE) -> Predictor:
    """The predictor for a model.  ``backbone_only`` serves the bare base network, ignoring λ
    (the no-conditioning limit the load benchmark compares against)."""
    if isinstance(model, FixedModel):
        return FixedPredictor(model.net)
    if backbone_only:
        if not MergedWeightCache.supports(model):
            raise ValueError("backbone_only needs a low-rank adapted model (e.g. PaLoRA): others have no bare backbone")
        return FixedPredictor(base_network(model))
    return ConditionedPredictor(model, settings, input_shape=input_shape)
