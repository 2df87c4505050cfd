"""The Ray runtime: connecting to (or starting) Ray, and the paths every Ray process must agree on.

Ray workers run in their own working directories, possibly on other nodes,
so every relative path of a config is resolved once, on the driver, by
``resolve_paths`` before the config is handed to Ray.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import ray

from pareto_ray.config import Config
from pareto_ray.data import cache_dir


def init_ray(address: str | None = None) -> None:
    """Connect to ``address`` (or the job's cluster), else start a local instance."""
    if ray.is_initialized():
        return
    # Train V2 polls its controller through the dashboard; without one it logs a
    # warning every second. Keep that logger quiet when the dashboard is absent.
    logging.getLogger("ray.train.v2._internal.execution.controller.state_manager").setLevel(logging.ERROR)
    local = _local_dashboard() if address is None and not os.environ.get("RAY_ADDRESS") else {}
    ray.init(address=address, log_to_driver=True, configure_logging=True, logging_level=logging.WARNING, **local)


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
