"""A run's workers against the cluster: an impossible request fails at once, naming the fields and the cluster."""

import time

import pytest
from conftest import tiny_overrides

from pareto_ray.cli import main
from pareto_ray.config import RayConfig
from pareto_ray.runtime import ResourceError, ensure_resources, workers_that_fit


def test_workers_that_fit_counts_bundles_per_node():
    nodes = [{"CPU": 2.0}, {"CPU": 3.0, "GPU": 1.0}, {"CPU": 0.0}]  # e.g. a head with num-cpus 0
    assert workers_that_fit(nodes, {"CPU": 1.0}) == 5
    assert workers_that_fit(nodes, {"CPU": 2.0}) == 2  # 2 CPUs on each of the first two nodes, never split
    assert workers_that_fit(nodes, {"CPU": 4.0}) == 0  # 5 CPUs in all, but no node holds 4
    assert workers_that_fit(nodes, {"CPU": 1.0, "GPU": 1.0}) == 1
    # a Tune trial's driver takes its share of one node: two 0.99-CPU workers and a 0.01-CPU driver fit on 2 CPUs
    assert workers_that_fit([{"CPU": 2.0}], {"CPU": 0.99}, trial_cpus=0.01) == 2
    assert workers_that_fit([{"CPU": 2.0}], {"CPU": 1.0}, trial_cpus=0.01) == 1
    assert workers_that_fit([{"CPU": 0.0}], {"CPU": 1.0}, trial_cpus=0.01) == 0


def _cpus(ray) -> int:
    return int(sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]))


def test_too_many_workers_fail_at_once_naming_the_fields_and_the_cluster(ray_session, tmp_path, mlflow_uri, capsys):
    cpus = _cpus(ray_session)
    sets = tiny_overrides(tmp_path, mlflow_uri, **{"ray.num_workers": 32, "train.batch_size": 64})
    start = time.monotonic()
    assert main(["train", "--config", "jobs/configs/quickstart.yaml", *sum((["--set", s] for s in sets), [])]) == 2
    assert time.monotonic() - start < 30  # before the check, Ray Train waited for 32 CPUs forever
    out = " ".join(capsys.readouterr().out.split())  # rich wraps the message at 80 columns
    assert "ray.num_workers=32" in out and "ray.cpus_per_worker=1" in out, out
    assert f"{cpus} CPUs and 0 GPUs on 1 node" in out and f"{cpus} such workers fit" in out, out
    assert "local Ray instance" in out
    assert not (tmp_path / "mlflow.db").exists()  # nothing started: no MLflow run was opened


def test_gpu_request_on_a_cluster_without_gpus(ray_session):
    with pytest.raises(ResourceError, match=r"ray\.use_gpu.*0 GPUs on 1 node.*0 such workers fit"):
        ensure_resources(RayConfig(num_workers=1, use_gpu=True))


def test_worker_larger_than_any_node(ray_session):
    cpus = _cpus(ray_session)
    with pytest.raises(ResourceError, match=rf"ray\.cpus_per_worker={cpus + 1} CPU.*the largest: {cpus} CPUs"):
        ensure_resources(RayConfig(num_workers=1, cpus_per_worker=cpus + 1))


def test_waiting_for_nodes_is_bounded_by_resources_timeout(ray_session):
    before = set(ray_session.util.placement_group_table())
    start = time.monotonic()
    with pytest.raises(ResourceError, match=r"no nodes that hold them joined within ray\.resources_timeout_s=1 s"):
        ensure_resources(RayConfig(num_workers=64, resources_timeout_s=1))
    assert 1 <= time.monotonic() - start < 20
    waited_with = {k: v for k, v in ray_session.util.placement_group_table().items() if k not in before}
    assert len(waited_with) == 1 and next(iter(waited_with.values()))["state"] == "REMOVED"  # asked, then withdrawn


def test_a_request_that_fits_returns_at_once(ray_session):
    start = time.monotonic()
    ensure_resources(RayConfig(num_workers=1, cpus_per_worker=0.5, resources_timeout_s=600))
    assert time.monotonic() - start < 5
