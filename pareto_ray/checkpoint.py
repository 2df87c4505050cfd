"""Checkpoints: a directory with no pickle in it.

* ``model.safetensors`` — the preference model's state dict,
* ``optimizer.safetensors`` — optimizer tensors, its scalars in the metadata,
* ``config.json`` — the validated run config,
* ``dataset.json`` — the dataset's tasks and its input spec (kind, shape, dtype, normalization, a table's
  columns: ``pareto_ray.inputs_spec.InputSpec``), so the model can be rebuilt, served and its front scored
  without the data,
* ``state.json`` — epoch and the metrics reported with this checkpoint,
* ``front.parquet`` — the validation front at that epoch,
* ``samples.json`` — a handful of test-split inputs (as ``/v1/predict`` takes them) and their targets, for the
  front explorer's "try it",
* ``run.json`` — written after training: the MLflow run id and the test front's HV (the explorer's model card).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pareto_ray.config import Config
from pareto_ray.inputs_spec import InputSpec
from pareto_ray.methods import Method, build_model
from pareto_ray.models import PreferenceModel
from pareto_ray.splits import MultiTaskDataset, Split
from pareto_ray.tasks import Task, classification_tasks

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"
STATE_FILE = "state.json"
FRONT_FILE = "front.parquet"
SAMPLES_FILE = "samples.json"
RUN_FILE = "run.json"
#: At most this many samples, and this many input values in all, are stored in ``samples.json``.
MAX_SAMPLES, MAX_SAMPLE_VALUES = 6, 200_000


class CheckpointError(RuntimeError):
    """A checkpoint directory that is missing files or cannot be read."""


@dataclass
class DatasetSpec:
    """What a model needs to know of its data: the tasks and the inputs' shape, dtype and normalization."""

    tasks: list[Task]
    input: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.input["shape"])

    @property
    def input_spec(self) -> InputSpec:
        """The input spec, parsed (its kind inferred for checkpoints written before kinds existed)."""
        return InputSpec.from_dict(self.input)

    @classmethod
    def of(cls, data: MultiTaskDataset) -> DatasetSpec:
        return cls(list(data.tasks), data.train.input_spec())

    def to_json(self) -> str:
        return json.dumps({"tasks": [t.to_dict() for t in self.tasks], "input": self.input}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> DatasetSpec:
        d = json.loads(text)
        return cls([Task.from_dict(t) for t in d["tasks"]], d["input"])


def save_checkpoint(path: str | Path, model: PreferenceModel, cfg: Config, state: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None, front: pa.Table | None = None,
                    dataset: DatasetSpec | None = None, samples: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if samples is not None:
        (path / SAMPLES_FILE).write_text(json.dumps(samples))
    if dataset is not None:
        (path / DATASET_FILE).write_text(dataset.to_json())
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path / MODEL_FILE)
    if optimizer is not None:
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, path / OPTIMIZER_FILE, metadata={"json": json.dumps(meta)})
    (path / CONFIG_FILE).write_text(cfg.model_dump_json(indent=2))
    (path / STATE_FILE).write_text(json.dumps(state, indent=2))
    if front is not None:
        pq.write_table(front, path / FRONT_FILE)
    return path


def sample_set(split: Split, split_name: str = "test", n: int = MAX_SAMPLES) -> dict[str, Any]:
    """The first few samples of ``split``: inputs normalized as the model takes them (nested lists, the form of
    ``/v1/predict``), rounded to 5 decimals, and per-sample targets where a target is one value per task."""
    per_sample = max(1, int(torch.tensor(split.x.shape[1:]).prod()))
    k = max(1, min(n, len(split), MAX_SAMPLE_VALUES // per_sample))
    x = torch.round(split.inputs(index=slice(0, k)) * 1e5) / 1e5
    targets = [[float(y[i]) if y[i].is_floating_point() else int(y[i]) for y in split.targets]
               if all(y[i].numel() == 1 for y in split.targets) else None for i in range(k)]
    return {"split": split_name, "inputs": x.tolist(), "targets": targets}


def read_samples(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint's ``samples.json``, or None (a checkpoint written before samples were stored)."""
    file = Path(path) / SAMPLES_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{file} is not valid JSON: {exc}") from exc


def write_run_info(path: str | Path, info: dict[str, Any]) -> None:
    """``run.json``: what is known of the training run once it ended (MLflow run id, test HV)."""
    (Path(path) / RUN_FILE).write_text(json.dumps(info, indent=2))


def read_run_info(path: str | Path) -> dict[str, Any]:
    file = Path(path) / RUN_FILE
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except ValueError:
        return {}


def read_config(path: str | Path) -> Config:
    """The run config saved with a checkpoint; a file that is not one is a one-line ``CheckpointError``."""
    path = Path(path)
    _require(path, CONFIG_FILE)
    file = path / CONFIG_FILE
    try:
        return Config.model_validate_json(file.read_bytes())
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        if first["type"] == "json_invalid":
            raise CheckpointError(f"{file} is not valid JSON (truncated?): {first['msg']}") from None
        loc = ".".join(str(p) for p in first["loc"]) or "(config)"
        raise CheckpointError(f"{file} does not describe a pareto-ray run: {loc}: {first['msg']}{more}") from None


def read_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    _require(path, STATE_FILE)
    return json.loads((path / STATE_FILE).read_text())


def read_checkpoint_front(path: str | Path) -> pa.Table:
    """The validation front saved with a checkpoint."""
    path = Path(path)
    _require(path, FRONT_FILE)
    return pq.read_table(path / FRONT_FILE)


def read_dataset_spec(path: str | Path, cfg: Config | None = None) -> DatasetSpec:
    """The checkpoint's ``dataset.json``; a checkpoint written before tasks existed holds 10-way digits."""
    path = Path(path)
    if (path / DATASET_FILE).is_file():
        try:
            spec = DatasetSpec.from_json((path / DATASET_FILE).read_text())
            spec.input_spec  # noqa: B018 - parsed here, so a bad spec fails the load, not a request
            return spec
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path / DATASET_FILE} is not a readable dataset description: {exc}") from exc
    cfg = cfg or read_config(path)
    digits = Split(torch.zeros(1, 1, 28, 28, dtype=torch.uint8), [])
    return DatasetSpec(classification_tasks(cfg.data.num_tasks), digits.input_spec())


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[PreferenceModel, Method, Config]:
    """Rebuild the model a checkpoint was trained with and load its weights."""
    path = Path(path)
    cfg = read_config(path)
    spec = read_dataset_spec(path, cfg)
    method, model, _ = build_model(cfg.model, cfg.method, spec.tasks, spec.input_shape)
    load_weights(path, model)
    return model.to(device).eval(), method, cfg


def load_weights(path: str | Path, model: PreferenceModel) -> None:
    path = Path(path)
    _require(path, MODEL_FILE)
    try:
        state = load_file(path / MODEL_FILE)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path / MODEL_FILE} is not a readable safetensors file: {exc}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path / MODEL_FILE} does not match the model its config describes: {exc}") from exc


def load_optimizer(path: str | Path, optimizer: torch.optim.Optimizer) -> None:
    path = Path(path) / OPTIMIZER_FILE
    if not path.is_file():
        return
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["json"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta))


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def _require(path: Path, name: str) -> None:
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    if not (path / name).is_file():
        raise CheckpointError(f"checkpoint {path} has no {name}: it is not a pareto-ray checkpoint or is incomplete")
