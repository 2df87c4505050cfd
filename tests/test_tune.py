"""`pareto-ray tune`: search-space validation, an ASHA sweep tracked in MLflow, interrupt + resume."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import tiny_overrides
from mlflow.tracking import MlflowClient

from pareto_ray.cli import main
from pareto_ray.config import ConfigError, load_config
from pareto_ray.methods import METHODS
from pareto_ray.training.sweep import param_space, run_sweep

# one worker per trial at 0.99 CPU: with each trial driver's 0.01 CPU, two trials fit side by side on 2 CPUs
TINY = {"ray.num_workers": 1, "ray.cpus_per_worker": 0.99, "train.batch_size": 64}


def _tune_config(tmp_path: Path, mlflow_uri: str, tune: dict, **extra: object) -> Path:
    """A tiny MultiDigits config file with a ``tune:`` section."""
    raw: dict = {"tune": tune}
    for item in tiny_overrides(tmp_path, mlflow_uri, **TINY, **extra):
        key, _, value = item.partition("=")
        node = raw
        *sections, last = key.split(".")
        for part in sections:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _children(mlflow_uri: str, parent_run_id: str) -> list:
    client = MlflowClient(mlflow_uri)
    exp = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


@pytest.mark.parametrize("space, field, message", [
    ({"method.rnk": {"choice": [1, 2]}}, "tune.space.method.rnk", "unknown parameter"),
    ({"train": {"lrr": {"choice": [0.1]}}}, "tune.space.train.lrr", "unknown parameter"),
    ({"method.rank": {"choice": []}}, "tune.space.method.rank", "at least one value"),
    ({"train.lr": {"loguniform": [0.1, 0.001]}}, "tune.space.train.lr", "must be below high"),
    ({"method.rank": {"grid": [1, 0]}}, "tune.space.method.rank", "value 0 is not valid"),
    ({"ray.num_workers": {"choice": [1, 2]}}, "tune.space.ray.num_workers", "cannot be searched"),
    ({"train.lr": {"choice": [0.1], "uniform": [0.1, 0.2]}}, "tune.space.train.lr", "exactly one"),
])
def test_bad_search_space_fails_before_any_trial(tmp_path, mlflow_uri, capsys, space, field, message):
    path = _tune_config(tmp_path, mlflow_uri, {"space": space})
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert field in str(exc.value) and message in str(exc.value)
    assert main(["tune", "--config", str(path)]) == 2  # the CLI stops there: no sweep folder, no MLflow run
    assert field in capsys.readouterr().out
    assert not (tmp_path / "ray_results").exists() and not Path(mlflow_uri.removeprefix("sqlite:///")).exists()


def test_space_domains_and_shipped_configs():
    cfg = load_config("jobs/configs/tune_multimnist_palora.yaml")
    assert cfg.tune.space["method.rank"].choice == [1, 2, 4, 8]
    assert cfg.tune.space["method.rays_per_step"].choice == [3, 5, 7, 9]
    assert cfg.tune.scheduler.name == "asha"
    quick = load_config("jobs/configs/tune_quickstart.yaml", ["tune.space.method.rank={uniform: [1, 4]}"])
    domains = param_space(quick)
    ranks = {domains["method.rank"].sample() for _ in range(50)}  # an int field draws ints, both ends included
    assert ranks <= {1, 2, 3, 4} and all(isinstance(r, int) for r in ranks)
    assert all(3e-4 <= domains["train.lr"].sample() <= 3e-3 for _ in range(50))
    if "lorpman" in METHODS:
        lorpman = load_config("jobs/configs/tune_multimnist_lorpman.yaml")
        assert lorpman.tune.space["method.scale"].grid == [1, 2, 4, 6]


def test_search_algorithms_run_as_many_trials_as_the_cpus_hold(ray_session, tmp_path, mlflow_uri):
    from ray.tune.search import ConcurrencyLimiter

    from pareto_ray.training.sweep import search_algorithm

    fits = int(ray_session.cluster_resources()["CPU"])  # a trial: one 0.99-CPU worker and its 0.01-CPU driver
    cfg = load_config(_tune_config(tmp_path, mlflow_uri, {"space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}))
    assert search_algorithm(cfg).max_concurrent == fits
    search = search_algorithm(cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"search": "optuna"})}))
    assert isinstance(search, ConcurrencyLimiter) and search.max_concurrent == fits


@pytest.mark.slow
def test_asha_sweep_tracks_trials_and_writes_best_config(ray_session, tmp_path, mlflow_uri, capsys):
    # lr 1e-7 barely moves the weights from the shared seed's init: ASHA's first rung (after 1 epoch) stops it
    tune = {"space": {"train.lr": {"grid": [3e-3, 1e-3, 1e-7, 2e-3]}, "method.rank": {"choice": [1, 2]}},
            "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}, "max_concurrent_trials": 2}
    path = _tune_config(tmp_path, mlflow_uri, tune, name="sweep", **{"train.epochs": 3, "data.max_train": 1024})
    assert main(["tune", "--config", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    table = pq.read_table(out["table"]).to_pylist()
    assert out["trials"] == len(table) == 4
    assert out["stopped_early"] >= 1 and sum(r["stop_reason"] == "early_stopped" for r in table) == out["stopped_early"]
    slow = next(r for r in table if r["train.lr"] == 1e-7)
    assert slow["stop_reason"] == "early_stopped" and slow["epochs"] < 3
    assert all(r["stop_reason"] in ("completed", "early_stopped") for r in table)
    assert out["best_val_hv"] == max(r["best_val_hv"] for r in table)
    assert 0 < out["best_test_hv"] <= 1
    best = next(r for r in table if r["best_val_hv"] == out["best_val_hv"])
    assert out["best_checkpoint"] == best["checkpoint"] and Path(best["checkpoint"], "model.safetensors").is_file()

    # the best config is a ready-to-train YAML holding the best trial's sampled values
    best_cfg = load_config(out["best_config"])
    assert best_cfg.tune is None and best_cfg.name is None
    assert (best_cfg.train.lr, best_cfg.method.rank) == (best["train.lr"], best["method.rank"])
    assert out["best_params"] == {"train.lr": best["train.lr"], "method.rank": best["method.rank"]}

    client = MlflowClient(mlflow_uri)
    parent = client.get_run(out["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_val_hv"] == pytest.approx(out["best_val_hv"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"sweep.parquet", "best"}
    children = _children(mlflow_uri, parent.info.run_id)
    assert len(children) == 4
    by_lr = {float(c.data.params["train.lr"]): c for c in children}
    for row in table:
        child = next(c for c in children if c.info.run_name.endswith(row["trial_id"]))
        assert child.info.status == "FINISHED"
        assert child.data.params["method.rank"] == str(row["method.rank"])
        assert child.data.tags["pareto_ray.stop_reason"] == row["stop_reason"]
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_hv")]
        assert sorted(steps) == list(range(len(steps))) and len(steps) >= row["epochs"]
        assert child.data.metrics["val_hv"] == pytest.approx(row["final_val_hv"]) or len(steps) > row["epochs"]
    assert by_lr[1e-7].data.tags["pareto_ray.stop_reason"] == "early_stopped"
    assert [c.data.tags.get("pareto_ray.best") for c in children].count("true") == 1


def _interrupt_after_first_completed_trial(mlflow_uri: str, done: threading.Event) -> None:
    """Send SIGUSR1 (Tune's 'stop and save the experiment' signal, like Ctrl+C) once one trial finished (its
    MLflow run ended) and another is part way through."""
    client = MlflowClient(mlflow_uri)
    while not done.is_set():
        try:
            runs = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
                    if "mlflow.parentRunId" in r.data.tags]
        except Exception:  # the store is created by the sweep: not there yet
            runs = []
        running = [r for r in runs if r.info.status == "RUNNING" and client.get_metric_history(r.info.run_id, "val_hv")]
        if running and any(r.info.status == "FINISHED" for r in runs):
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        time.sleep(0.5)


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_trials(ray_session, tmp_path, mlflow_uri, capsys):
    # one trial at a time: trial 0 runs 2 epochs; once trial 1 (5 epochs) has a checkpoint, the sweep is interrupted
    tune = {"space": {"train.epochs": {"grid": [2, 5]}}, "scheduler": {"name": "fifo"}, "max_concurrent_trials": 1}
    cfg = load_config(_tune_config(tmp_path, mlflow_uri, tune, name="resumable"))
    done = threading.Event()
    watcher = threading.Thread(target=_interrupt_after_first_completed_trial, args=(mlflow_uri, done), daemon=True)
    watcher.start()
    try:
        first = run_sweep(cfg)
    finally:
        done.set()
    reasons = first.table.column("stop_reason").to_pylist()
    assert first.interrupted and "completed" in reasons and "unfinished" in reasons
    assert MlflowClient(mlflow_uri).get_run(first.parent_run_id).info.status == "KILLED"

    assert main(["tune", "--resume", first.experiment_path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["trials"] == 2 and not out["interrupted"] and out["mlflow_parent_run_id"] == first.parent_run_id
    table = pq.read_table(out["table"]).to_pylist()
    assert [r["stop_reason"] for r in table] == ["completed"] * 2
    assert sorted(r["epochs"] for r in table) == [2, 5]

    client = MlflowClient(mlflow_uri)
    children = _children(mlflow_uri, first.parent_run_id)
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    for child in children:  # every epoch logged exactly once: no trial started over from epoch 0
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_hv")]
        assert sorted(steps) == list(range(int(child.data.params["train.epochs"])))
    # the trial that was mid-run when interrupted continued from its Train checkpoint
    long = next(r for r in table if r["epochs"] == 5)
    first_long = next(r for r in first.table.to_pylist() if r["trial_id"] == long["trial_id"])
    assert first_long["stop_reason"] == "unfinished" and first_long["epochs"] >= 1
