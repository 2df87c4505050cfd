"""Ray Tune sweeps that maximize validation hypervolume (``val_hv``).

The YAML config's ``tune:`` section names a search space over dotted config
keys (``method.rank: {choice: [1, 2, 4, 8]}``, ``train.lr: {loguniform:
[1.0e-4, 1.0e-2]}``), how many samples to draw, the scheduler and the trial
resources.  ``check_space`` validates it against the config when the YAML is
loaded, so a bad space fails before any trial starts, naming the field.

``run_sweep`` runs one Tune trial per sampled config.  A trial is a function
that opens its MLflow child run and fits the config's ``TorchTrainer`` with a
deterministic Train run name (``<sweep>-<trial id>``) and a
``TuneReportCallback``, so Tune sees ``val_hv`` every epoch (ASHA stops weak
trials early) and a restored trial resumes its Train run from its latest
checkpoint.  The sweep ends with a table of trials (Parquet), the best config
as a ready-to-train YAML, and the best checkpoint evaluated on the test split.
``resume_sweep`` continues an interrupted sweep through ``Tuner.restore``.

This module is imported by ``pareto_ray.config`` (the ``tune:`` schema), so
Ray and the rest of the library are imported inside the functions that use them.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.tune import ResultGrid

    from pareto_ray.config import Config

METRIC = "val_hv"
#: ASHA's clock: epochs done, added to every result Tune receives (see ``_report_callback``).
EPOCHS = "epochs"
STATE_FILE = "pareto_ray_sweep.json"
TABLE_FILE = "sweep.parquet"
BEST_CONFIG_FILE = "best_config.yaml"
STOP_REASON_TAG = "pareto_ray.stop_reason"
BEST_TAG = "pareto_ray.best"
#: Sections a sweep sets itself rather than samples.
NOT_TUNABLE = {"name": "the sweep names its trials", "tune": "it is the sweep's own section",
               "ray": "resources and storage are per sweep", "mlflow": "tracking is per sweep"}


_KINDS = ("choice", "grid", "uniform", "loguniform")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
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

    def domain(self, integer: bool) -> Any:
        """The Tune search domain (integers drawn when the config field is an int)."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(self.choice)
        if self.kind == "grid":
            return tune.grid_search(self.grid)
        low, high = getattr(self, self.kind)
        if integer:
            return (tune.randint if self.kind == "uniform" else tune.lograndint)(int(low), int(high) + 1)
        return (tune.uniform if self.kind == "uniform" else tune.loguniform)(low, high)


class SchedulerConfig(_Strict):
    name: Literal["asha", "fifo"] = Field(default="asha", description="asha stops weak trials early; fifo runs all to the end")
    grace_period: int = Field(default=1, ge=1, description="epochs every trial runs before ASHA may stop it")
    max_t: int | None = Field(default=None, ge=1, description="epochs at most (default train.epochs)")
    reduction_factor: float = Field(default=2.0, gt=1, description="ASHA keeps the top 1/reduction_factor at each rung")

    @model_validator(mode="after")
    def _grace_below_max(self) -> SchedulerConfig:
        if self.max_t is not None and self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_t ({self.max_t})")
        return self


class TuneConfig(_Strict):
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


# --------------------------------------------------------------------------- validation against the config


def _field(cfg: BaseModel, key: str) -> Any:
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


def _is_int(field: Any) -> bool:
    types = typing.get_args(field.annotation) or (field.annotation,)
    return int in types and float not in types


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    *sections, last = key.split(".")
    for part in sections:
        node = node.setdefault(part, {})
    node[last] = value


def trial_config(base: dict[str, Any], params: dict[str, Any], name: str | None = None) -> Config:
    """The config of one trial: ``base`` (a config dump) with the sampled ``params`` set, no ``tune:`` section."""
    from pareto_ray.config import parse_config

    raw = copy.deepcopy(base)
    for key, value in params.items():
        _set(raw, key, value)
    raw["tune"] = None
    raw["name"] = name
    return parse_config(raw)


def check_space(cfg: Config) -> None:
    """Every searched key names a tunable config field, and every listed value (range end) is valid there.

    Raises ValueError whose message starts with ``tune.space.<key>``.
    """
    from pareto_ray.config import ConfigError

    assert cfg.tune is not None
    base = cfg.model_dump(mode="json", exclude={"tune"})
    for key, spec in cfg.tune.space.items():
        where = f"tune.space.{key}"
        top = key.split(".")[0]
        if top in NOT_TUNABLE:
            raise ValueError(f"{where}: {top} cannot be searched ({NOT_TUNABLE[top]})")
        try:
            _field(cfg, key)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        for value in spec.probes():
            try:
                trial_config(base, {key: value})
            except ConfigError as exc:
                detail = str(exc).removeprefix("invalid config:\n")
                raise ValueError(f"{where}: value {value!r} is not valid there:\n{detail}") from None
    max_t = cfg.tune.scheduler.max_t
    if max_t is not None and max_t > cfg.train.epochs and "train.epochs" not in cfg.tune.space:
        raise ValueError(f"tune.scheduler.max_t ({max_t}) exceeds train.epochs ({cfg.train.epochs})")


def param_space(cfg: Config) -> dict[str, Any]:
    """Tune's ``param_space``: one domain per dotted key."""
    assert cfg.tune is not None
    return {key: spec.domain(_is_int(_field(cfg, key))) for key, spec in cfg.tune.space.items()}


# --------------------------------------------------------------------------- the sweep


@dataclass
class SweepState:
    """What a sweep needs to run (and to be resumed): written as ``pareto_ray_sweep.json`` in its folder."""

    name: str
    config: dict[str, Any]  # the user's config (relative paths kept): the base of the best-config YAML
    run_config: dict[str, Any]  # the same with paths made absolute: what trials run
    tracking_uri: str
    parent_run_id: str

    def write(self, experiment: Path) -> None:
        (experiment / STATE_FILE).write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def read(cls, experiment: Path) -> SweepState:
        from pareto_ray.config import ConfigError

        path = experiment / STATE_FILE
        if not path.is_file():
            raise ConfigError(f"{experiment} is not a pareto-ray sweep folder (no {STATE_FILE})")
        return cls(**json.loads(path.read_text()))


@dataclass
class SweepResult:
    name: str
    experiment_path: str
    parent_run_id: str
    table: pa.Table
    table_path: str
    interrupted: bool
    best: dict[str, Any] | None = None  # the best trial's table row
    best_params: dict[str, Any] | None = None
    best_config: str | None = None
    best_checkpoint: str | None = None
    best_val_hv: float | None = None
    best_test_hv: float | None = None

    @property
    def stopped_early(self) -> int:
        return sum(r == "early_stopped" for r in self.table.column("stop_reason").to_pylist())

    def summary(self) -> dict[str, Any]:
        return {"best_config": self.best_config, "best_params": self.best_params, "best_val_hv": self.best_val_hv,
                "best_test_hv": self.best_test_hv, "best_checkpoint": self.best_checkpoint,
                "trials": self.table.num_rows, "stopped_early": self.stopped_early, "interrupted": self.interrupted,
                "experiment_path": self.experiment_path, "table": self.table_path, "mlflow_parent_run_id": self.parent_run_id}


def sweep_name(cfg: Config) -> str:
    """The configured name, or ``tune-<method>-<dataset>-<UTC timestamp>``."""
    if cfg.name:
        return cfg.name
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"tune-{cfg.method.name}-{cfg.data.dataset}-{stamp}"


def _absolute_paths(cfg: Config, uri: str) -> Config:
    """Paths trials can use from any working directory (Tune runs trials in their own folders)."""
    from pareto_ray.data import cache_dir
    from pareto_ray.trainer import _storage_path

    data = cfg.data.model_copy(update={"root": cfg.data.root and str(Path(cfg.data.root).expanduser().resolve()),
                                       "cache_dir": str(cache_dir(cfg.data).resolve())})
    ray_cfg = cfg.ray.model_copy(update={"storage_path": _storage_path(cfg.ray.storage_path)})
    mlflow_cfg = cfg.mlflow.model_copy(update={"tracking_uri": uri})
    return cfg.model_copy(update={"data": data, "ray": ray_cfg, "mlflow": mlflow_cfg})


def _report_callback() -> Any:
    """A ``TuneReportCallback`` that adds ``epochs`` (epochs done) to what Tune receives.

    ASHA counts in ``epochs`` rather than Tune's ``training_iteration``: a restored trial resumes its Train run
    from a checkpoint, so its first new report is not its first epoch.  (Built here so that importing this
    module does not import Ray.)
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReportCallback(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):  # noqa: ANN001
            if metrics and "epoch" in metrics[0]:
                metrics = [{**metrics[0], EPOCHS: int(metrics[0]["epoch"]) + 1}, *metrics[1:]]
            super().after_report(run_context, metrics, checkpoint)

    return EpochReportCallback()


def _trial(params: dict[str, Any], state: SweepState) -> None:
    """One Tune trial: the Ray Train driver of one sampled config."""
    import ray.tune

    from pareto_ray import checkpoint as ckpt
    from pareto_ray import tracking
    from pareto_ray.trainer import build_trainer

    name = f"{state.name}-{ray.tune.get_context().get_trial_id()}"
    cfg = trial_config(state.run_config, params, name=name)
    run_id, _ = tracking.start_run(state.tracking_uri, cfg.mlflow.experiment, name, cfg.flat(),
                                   parent_run_id=state.parent_run_id)
    latest = _latest_checkpoint(Path(cfg.ray.storage_path) / name)
    if latest is not None:  # a restored trial: its Train run resumes here, and Tune may have missed its last epochs
        restored = ckpt.read_state(latest)
        ray.tune.report({**restored["metrics"], EPOCHS: restored["epoch"] + 1, "checkpoint_path": str(latest)})
    build_trainer(cfg, state.tracking_uri, run_id, callbacks=[_report_callback()]).fit()
    tracking.end_run(state.tracking_uri, run_id)  # a trial stopped early never gets here: ``finish`` closes its run


def _latest_checkpoint(run_dir: Path) -> Path | None:
    """The Train run's latest checkpoint (Ray Train always keeps it), if the run exists."""
    from pareto_ray import checkpoint as ckpt

    found = [d for d in run_dir.glob("checkpoint_*") if (d / ckpt.STATE_FILE).is_file()]
    return max(found, key=lambda d: ckpt.read_state(d)["epoch"], default=None)


def _trainable(cfg: Config, state: SweepState) -> Any:
    from ray import tune

    return tune.with_resources(tune.with_parameters(_trial, state=state), {"cpu": cfg.tune.trial_cpus})


def _max_concurrent(cfg: Config) -> int:
    import ray

    if cfg.tune.max_concurrent_trials:
        return cfg.tune.max_concurrent_trials
    total = ray.cluster_resources()
    if cfg.ray.use_gpu:
        return max(1, int(total.get("GPU", 0) // cfg.ray.num_workers))
    # a trial holds its driver's share and its workers' CPUs: on 2 CPUs, two 1-worker trials fit at 0.99 CPU per worker
    per_trial = cfg.ray.num_workers * cfg.ray.cpus_per_worker + cfg.tune.trial_cpus
    return max(1, int(round(total.get("CPU", 1) / per_trial, 6)))


def scheduler(cfg: Config) -> Any:
    """ASHA (stops trials whose ``val_hv`` trails at a rung) or FIFO, counting in epochs."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = cfg.tune.scheduler
    if s.name == "fifo":
        return FIFOScheduler()
    # A trial that reaches train.epochs ends by itself: stopping it there (ASHA's default) would kill its Train
    # run while it shuts down.  Only a max_t below train.epochs stops trials at max_t.
    max_t = s.max_t or cfg.train.epochs
    return ASHAScheduler(time_attr=EPOCHS, max_t=max_t, grace_period=s.grace_period, reduction_factor=s.reduction_factor,
                         stop_last_trials=max_t < cfg.train.epochs)


def search_algorithm(cfg: Config) -> Any:
    """Random/grid search (Tune's ``BasicVariantGenerator``) or Optuna, running at most ``_max_concurrent`` trials.

    Tune ignores ``TuneConfig.max_concurrent_trials`` for a search generator passed in, so the limit is set here.
    """
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    t, concurrent = cfg.tune, _max_concurrent(cfg)
    if t.search == "random":
        return BasicVariantGenerator(max_concurrent=concurrent, random_state=t.seed)
    try:
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=t.seed), max_concurrent=concurrent)
    except ImportError as exc:
        from pareto_ray.config import ConfigError

        raise ConfigError(f"tune.search: optuna is not installed ({exc}); pip install 'pareto-ray[optuna]'") from None


def build_tuner(cfg: Config, state: SweepState) -> Any:
    """The ``Tuner`` for a validated config with a ``tune:`` section."""
    from ray import tune

    return tune.Tuner(
        _trainable(cfg, state),
        param_space=param_space(cfg),
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=cfg.tune.num_samples,
                                    scheduler=scheduler(cfg), search_alg=search_algorithm(cfg)),
        run_config=tune.RunConfig(name=state.name, storage_path=cfg.ray.storage_path, verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures)),
    )


def run_sweep(cfg: Config, num_samples: int | None = None) -> SweepResult:
    """Run the sweep a config's ``tune:`` section describes, then summarize and track it."""
    from pareto_ray import tracking
    from pareto_ray.config import ConfigError
    from pareto_ray.data import load_dataset
    from pareto_ray.trainer import init_ray

    if cfg.tune is None:
        raise ConfigError("the config has no tune: section (see jobs/configs/tune_quickstart.yaml)")
    if num_samples is not None:
        if num_samples < 1:
            raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
        cfg = cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"num_samples": num_samples})})
    if "://" in cfg.ray.storage_path:
        raise ConfigError(f"ray.storage_path: a sweep keeps its table and state in a folder, got {cfg.ray.storage_path}; "
                          "use a path every node mounts (NFS, EFS, a shared volume)")
    name = sweep_name(cfg)
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    run_cfg = _absolute_paths(cfg, uri)
    experiment = Path(run_cfg.ray.storage_path) / name
    if experiment.exists():
        raise ConfigError(f"sweep {name!r} already exists at {experiment}: continue it with --resume {experiment}, "
                          f"or set another name")
    init_ray(cfg.ray.address)
    params = {k: v for k, v in cfg.flat().items() if v is not None or not k.startswith("tune.")}  # unused kinds
    parent_run_id, _ = tracking.start_run(uri, cfg.mlflow.experiment, name, params)
    load_dataset(run_cfg.data)  # build the Parquet cache once, before the trials' workers need it
    state = SweepState(name=name, config=cfg.model_dump(mode="json"), run_config=run_cfg.model_dump(mode="json"),
                       tracking_uri=uri, parent_run_id=parent_run_id)
    tuner = build_tuner(run_cfg, state)  # creates the experiment folder
    state.write(experiment)
    return _fit(tuner, run_cfg, state, experiment)


def resume_sweep(path: str | Path) -> SweepResult:
    """Continue an interrupted sweep from its folder: unfinished trials resume from their Train checkpoints."""
    from ray import tune

    from pareto_ray import tracking
    from pareto_ray.config import Config
    from pareto_ray.trainer import init_ray

    experiment = Path(path).expanduser().resolve()
    state = SweepState.read(experiment)
    run_cfg = Config.model_validate(state.run_config)
    init_ray(run_cfg.ray.address)
    tracking.start_run(state.tracking_uri, run_cfg.mlflow.experiment, state.name, {})  # reopens the parent run
    tuner = tune.Tuner.restore(str(experiment), trainable=_trainable(run_cfg, state),
                               resume_unfinished=True, resume_errored=True)
    return _fit(tuner, run_cfg, state, experiment)


def _fit(tuner: Any, cfg: Config, state: SweepState, experiment: Path) -> SweepResult:
    from pareto_ray import tracking

    try:
        results = tuner.fit()
    except BaseException:
        tracking.end_run(state.tracking_uri, state.parent_run_id, "FAILED")
        raise
    return finish(results, cfg, state, experiment)


# --------------------------------------------------------------------------- results


def _stop_reason(result: Any, epochs: int, planned: int) -> str:
    """Why a trial ended, from what Tune recorded (its statuses are not: an interrupted sweep marks its running
    trials terminated, and a restored one loses the 'done' of trials that had returned)."""
    if result.error is not None:
        return "error"
    if epochs >= planned:
        return "completed"
    if result.metrics.get("done"):  # set on the result that made the scheduler stop the trial
        return "early_stopped"
    return "unfinished"  # the sweep was interrupted: --resume continues it


def expected_trials(cfg: Config) -> int:
    """Trials the sweep creates: ``num_samples`` times every grid combination."""
    return cfg.tune.num_samples * math.prod(len(p.grid) for p in cfg.tune.space.values() if p.kind == "grid")


def _cell(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) or value is None else json.dumps(value)


def _trial_row(result: Any, cfg: Config, state: SweepState) -> dict[str, Any]:
    """Sampled params, stop reason, epochs run, final and best ``val_hv`` and the best checkpoint of one trial."""
    params = {k: result.config.get(k) for k in cfg.tune.space}
    trial_cfg = trial_config(state.run_config, params)
    planned = min(trial_cfg.train.epochs, cfg.tune.scheduler.max_t or trial_cfg.train.epochs)
    df = result.metrics_dataframe
    scored = df is not None and METRIC in df.columns and bool(df[METRIC].notna().any())
    if scored:  # a restored trial reports its latest epoch again
        df = df.sort_values("epoch", kind="stable").drop_duplicates("epoch", keep="last")
    best = df.loc[df[METRIC].idxmax()] if scored else None
    epochs = int(df[EPOCHS].max()) if scored else 0
    trial_id = result.metrics.get("trial_id") or re.search(r"[0-9a-f]{5}_\d{5}", Path(result.path).name).group(0)
    return {
        "trial_id": trial_id, **{k: _cell(v) for k, v in params.items()},
        "stop_reason": _stop_reason(result, epochs, planned), "epochs": epochs,
        "final_val_hv": float(df[METRIC].dropna().iloc[-1]) if scored else math.nan,
        "best_val_hv": float(best[METRIC]) if scored else math.nan,
        "best_epoch": int(best["epoch"]) + 1 if scored else 0,  # 1-based, like epochs
        "checkpoint": str(best["checkpoint_path"]) if scored else None,
        "run_name": f"{state.name}-{trial_id}",
        "_params": params, "_history": df if scored else None,
    }


def _backfill(uri: str, run_id: str, history: Any) -> None:
    """Log epochs Tune received but the trial's MLflow run missed: a worker reports an epoch, then logs it to
    MLflow, and ASHA may stop the trial in between."""
    from ray.tune.result import AUTO_RESULT_KEYS

    from pareto_ray import tracking

    skip = {*AUTO_RESULT_KEYS, "done", "trial_id", "checkpoint_path", EPOCHS}
    keys = [c for c in history.columns if c not in skip and not c.startswith("config/")
            and history[c].dtype.kind in "fiub"]
    logged = tracking.logged_steps(uri, run_id, METRIC)
    for row in history.to_dict("records"):
        if int(row["epoch"]) not in logged:
            tracking.log_metrics(uri, run_id, {k: row[k] for k in keys}, step=int(row["epoch"]))


def finish(results: ResultGrid, cfg: Config, state: SweepState, experiment: Path) -> SweepResult:
    """Write the sweep table and best config, evaluate the best checkpoint on test, close the MLflow runs."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from mlflow.tracking import MlflowClient

    from pareto_ray import tracking
    from pareto_ray.evaluation import evaluate_checkpoint

    rows = sorted((_trial_row(r, cfg, state) for r in results), key=lambda r: r["trial_id"])
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    table_path = experiment / TABLE_FILE
    pq.write_table(table, table_path)
    interrupted = len(rows) < expected_trials(cfg) or any(r["stop_reason"] == "unfinished" for r in rows)
    out = SweepResult(name=state.name, experiment_path=str(experiment), parent_run_id=state.parent_run_id,
                      table=table, table_path=str(table_path), interrupted=interrupted)

    uri, client = state.tracking_uri, MlflowClient(state.tracking_uri)
    children = {r.data.tags.get(tracking.RUN_NAME_TAG): r.info.run_id for r in client.search_runs(
        [client.get_run(state.parent_run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{state.parent_run_id}'")}
    for row in rows:
        if row["run_name"] in children and row["_history"] is not None:
            _backfill(uri, children[row["run_name"]], row["_history"])
        if row["run_name"] in children and row["stop_reason"] != "unfinished":
            client.set_tag(children[row["run_name"]], STOP_REASON_TAG, row["stop_reason"])
            tracking.end_run(uri, children[row["run_name"]], "FAILED" if row["stop_reason"] == "error" else "FINISHED")

    artifacts: dict[str, Path] = {"": table_path}
    scored = [r for r in rows if math.isfinite(r["best_val_hv"])]
    if scored and not interrupted:
        best = max(scored, key=lambda r: r["best_val_hv"])
        best_yaml = experiment / BEST_CONFIG_FILE
        best_cfg = trial_config(state.config, best["_params"])
        body = yaml.safe_dump(best_cfg.model_dump(mode="json", exclude={"tune", "name"}), sort_keys=False)
        best_yaml.write_text(f"# Best of sweep {state.name}: trial {best['trial_id']}, val_hv {best['best_val_hv']:.4f} "
                             f"after epoch {best['best_epoch']}.\n#   pareto-ray train --config {best_yaml}\n{body}")
        fronts = experiment / "best_fronts"
        test = evaluate_checkpoint(best["checkpoint"], "test", fronts)
        out.best, out.best_params = {k: v for k, v in best.items() if not k.startswith("_")}, best["_params"]
        out.best_config, out.best_checkpoint = str(best_yaml), best["checkpoint"]
        out.best_val_hv, out.best_test_hv = best["best_val_hv"], float(test["hv"])
        artifacts |= {"best": best_yaml, "best/fronts": fronts}
        if best["run_name"] in children:
            client.set_tag(children[best["run_name"]], BEST_TAG, "true")
        client.set_tag(state.parent_run_id, "pareto_ray.best_trial", best["trial_id"])
        tracking.log_metrics(uri, state.parent_run_id, {"best_val_hv": out.best_val_hv, "best_test_hv": out.best_test_hv},
                             step=0)
    tracking.log_metrics(uri, state.parent_run_id, {"trials": len(rows), "stopped_early": out.stopped_early}, step=0)
    tracking.log_artifacts(uri, state.parent_run_id, artifacts)
    tracking.end_run(uri, state.parent_run_id, "KILLED" if interrupted else "FINISHED")
    return out
