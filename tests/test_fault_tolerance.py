"""Surviving failures: a worker killed mid-epoch, a driver killed mid-run (node loss: tests/test_cluster.py).

Both end with every epoch's metrics exactly once in MLflow — a restart from scratch would log epoch 0 twice —
and every checkpoint loadable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, tiny_overrides
from mlflow.tracking import MlflowClient

from pareto_ray.checkpoint import load_model, read_state
from pareto_ray.config import load_config
from pareto_ray.training import fit
from pareto_ray.training.worker import FAIL_AT_ENV

pytestmark = pytest.mark.slow


def _logged_steps(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def _checkpoint_epochs(run_dir: Path) -> list[int]:
    dirs = [p for p in run_dir.glob("checkpoint_*") if p.is_dir()]
    for d in dirs:
        load_model(d)
    return sorted(read_state(d)["epoch"] for d in dirs)


def _latest_checkpoint(run_dir: Path) -> str | None:
    try:
        latest = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return latest["checkpoint_dir_name"] if latest else None


def test_worker_killed_mid_epoch_restarts_from_checkpoint(ray_session, tmp_path, mlflow_uri, monkeypatch):
    # 512 samples / batch 64 = 8 steps per epoch: rank 1 dies after step 6 of the second epoch (epoch 1), once.
    monkeypatch.setenv(FAIL_AT_ENV, "1:6:1")
    cfg = load_config(None, tiny_overrides(tmp_path, mlflow_uri, name="worker-kill", **{
        "train.epochs": 2, "ray.max_failures": 1, "ray.num_to_keep": 2}))
    result = fit(cfg)

    run_dir = tmp_path / "ray_results" / "worker-kill"
    assert (run_dir / ".fail_at_1_6_1").exists(), "the worker was never killed"
    for key in ("val_hv", "train_loss"):
        assert _logged_steps(mlflow_uri, result.run_id, key) == [0, 1]
    assert _checkpoint_epochs(run_dir) == [0, 1]
    assert read_state(result.checkpoint)["epoch"] == 1
    assert MlflowClient(mlflow_uri).get_run(result.run_id).info.status == "FINISHED"


def test_fail_at_must_be_epoch_step_rank(tmp_path, mlflow_uri, monkeypatch):
    from pareto_ray.training.worker import fault_injection

    cfg = load_config(None, tiny_overrides(tmp_path, mlflow_uri, name="bad-spec"))
    monkeypatch.setenv(FAIL_AT_ENV, "1:3")
    with pytest.raises(ValueError, match="epoch:step:rank"):
        fault_injection(cfg)
    monkeypatch.setenv(FAIL_AT_ENV, "0:2:1")
    assert fault_injection(cfg) == {"epoch": 0, "step": 2, "rank": 1,
                                     "marker": str(tmp_path / "ray_results" / "bad-spec" / ".fail_at_0_2_1")}


def test_killed_driver_resumes_when_rerun(ray_session, tmp_path, mlflow_uri):
    """`pareto-ray train` killed (SIGKILL) after its first checkpoint; the same command again finishes the run."""
    address = ray_session.get_runtime_context().gcs_address  # the session's Ray: no second instance to start
    sets = tiny_overrides(tmp_path, mlflow_uri, name="driver-kill", **{
        "train.epochs": 2, "ray.num_to_keep": 2, "ray.address": address})
    cmd = [str(Path(sys.executable).parent / "pareto-ray"), "train", "--json", *[a for s in sets for a in ("--set", s)]]
    run_dir = tmp_path / "ray_results" / "driver-kill"

    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while _latest_checkpoint(run_dir) is None:
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-4000:]
                assert time.monotonic() < deadline, "no checkpoint within 180 s"
                time.sleep(0.2)
        finally:
            first.kill()
            first.wait()
    killed_after = read_state(run_dir / _latest_checkpoint(run_dir))["epoch"]
    assert killed_after == 0, "the first run got past its first checkpoint before it could be killed"

    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    summary = json.loads(next(line for line in second.stdout.splitlines() if line.startswith('{"run_name"')))
    assert read_state(summary["checkpoint"])["epoch"] == 1
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("pareto-ray").experiment_id])
    assert [r.info.run_id for r in runs] == [summary["run_id"]]  # the same MLflow run, continued
    assert _logged_steps(mlflow_uri, summary["run_id"], "val_hv") == [0, 1]
    assert runs[0].info.status == "FINISHED"
    assert _checkpoint_epochs(run_dir) == [0, 1]
