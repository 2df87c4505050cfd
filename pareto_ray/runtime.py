"""The Ray runtime: connecting to (or starting) Ray, whether the cluster can hold a run, and the paths every
Ray process must agree on.

Ray workers run in their own working directories, possibly on other nodes,
so every relative path of a config is resolved once, on the driver, by
``resolve_paths`` before the config is handed to Ray.  ``ensure_resources``
checks a run's workers against the cluster's nodes before any trainer is
built: Ray Train would otherwise wait for them forever.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group

from pareto_ray.config import Config, ConfigError, RayConfig
from pareto_ray.data import cache_dir

#: How long a run waits for nodes to join a cluster it connected to (``ray.resources_timeout_s`` unset).
CLUSTER_RESOURCES_TIMEOUT_S = 900.0

#: GCS addresses of the Ray instances this process started: nothing adds nodes to them.
_started_here: set[str] = set()


class ResourceError(ConfigError):
    """The cluster cannot hold a run's workers, and no nodes joined in time (or none can)."""


class _DropNotice(logging.Filter):
    """Drops log records that start with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


#: Ray's notice, on every new local instance, that it turned token authentication on (its default, kept).
_TOKEN_NOTICE = ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled")


def init_ray(address: str | None = None, verbose: bool = False) -> None:
    """Connect to ``address`` (or the job's cluster), else start a local instance.

    A local instance gets no preemption watcher (no node of it is ever drained; Ray Train's watcher logs an error
    line on every run) and, unless ``verbose``, drops Ray's notice that token authentication is on.
    """
    if ray.is_initialized():
        return
    # Train V2 polls its controller through the dashboard; without one it logs a
    # warning every second. Keep that logger quiet when the dashboard is absent.
    logging.getLogger("ray.train.v2._internal.execution.controller.state_manager").setLevel(logging.ERROR)
    starts_local = address is None and not os.environ.get("RAY_ADDRESS")
    local = _local_dashboard() if starts_local else {}
    notice = logging.getLogger(_TOKEN_NOTICE[0])
    quiet = _DropNotice(_TOKEN_NOTICE[1])
    if starts_local:
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # Ray Train hands it to its controller
        if not verbose:
            notice.addFilter(quiet)
    try:
        ray.init(address=address, log_to_driver=True, configure_logging=True, logging_level=logging.WARNING, **local)
    finally:
        notice.removeFilter(quiet)
    if starts_local:
        _started_here.add(ray.get_runtime_context().gcs_address)


#: Where Ray Train (2.60) logs each report on every worker ("Reporting training result …" with the whole metrics
#: dict): a logger named by that module's file path, outside ``ray.train``, so ``RunConfig.logging_config`` misses it.
_WORKER_REPORT_LOGGER = os.path.join("train", "v2", "_internal", "execution", "context.py")


def quiet_worker_reports() -> None:
    """On a Ray Train worker: log Ray Train's per-report lines only at WARNING and above."""
    for name in list(logging.root.manager.loggerDict):
        if name.endswith(_WORKER_REPORT_LOGGER):
            logging.getLogger(name).setLevel(logging.WARNING)


def _local_dashboard() -> dict[str, Any]:
    """``ray.init`` arguments for a new local instance: its dashboard on a free port, made known to its workers.

    With several local Ray instances on one machine (parallel test sessions, two runs at once), Ray's state API
    cannot tell inside a worker which instance is its own.  Train V2's placement-group cleaner uses it when a
    controller dies (as when Tune stops a trial early); failing, it leaves the run's worker CPUs reserved and
    later runs wait for them forever.  ``RAY_API_SERVER_ADDRESS`` names the right instance.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"dashboard_host": "127.0.0.1", "dashboard_port": port,
            "runtime_env": {"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}}}


def storage_path(path: str) -> str:
    """Ray Train's storage: a URI (``s3://…``) as given, a local path made absolute."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def resolve_paths(cfg: Config) -> Config:
    """``cfg`` with its data folders, cache and storage made absolute, so any Ray process reads the same files."""
    data = cfg.data.model_copy(update={
        "root": cfg.data.root and str(Path(cfg.data.root).expanduser().resolve()),
        "cache_dir": str(cache_dir(cfg.data).expanduser().resolve()),
    })
    ray_cfg = cfg.ray.model_copy(update={"storage_path": storage_path(cfg.ray.storage_path)})
    return cfg.model_copy(update={"data": data, "ray": ray_cfg})


# --------------------------------------------------------------------------- resources


def worker_resources(ray_cfg: RayConfig) -> dict[str, float]:
    """What one Ray Train worker asks for: ``ray.cpus_per_worker`` CPUs, and one GPU with ``ray.use_gpu``."""
    return {"CPU": ray_cfg.cpus_per_worker, **({"GPU": 1.0} if ray_cfg.use_gpu else {})}


def _count(capacity: dict[str, float], bundle: dict[str, float]) -> int:
    return min(math.floor(capacity.get(k, 0.0) / v + 1e-9) for k, v in bundle.items() if v > 0)


def workers_that_fit(nodes: list[dict[str, float]], worker: dict[str, float], trial_cpus: float = 0.0) -> int:
    """How many ``worker`` bundles the ``nodes`` (their total resources) hold at once, each bundle on one node,
    beside one bundle of ``trial_cpus`` CPUs (a Tune trial's driver) when that is above 0."""
    if trial_cpus <= 0:
        return sum(_count(node, worker) for node in nodes)
    best = -1
    for i, node in enumerate(nodes):
        if node.get("CPU", 0.0) + 1e-9 >= trial_cpus:
            rest = [{**n, "CPU": n.get("CPU", 0.0) - trial_cpus} if j == i else n for j, n in enumerate(nodes)]
            best = max(best, sum(_count(n, worker) for n in rest))
    return max(best, 0)


def _alive_nodes() -> list[dict[str, float]]:
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def _amount(value: float) -> str:
    return f"{value:g}"


def describe_request(ray_cfg: RayConfig, trial_cpus: float = 0.0) -> str:
    """The workers a run asks for, naming the config fields: ``ray.num_workers=32 workers of ... each (...)``."""
    worker = worker_resources(ray_cfg)
    each = f"ray.cpus_per_worker={_amount(ray_cfg.cpus_per_worker)} CPU" + (" and 1 GPU (ray.use_gpu)"
                                                                            if "GPU" in worker else "")
    total = {k: v * ray_cfg.num_workers for k, v in worker.items()}
    if trial_cpus > 0:
        total["CPU"] += trial_cpus
    totals = " and ".join(f"{_amount(v)} {k}s" for k, v in total.items())
    trial = f", plus tune.trial_cpus={_amount(trial_cpus)} CPU for the trial," if trial_cpus > 0 else ""
    return f"ray.num_workers={ray_cfg.num_workers} workers of {each} each{trial} ({totals} at once)"


def room_for_data(ray_cfg: RayConfig) -> RayConfig:
    """A streamed run's workers, leaving ``ray.data_cpus`` of the cluster's CPUs to Ray Data's read and decode tasks
    (without them the stream waits for ever).

    When the CPUs there are now cannot hold both and ``ray.cpus_per_worker`` was not set, each worker asks for
    less (a 2-CPU machine, 2 workers: 0.5 CPU each, torch's threads are not limited by it); a value that was
    set raises ``ResourceError`` naming the fields.
    """
    if ray_cfg.data_cpus <= 0:
        return ray_cfg
    cpus = sum(n.get("CPU", 0.0) for n in _alive_nodes())
    if ray_cfg.num_workers * ray_cfg.cpus_per_worker + ray_cfg.data_cpus <= cpus + 1e-9:
        return ray_cfg
    share = math.floor((cpus - ray_cfg.data_cpus) / ray_cfg.num_workers * 100) / 100
    if "cpus_per_worker" in ray_cfg.model_fields_set or share <= 0:
        raise ResourceError(
            f"streamed training data (data.streaming) needs ray.data_cpus={_amount(ray_cfg.data_cpus)} CPU free beside "
            f"{describe_request(ray_cfg)}, and the cluster has {_amount(cpus)} CPUs: lower ray.cpus_per_worker or "
            f"ray.num_workers, or set data.streaming=false")
    print(f"data.streaming: each of the {ray_cfg.num_workers} workers asks for {_amount(share)} CPU, leaving "
          f"ray.data_cpus={_amount(ray_cfg.data_cpus)} of the cluster's {_amount(cpus)} CPUs to Ray Data",
          file=sys.stderr, flush=True)
    return ray_cfg.model_copy(update={"cpus_per_worker": share})


def describe_cluster(nodes: list[dict[str, float]]) -> str:
    """``2 CPUs and 0 GPUs on 1 node (the largest: 2 CPUs, 0 GPUs)``."""
    cpus, gpus = sum(n.get("CPU", 0.0) for n in nodes), sum(n.get("GPU", 0.0) for n in nodes)
    largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    plural = "node" if len(nodes) == 1 else "nodes"
    return (f"{_amount(cpus)} CPUs and {_amount(gpus)} GPUs on {len(nodes)} {plural} (the largest: "
            f"{_amount(largest.get('CPU', 0.0))} CPUs, {_amount(largest.get('GPU', 0.0))} GPUs)")


def resources_timeout(ray_cfg: RayConfig) -> float:
    """``ray.resources_timeout_s``, else 0 on a Ray instance this process started and 900 s on a cluster."""
    if ray_cfg.resources_timeout_s is not None:
        return ray_cfg.resources_timeout_s
    return 0.0 if ray.get_runtime_context().gcs_address in _started_here else CLUSTER_RESOURCES_TIMEOUT_S


def ensure_resources(ray_cfg: RayConfig, trial_cpus: float = 0.0) -> None:
    """Return once the cluster's nodes can hold the run's ``ray.num_workers`` workers (and a Tune trial's driver of
    ``trial_cpus``) at once, or raise ``ResourceError`` naming the fields and what the cluster has.

    Resources other runs hold now do not count against the request: those runs end and Ray Train waits for them.
    Missing nodes do: on a cluster the run waits up to ``ray.resources_timeout_s`` for some to join, asking for
    them with a placement group of the run's bundles, which is what an autoscaler scales up for; nothing joins a
    local instance the run started, so there it fails at once.
    """
    worker = worker_resources(ray_cfg)
    nodes = _alive_nodes()
    if workers_that_fit(nodes, worker, trial_cpus) >= ray_cfg.num_workers:
        return
    request = describe_request(ray_cfg, trial_cpus)
    timeout = resources_timeout(ray_cfg)
    if timeout > 0:
        print(f"waiting up to {timeout:g} s (ray.resources_timeout_s) for nodes to join: the run needs {request}; "
              f"the cluster has {describe_cluster(nodes)}", file=sys.stderr, flush=True)
        bundles = [dict(worker) for _ in range(ray_cfg.num_workers)] + ([{"CPU": trial_cpus}] if trial_cpus > 0 else [])
        group = placement_group(bundles, strategy="PACK")
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                # ready, or the nodes that joined hold the workers while other runs still use them
                if group.wait(timeout_seconds=min(5.0, left)) or workers_that_fit(
                        _alive_nodes(), worker, trial_cpus) >= ray_cfg.num_workers:
                    return
        finally:
            remove_placement_group(group)
        why = f"no nodes that hold them joined within ray.resources_timeout_s={timeout:g} s"
    else:
        why = "nothing adds nodes to a local Ray instance the run started itself"
    fit = workers_that_fit(_alive_nodes(), worker, trial_cpus)
    raise ResourceError(
        f"the run needs {request}, but the Ray cluster has {describe_cluster(_alive_nodes())}: {fit} such "
        f"worker{'' if fit == 1 else 's'} fit, and {why}. Lower ray.num_workers or ray.cpus_per_worker"
        f"{' (or set ray.use_gpu=false)' if 'GPU' in worker else ''}, or run on a larger cluster (ray.address); "
        f"on a cluster that grows, ray.resources_timeout_s sets how long to wait")
