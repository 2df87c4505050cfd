"""Shared fixtures: one Ray instance per test session, a fresh MLflow store per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Parquet caches built by the tests live in a session temp folder."""
    cache = tmp_path_factory.mktemp("pareto-ray-cache")
    os.environ["PARETO_RAY_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every test that needs one."""
    import ray

    from pareto_ray.runtime import init_ray

    init_ray()
    yield ray
    ray.shutdown()


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def tiny_overrides(tmp_path: Path, mlflow_uri: str, **extra: object) -> list[str]:
    """Config overrides for a fast MultiDigits run inside a test."""
    base = {
        "data.dataset": "multidigits", "data.max_train": 512, "data.max_eval": 128,
        "train.epochs": 2, "train.batch_size": 64, "ray.num_workers": 2,
        "ray.storage_path": str(tmp_path / "ray_results"), "mlflow.tracking_uri": mlflow_uri,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
