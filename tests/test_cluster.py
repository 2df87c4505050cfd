"""The cluster path: a local two-node Ray cluster (cluster/local/up.sh), `ray job submit` of jobs/train.py, node loss.

The cluster runs beside the test session's own `ray.init()` instance, on its own ports and temp dir; the
tests talk to it only through the `ray` CLI, as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, tiny_overrides
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient

from pareto_ray.checkpoint import load_model, read_state
from pareto_ray.tracking import RUN_NAME_TAG

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (the dashboard's agents take the next two)."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(30000, 32700)  # below the ephemeral range, where Ray picks its random ports
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    stack.enter_context(socket.create_server(("127.0.0.1", port)))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


def _cluster_ports() -> dict[str, str]:
    """Ports apart from Ray's defaults (the session's ray.init()), up.sh's (a developer's own cluster) and
    another test session's."""
    return {"CLUSTER_GCS_PORT": str(_free_ports(1)), "CLUSTER_DASHBOARD_PORT": str(_free_ports(3)),
            "CLUSTER_CLIENT_PORT": str(_free_ports(1)), "CLUSTER_WORKER_PORTS": str(random.randrange(21000, 30000, 1000))}


@dataclass
class LocalCluster:
    dir: Path
    env: dict[str, str]  # RAY_ADDRESS (the dashboard) and RAY_AUTH_MODE, as `source <dir>/env` sets them

    def ray(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "ray"), *args], env=self.env, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ray {' '.join(args)} → {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def submit(self, job_args: list[str], *ray_args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return self.ray("job", "submit", "--working-dir", ".", *ray_args, "--", "python", *job_args,
                        timeout=timeout, check=False)

    def jobs(self) -> JobSubmissionClient:
        token = self.ray("get-auth-token").stdout.strip()
        return JobSubmissionClient(self.env["RAY_ADDRESS"], headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[LocalCluster]:
    """cluster/local/up.sh → a head and a worker node with 1 CPU each; down.sh afterwards, whatever happened."""
    cluster_dir = Path(tempfile.mkdtemp(prefix="prc-", dir="/tmp"))  # short: Ray's socket paths live under it
    ports = _cluster_ports()
    env = {**os.environ, **ports, "CLUSTER_DIR": str(cluster_dir), "RAY_AUTH_MODE": "token",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    try:
        up = subprocess.run([str(REPO / "cluster/local/up.sh")], env=env, capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, f"up.sh failed:\n{up.stdout}\n{up.stderr}"
        address = f"http://127.0.0.1:{ports['CLUSTER_DASHBOARD_PORT']}"
        assert address in up.stdout  # up.sh prints where to submit jobs
        assert f"export RAY_ADDRESS={address}" in (cluster_dir / "env").read_text()
        yield LocalCluster(cluster_dir, {**env, "RAY_ADDRESS": address})
    finally:
        down = subprocess.run([str(REPO / "cluster/local/down.sh")], env=env, capture_output=True, text=True, timeout=120)
        shutil.rmtree(cluster_dir, ignore_errors=True)
        assert down.returncode == 0, down.stderr


def _job_overrides(tmp_path: Path, name: str, **extra: object) -> list[str]:
    # Absolute paths: the job's driver runs in an unpacked copy of the working dir, its workers elsewhere again.
    sets = tiny_overrides(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", name=name, **extra)
    return [arg for s in sets for arg in ("--set", s)]


def _run(uri: str, name: str):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id],
                              filter_string=f"tags.`{RUN_NAME_TAG}` = '{name}'")
    assert len(runs) == 1
    return client, runs[0]


def test_job_submit_trains_on_both_nodes(local_cluster, tmp_path):
    proc = local_cluster.submit(["jobs/train.py", "--config", "jobs/configs/quickstart.yaml", "--json",
                                 *_job_overrides(tmp_path, "cluster-job", **{"mlflow.register_model": "null"})])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "succeeded" in proc.stdout + proc.stderr
    summary = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith('{"run_name"')))

    # the checkpoint is in storage_path and loads; the MLflow run has every epoch once and finished
    ckpt = Path(summary["checkpoint"])
    assert ckpt.parent == tmp_path / "ray_results" / "cluster-job"
    assert read_state(ckpt)["epoch"] == 1
    model, _, cfg = load_model(ckpt)
    assert cfg.ray.num_workers == 2
    client, run = _run(f"sqlite:///{tmp_path / 'mlflow.db'}", "cluster-job")
    assert run.info.run_id == summary["run_id"] and run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_hv")) == [0, 1]
    assert "test_hv" in run.data.metrics

    # the two Ray Train workers ran on two different nodes (1 CPU each, 1 CPU per node)
    actors = json.loads(local_cluster.ray("list", "actors", "--filter", "class_name=RayTrainWorker", "--detail",
                                          "--format", "json").stdout)
    assert len({a["node_id"] for a in actors}) == 2


def _latest_checkpoint(run_dir: Path) -> str | None:
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    latest = snapshot.get("latest_checkpoint_result")
    return latest["checkpoint_dir_name"] if latest else None


def test_node_loss_fails_clearly_and_keeps_checkpoints(local_cluster, tmp_path):
    """Kill the worker node mid-run with ``ray.max_failures: 0``: the job fails with the reason in its logs and the
    MLflow run marked FAILED, and every checkpoint written so far loads.

    (With ``max_failures >= 1`` Ray Train instead retries the worker group start until capacity returns — the
    autoscaler's case; on this fixed 1+1 CPU cluster that is until the node is restarted.)
    Runs after the job test: it takes the worker node away for good.
    """
    run_dir = tmp_path / "ray_results" / "node-loss"
    submission_id = f"node-loss-{os.getpid()}"
    local_cluster.submit(["jobs/train.py", "--config", "jobs/configs/quickstart.yaml",
                          *_job_overrides(tmp_path, "node-loss", **{"train.epochs": 20, "ray.max_failures": 0})],
                         "--no-wait", "--submission-id", submission_id)
    jobs = local_cluster.jobs()
    deadline = time.monotonic() + 150
    while _latest_checkpoint(run_dir) is None:
        assert time.monotonic() < deadline and not jobs.get_job_status(submission_id).is_terminal(), \
            jobs.get_job_logs(submission_id)[-4000:]
        time.sleep(0.5)

    worker_pid = int((local_cluster.dir / "worker.pid").read_text())
    os.kill(worker_pid, 9)  # the node's `ray start --block` dies: its raylet and workers go with it

    lost_at = time.monotonic()
    while not (status := jobs.get_job_status(submission_id)).is_terminal():
        assert time.monotonic() < lost_at + 90, "the job neither finished nor failed after losing a node"
        time.sleep(1)
    info, logs = jobs.get_job_info(submission_id), jobs.get_job_logs(submission_id)
    print(f"node loss → {status} after {time.monotonic() - lost_at:.0f} s: {info.message}")
    if status == JobStatus.FAILED:
        assert "WorkerGroupError: Training failed due to worker errors" in logs, logs[-4000:]
        _, run = _run(f"sqlite:///{tmp_path / 'mlflow.db'}", "node-loss")
        assert run.info.status == "FAILED"
    else:
        assert status == JobStatus.SUCCEEDED, logs[-4000:]

    checkpoints = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    assert checkpoints and _latest_checkpoint(run_dir) in {c.name for c in checkpoints}
    for ckpt in checkpoints:
        load_model(ckpt)
        assert read_state(ckpt)["epoch"] >= 0
