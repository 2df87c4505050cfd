"""Loading what a deployment serves: a checkpoint folder, or a model in MLflow's registry."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch
from pydantic import ValidationError

from pareto_ray.checkpoint import (
    CheckpointError,
    DatasetSpec,
    load_model,
    read_checkpoint_front,
    read_dataset_spec,
    read_run_info,
    read_samples,
    read_state,
)
from pareto_ray.config import Config
from pareto_ray.model_tracking import MLFLOW_SCHEMES, ModelSourceError, download_model
from pareto_ray.models import PreferenceModel


@dataclass
class ServedModel:
    model: PreferenceModel
    cfg: Config
    method: str
    preference_conditioned: bool
    front: pa.Table | None
    source: str
    version: str
    weights_sha256: str
    epoch: int | None
    num_classes: int
    dataset: DatasetSpec
    samples: dict | None = None  # samples.json: the explorer's "try it"
    run: dict | None = None  # run.json: MLflow run id, test HV


def load_served_model(source: str, tracking_uri: str | None = None) -> ServedModel:
    """Load what a deployment serves; any problem is a ``CheckpointError`` naming the cause.

    ``source`` is a checkpoint directory, or an MLflow URI (``models:/<name>/<version>``,
    ``models:/<name>/latest``, ``models:/<name>@<alias>``, ``runs:/<run_id>/model``),
    downloaded to a temporary folder that is removed once the model is in memory.
    """
    if source.startswith(MLFLOW_SCHEMES):
        with tempfile.TemporaryDirectory(prefix="pareto-ray-serve-") as tmp:
            try:
                path, version = download_model(source, tracking_uri, tmp)
            except ModelSourceError as exc:
                raise CheckpointError(str(exc)) from exc
            return _load(path, source, version)
    path = Path(source).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path} (expected a `pareto-ray train` checkpoint "
                              f"or models:/<name>/<version>)")
    return _load(path.resolve(), source, "checkpoint")


def _load(path: Path, source: str, version: str) -> ServedModel:
    try:
        model, method, cfg = load_model(path)
    except (ValidationError, ValueError) as exc:
        raise CheckpointError(f"{path}/config.json does not describe a pareto-ray run: {exc}") from exc
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CheckpointError(f"{path}/model.safetensors holds non-finite weights (NaN/Inf) in {bad[0]}{more}")
    sha = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    front = None
    if (path / "front.parquet").is_file():
        try:
            front = read_checkpoint_front(path)
        except (OSError, pa.ArrowException) as exc:
            raise CheckpointError(f"{path}/front.parquet is not readable Parquet: {exc}") from exc
    try:
        epoch = int(read_state(path)["epoch"])
    except (CheckpointError, ValueError, KeyError, TypeError):
        epoch = None
    spec = read_dataset_spec(path, cfg)
    with torch.inference_mode():  # the model runs on an input of its shape, with one output per task
        t = model.num_tasks
        outputs = model.forward_ray(torch.zeros(1, *spec.input_shape), torch.full((t,), 1.0 / t))
    if len(outputs) != len(spec.tasks):
        raise CheckpointError(f"{path}/dataset.json declares {len(spec.tasks)} tasks, the model has {len(outputs)} heads")
    num_classes = spec.tasks[0].outputs if spec.tasks else outputs[0].shape[-1]
    return ServedModel(model=model, cfg=cfg, method=cfg.method.name, preference_conditioned=method.preference_conditioned,
                       front=front, source=source, version=version, weights_sha256=sha, epoch=epoch,
                       num_classes=int(num_classes), dataset=spec, samples=read_samples(path), run=read_run_info(path))
