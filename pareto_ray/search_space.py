"""The ``tune:`` section of a config: the search space of a Ray Tune sweep, and its checks.

The section names a search space over dotted config keys (``method.rank:
{choice: [1, 2, 4, 8]}``, ``train.lr: {loguniform: [1.0e-4, 1.0e-2]}``), how
many samples to draw, the scheduler and the trial resources.  ``check_space``
validates it against the config when the YAML is loaded, so a bad space fails
before any trial starts, naming the field.  The sweep itself (Ray Tune) lives
in ``pareto_ray.training.sweep``.
"""

from __future__ import annotations

import copy
import typing
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from pareto_ray.schema import Section, describe_errors

#: Sections a sweep sets itself rather than samples.
NOT_TUNABLE = {"name": "the sweep names its trials", "tune": "it is the sweep's own section",
               "ray": "resources and storage are per sweep", "mlflow": "tracking is per sweep"}

_KINDS = ("choice", "grid", "uniform", "loguniform")


class ParamSpec(Section):
    """One searched parameter: exactly one of ``choice``, ``grid``, ``uniform``, ``loguniform``."""

    choice: list[Any] | None = Field(default=None, description="sample one of these values")
    grid: list[Any] | None = Field(default=None, description="try every value (once per sample)")
    uniform: tuple[float, float] | None = Field(default=None, description="[low, high]; integers on an int field")
    loguniform: tuple[float, float] | None = Field(default=None, description="[low, high], low > 0; integers on an int field")

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        kinds = [k for k in _KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of choice, grid, uniform, loguniform (got {', '.join(kinds) or 'none'})")
        kind = kinds[0]
        if kind in ("choice", "grid") and not getattr(self, kind):
            raise ValueError(f"{kind} needs at least one value")
        if kind in ("uniform", "loguniform"):
            low, high = getattr(self, kind)
            if not low < high:
                raise ValueError(f"{kind}: low ({low}) must be below high ({high})")
            if kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: low ({low}) must be > 0")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k) is not None)

    def probes(self) -> list[Any]:
        """The values checked against the config: every listed value, or both ends of a range."""
        return list(getattr(self, self.kind))


class SchedulerConfig(Section):
    name: Literal["asha", "fifo"] = Field(default="asha", description="asha stops weak trials early; fifo runs all to the end")
    grace_period: int = Field(default=1, ge=1, description="epochs every trial runs before ASHA may stop it")
    max_t: int | None = Field(default=None, ge=1, description="epochs at most (default train.epochs)")
    reduction_factor: float = Field(default=2.0, gt=1, description="ASHA keeps the top 1/reduction_factor at each rung")

    @model_validator(mode="after")
    def _grace_below_max(self) -> SchedulerConfig:
        if self.max_t is not None and self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_t ({self.max_t})")
        return self


class TuneConfig(Section):
    """The ``tune:`` section of a config file."""

    space: dict[str, ParamSpec] = Field(
        min_length=1, description="dotted config key -> search domain; nested mappings (method: {rank: ...}) are flattened")
    num_samples: int = Field(default=1, ge=1, description="configs sampled (each grid value once per sample)")
    search: Literal["random", "optuna"] = Field(
        default="random", description="random/grid (Tune's BasicVariantGenerator), or optuna (needs the optuna extra)")
    seed: int | None = Field(default=0, description="seed of the random search; null for a fresh draw")
    scheduler: SchedulerConfig = SchedulerConfig()
    max_concurrent_trials: int | None = Field(
        default=None, ge=1, description="default: as many trials as the cluster's CPUs (GPUs) hold workers for")
    trial_cpus: float = Field(default=0.01, gt=0, description="CPU share of a trial's driver (it only watches its workers)")
    max_failures: int = Field(default=1, ge=-1, description="trial retries (from the Train checkpoint); -1 = unlimited")

    @field_validator("space", mode="before")
    @classmethod
    def _flatten(cls, space: Any) -> Any:
        """``{method: {rank: {choice: ...}}}`` (as ``--set tune.space.method.rank=...`` writes) → ``{method.rank: ...}``."""
        if not isinstance(space, dict):
            return space
        out: dict[str, Any] = {}
        for key, value in space.items():
            if isinstance(value, dict) and value and not set(value) & set(_KINDS):
                out |= {f"{key}.{k}": v for k, v in cls._flatten(value).items()}
            else:
                out[key] = value
        return out

    @model_validator(mode="after")
    def _search_supports_space(self) -> TuneConfig:
        grids = [k for k, p in self.space.items() if p.kind == "grid"]
        if self.search == "optuna" and grids:
            raise ValueError(f"search optuna cannot take grid parameters ({', '.join(grids)}): use choice")
        return self


def field_info(cfg: BaseModel, key: str) -> Any:
    """The pydantic ``FieldInfo`` a dotted key names in ``cfg`` (ValueError naming the key otherwise)."""
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = type(node).model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or "the config"
            if where == "method":
                where = f"method ({cfg.method.name})"
            raise ValueError(f"unknown parameter: {where} has no field {part!r} (fields: {', '.join(fields)})")
        if i == len(parts) - 1:
            return fields[part]
        node = getattr(node, part)
        if not isinstance(node, BaseModel):
            raise ValueError(f"{'.'.join(parts[:i + 1])} is a value, not a section")
    raise AssertionError("unreachable")


def is_int_field(field: Any) -> bool:
    types = typing.get_args(field.annotation) or (field.annotation,)
    return int in types and float not in types


def with_params(base: dict[str, Any], params: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """A trial's raw config: ``base`` (a config dump) with the sampled ``params`` set, no ``tune:`` section."""
    raw = copy.deepcopy(base)
    for key, value in params.items():
        node = raw
        *sections, last = key.split(".")
        for part in sections:
            node = node.setdefault(part, {})
        node[last] = value
    raw["tune"] = None
    raw["name"] = name
    return raw


def check_space(cfg: BaseModel) -> None:
    """Every searched key names a tunable config field, and every listed value (range end) is valid there.

    ``cfg`` is a validated config with a ``tune:`` section; each probe is validated as ``type(cfg)``.
    Raises ValueError whose message starts with ``tune.space.<key>``.
    """
    assert cfg.tune is not None
    base = cfg.model_dump(mode="json", exclude={"tune"})
    for key, spec in cfg.tune.space.items():
        where = f"tune.space.{key}"
        top = key.split(".")[0]
        if top in NOT_TUNABLE:
            raise ValueError(f"{where}: {top} cannot be searched ({NOT_TUNABLE[top]})")
        try:
            field_info(cfg, key)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        for value in spec.probes():
            try:
                type(cfg).model_validate(with_params(base, {key: value}))
            except ValidationError as exc:
                raise ValueError(f"{where}: value {value!r} is not valid there:\n{describe_errors(exc)}") from None
    max_t = cfg.tune.scheduler.max_t
    if max_t is not None and max_t > cfg.train.epochs and "train.epochs" not in cfg.tune.space:
        raise ValueError(f"tune.scheduler.max_t ({max_t}) exceeds train.epochs ({cfg.train.epochs})")
