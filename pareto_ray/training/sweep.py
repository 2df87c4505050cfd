"""Ray Tune sweeps that maximize validation hypervolume (``val_hv``).

The search space is the config's ``tune:`` section (``pareto_ray.search_space``,
checked when the config is loaded).  ``run_sweep`` runs one Tune trial per
sampled config.  A trial is a function that opens its MLflow child run and
fits the config's ``TorchTrainer`` with a deterministic Train run name
(``<sweep>-<trial id>``); the trainer's MLflow logger and then a
``TuneReportCallback`` see each epoch, so Tune sees ``val_hv`` every epoch
(ASHA stops weak trials early), every epoch Tune sees is already in MLflow,
and a restored trial resumes its Train run from its latest checkpoint.  The
sweep ends with a table of trials (Parquet), the best config as a
ready-to-train YAML, and the best checkpoint evaluated on the test split.
``resume_sweep`` continues an interrupted sweep through ``Tuner.restore``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.tune
import yaml
from ray import tune
from ray.tune import ResultGrid
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator

from pareto_ray import tracking
from pareto_ray.config import Config, ConfigError, parse_config
from pareto_ray.data import ensure_cache, streams
from pareto_ray.runtime import ensure_resources, init_ray, resolve_paths
from pareto_ray.search_space import ParamSpec, field_info, is_int_field, with_params
from pareto_ray.training.continuous import build_trainer
from pareto_ray.training.evaluate import evaluate_checkpoint
from pareto_ray.tune_report import EPOCHS, EpochReportCallback

METRIC = "val_hv"
STATE_FILE = "pareto_ray_sweep.json"
TABLE_FILE = "sweep.parquet"
BEST_CONFIG_FILE = "best_config.yaml"
STOP_REASON_TAG = "pareto_ray.stop_reason"
BEST_TAG = "pareto_ray.best"


def domain(spec: ParamSpec, integer: bool) -> Any:
    """The Tune search domain of one parameter (integers drawn when the config field is an int)."""
    if spec.kind == "choice":
        return tune.choice(spec.choice)
    if spec.kind == "grid":
        return tune.grid_search(spec.grid)
    low, high = getattr(spec, spec.kind)
    if integer:
        return (tune.randint if spec.kind == "uniform" else tune.lograndint)(int(low), int(high) + 1)
    return (tune.uniform if spec.kind == "uniform" else tune.loguniform)(low, high)


def param_space(cfg: Config) -> dict[str, Any]:
    """Tune's ``param_space``: one domain per dotted key."""
    assert cfg.tune is not None
    return {key: domain(spec, is_int_field(field_info(cfg, key))) for key, spec in cfg.tune.space.items()}


def trial_config(base: dict[str, Any], params: dict[str, Any], name: str | None = None) -> Config:
    """The config of one trial: ``base`` (a config dump) with the sampled ``params`` set, no ``tune:`` section."""
    return parse_config(with_params(base, params, name))


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


def _trial(params: dict[str, Any], state: SweepState, verbose: bool = False) -> None:
    """One Tune trial: the Ray Train driver of one sampled config (``verbose``: with Ray Train's INFO lines)."""
    name = f"{state.name}-{ray.tune.get_context().get_trial_id()}"
    cfg = trial_config(state.run_config, params, name=name)
    run_id, _ = tracking.start_run(state.tracking_uri, cfg.mlflow.experiment, name, cfg.flat(),
                                   parent_run_id=state.parent_run_id)
    # A restored trial's Train run resumes from its checkpoint and reports that epoch again first (see worker.py),
    # so Tune sees the epochs it may have missed.
    build_trainer(cfg, state.tracking_uri, run_id, callbacks=[EpochReportCallback()], verbose=verbose).fit()
    tracking.end_run(state.tracking_uri, run_id)  # a trial stopped early never gets here: ``finish`` closes its run


def _trainable(cfg: Config, state: SweepState, verbose: bool = False) -> Any:
    return tune.with_resources(tune.with_parameters(_trial, state=state, verbose=verbose), {"cpu": cfg.tune.trial_cpus})


def _max_concurrent(cfg: Config) -> int:
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
    t, concurrent = cfg.tune, _max_concurrent(cfg)
    if t.search == "random":
        return BasicVariantGenerator(max_concurrent=concurrent, random_state=t.seed)
    try:  # optuna is an optional dependency
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=t.seed), max_concurrent=concurrent)
    except ImportError as exc:
        raise ConfigError(f"tune.search: optuna is not installed ({exc}); pip install 'pareto-ray[optuna]'") from None


def build_tuner(cfg: Config, state: SweepState, verbose: bool = False) -> Any:
    """The ``Tuner`` for a validated config with a ``tune:`` section (``verbose``: trials log Ray Train's INFO lines)."""
    return tune.Tuner(
        _trainable(cfg, state, verbose),
        param_space=param_space(cfg),
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=cfg.tune.num_samples,
                                    scheduler=scheduler(cfg), search_alg=search_algorithm(cfg)),
        run_config=tune.RunConfig(name=state.name, storage_path=cfg.ray.storage_path, verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures)),
    )


def run_sweep(cfg: Config, num_samples: int | None = None, verbose: bool = False) -> SweepResult:
    """Run the sweep a config's ``tune:`` section describes, then summarize and track it.

    A cluster that cannot hold one trial (its driver and its workers) fails before anything starts.
    """
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
    run_cfg = resolve_paths(cfg)  # Tune runs trials in their own folders
    run_cfg = run_cfg.model_copy(update={"mlflow": run_cfg.mlflow.model_copy(update={"tracking_uri": uri})})
    experiment = Path(run_cfg.ray.storage_path) / name
    if experiment.exists():
        raise ConfigError(f"sweep {name!r} already exists at {experiment}: continue it with --resume {experiment}, "
                          f"or set another name")
    init_ray(cfg.ray.address, verbose=verbose)
    ensure_cache(run_cfg.data)  # build the Parquet cache once, before the trials' workers need it
    if streams(run_cfg.data):
        raise ConfigError("a Tune sweep trains each trial from memory: set data.streaming=false (streamed data would "
                          "need Ray Data CPUs reserved beside every trial, which the sweep does not do yet)")
    ensure_resources(cfg.ray, trial_cpus=cfg.tune.trial_cpus)
    params = {k: v for k, v in cfg.flat().items() if v is not None or not k.startswith("tune.")}  # unused kinds
    parent_run_id, _ = tracking.start_run(uri, cfg.mlflow.experiment, name, params)
    state = SweepState(name=name, config=cfg.model_dump(mode="json"), run_config=run_cfg.model_dump(mode="json"),
                       tracking_uri=uri, parent_run_id=parent_run_id)
    tuner = build_tuner(run_cfg, state, verbose)  # creates the experiment folder
    state.write(experiment)
    return _fit(tuner, run_cfg, state, experiment)


def resume_sweep(path: str | Path, verbose: bool = False) -> SweepResult:
    """Continue an interrupted sweep from its folder: unfinished trials resume from their Train checkpoints."""
    experiment = Path(path).expanduser().resolve()
    state = SweepState.read(experiment)
    run_cfg = Config.model_validate(state.run_config)
    init_ray(run_cfg.ray.address, verbose=verbose)
    ensure_resources(run_cfg.ray, trial_cpus=run_cfg.tune.trial_cpus)
    tracking.start_run(state.tracking_uri, run_cfg.mlflow.experiment, state.name, {})  # reopens the parent run
    tuner = tune.Tuner.restore(str(experiment), trainable=_trainable(run_cfg, state, verbose),
                               resume_unfinished=True, resume_errored=True)
    return _fit(tuner, run_cfg, state, experiment)


def _fit(tuner: Any, cfg: Config, state: SweepState, experiment: Path) -> SweepResult:
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
        "_params": params,
    }


def finish(results: ResultGrid, cfg: Config, state: SweepState, experiment: Path) -> SweepResult:
    """Write the sweep table and best config, evaluate the best checkpoint on test, close the MLflow runs."""
    rows = sorted((_trial_row(r, cfg, state) for r in results), key=lambda r: r["trial_id"])
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    table_path = experiment / TABLE_FILE
    pq.write_table(table, table_path)
    interrupted = len(rows) < expected_trials(cfg) or any(r["stop_reason"] == "unfinished" for r in rows)
    out = SweepResult(name=state.name, experiment_path=str(experiment), parent_run_id=state.parent_run_id,
                      table=table, table_path=str(table_path), interrupted=interrupted)

    uri = state.tracking_uri
    children = tracking.child_runs(uri, state.parent_run_id)
    for row in rows:
        if row["run_name"] in children and row["stop_reason"] != "unfinished":
            tracking.set_tag(uri, children[row["run_name"]], STOP_REASON_TAG, row["stop_reason"])
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
            tracking.set_tag(uri, children[best["run_name"]], BEST_TAG, "true")
        tracking.set_tag(uri, state.parent_run_id, "pareto_ray.best_trial", best["trial_id"])
        tracking.log_metrics(uri, state.parent_run_id, {"best_val_hv": out.best_val_hv, "best_test_hv": out.best_test_hv},
                             step=0)
    tracking.log_metrics(uri, state.parent_run_id, {"trials": len(rows), "stopped_early": out.stopped_early}, step=0)
    tracking.log_artifacts(uri, state.parent_run_id, artifacts)
    tracking.end_run(uri, state.parent_run_id, "KILLED" if interrupted else "FINISHED")
    return out
