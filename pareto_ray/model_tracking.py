"""The trained model as an MLflow model: logged, registered and downloaded.

The trained model is logged as an MLflow pyfunc model (``log_model``): the
checkpoint folder as its artifact (safetensors, no pickle), the adapter
``pareto_ray/serving/mlflow_model.py`` as its code (MLflow's models from
code: the file is run when the model is loaded, so nothing is pickled), the
pareto-ray package as its requirement, a signature from the checkpoint's
input spec with λ as an inference parameter.  Model sources in the registry
(``models:/…``, ``runs:/…``) are resolved and downloaded here too.  The runs
themselves are ``tracking``'s.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from pareto_ray import __version__
from pareto_ray.checkpoint import DatasetSpec, read_dataset_spec
from pareto_ray.inputs_spec import InputSpec, encode_png
from pareto_ray.tracking import resolve_tracking_uri

#: The pyfunc adapter MLflow runs to load a logged model (models from code; never imported from here).
PYFUNC_CODE = Path(__file__).resolve().parent / "serving" / "mlflow_model.py"
#: Where the checkpoint folder lies inside a logged pyfunc model (``<model>/artifacts/checkpoint``).
CHECKPOINT_ARTIFACT = "checkpoint"


def register_model(uri: str, run_id: str, name: str, artifact_path: str = "model", model_uri: str | None = None) -> int:
    """Register a new version of ``name``: the logged model ``model_uri`` (``models:/m-…``, from ``log_model``),
    else the run's artifact folder ``<artifact_path>``."""
    client = MlflowClient(uri, registry_uri=uri)
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # already registered
    if model_uri is not None:
        model_id = model_uri.removeprefix("models:/")
        source = client.get_logged_model(model_id).artifact_location  # not models:/…: resolved here, in this store
        version = client.create_model_version(name, source, run_id=run_id, model_id=model_id)
    else:
        source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        version = client.create_model_version(name, source, run_id=run_id)
    return int(version.version)


#: MLflow's fluent API keeps one tracking URI per process: concurrent runs of one driver (Pareto MTL's K subproblems
#: finish in threads) take turns, or one restores the URI while another still logs into it.
_FLUENT = threading.Lock()


@contextmanager
def _active_run(uri: str, run_id: str) -> Iterator[None]:
    """MLflow's fluent API on ``run_id`` in the store ``uri`` (the process-wide tracking URI restored after), one
    thread at a time."""
    with _FLUENT:
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            with mlflow.start_run(run_id=run_id):
                yield
        finally:
            mlflow.set_tracking_uri(previous)


def pyfunc_signature(spec: DatasetSpec) -> tuple[ModelSignature, Any]:
    """(signature, input example) of the pyfunc model for a checkpoint's input spec.

    Inputs: image models a column ``image`` of base64 PNG/JPEG strings; tabular models one column per input
    column (numbers double, categories string, booleans boolean); others a float32 tensor ``[-1, *shape]`` of
    model inputs.  Parameters: ``preference`` (λ, default the simplex centre), ``top_k``, ``areas``.
    """
    t = len(spec.tasks)
    params = ParamSchema([ParamSpec("preference", "double", [1.0 / t] * t, (-1,)), ParamSpec("top_k", "long", 0),
                          ParamSpec("areas", "boolean", False)])
    inp: InputSpec = spec.input_spec
    if inp.kind == "image":
        gray = np.full(inp.shape, 128, dtype=np.uint8)
        example: Any = pd.DataFrame({"image": [base64.b64encode(encode_png(gray)).decode("ascii")]})
        schema = Schema([ColSpec("string", "image")])
    elif inp.kind == "tabular" and inp.encoder is not None:
        kinds = {"number": "double", "category": "string", "boolean": "boolean"}
        schema = Schema([ColSpec(kinds[c.type], c.name, required=not c.nullable) for c in inp.encoder.columns])
        row = {c.name: (c.mean if c.type == "number" else c.categories[0] if c.type == "category" else False)
               for c in inp.encoder.columns}
        example = pd.DataFrame([row])
    else:
        schema = Schema([TensorSpec(np.dtype(np.float32), (-1, *inp.shape))])
        example = np.zeros((1, *inp.shape), dtype=np.float32)
    return ModelSignature(inputs=schema, params=params), (example, {"preference": [1.0 / t] * t})


def _drop_type_hint_advice(show: Any) -> Any:
    """``warnings.showwarning`` without MLflow's advice to type-hint ``predict`` (our model has no hint on purpose:
    MLflow would read it as a second schema).  MLflow shows that advice under its own ``simplefilter("once")``,
    which overrides an ``ignore`` filter around the call, so it is dropped here; every other warning is shown."""
    def showwarning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if "Add type hints to the `predict` method" not in str(message):
            show(message, category, *args, **kwargs)

    return showwarning


def log_model(uri: str, run_id: str, checkpoint: str | Path, name: str = "model") -> str:
    """Log the checkpoint as an MLflow pyfunc model of run ``run_id`` → its URI (``models:/m-…``).

    ``mlflow.pyfunc.load_model(uri).predict(x, params={"preference": [...]})`` answers as ``/v1/predict`` does.
    MLflow checks the input example by loading the model and predicting once.
    """
    checkpoint = Path(checkpoint)
    signature, example = pyfunc_signature(read_dataset_spec(checkpoint))
    # MLflow's input-example check prints INFO lines, a type-hint warning and a download progress bar: quiet them
    # so a training run's output stays its own (tests/test_progress.py).
    quiet = logging.getLogger("mlflow")
    level = quiet.level
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with _active_run(uri, run_id), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.showwarning = _drop_type_hint_advice(warnings.showwarning)  # restored by catch_warnings
        quiet.setLevel(logging.WARNING)
        try:
            info = mlflow.pyfunc.log_model(
                name=name, python_model=str(PYFUNC_CODE), artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
                signature=signature, input_example=example, pip_requirements=[f"pareto-ray=={__version__}"])
        finally:
            quiet.setLevel(level)
    return info.model_uri


#: Model sources that name a model in MLflow rather than a folder.
MLFLOW_SCHEMES = ("models:/", "runs:/")


class ModelSourceError(RuntimeError):
    """A ``models:/`` or ``runs:/`` source that cannot be resolved or downloaded."""


def download_model(source: str, tracking_uri: str | None, dst: str) -> tuple[Path, str]:
    """Download an MLflow model URI into ``dst`` → (local checkpoint directory, version label).

    ``models:/<name>/<version>``, ``models:/<name>/latest``, ``models:/<name>@<alias>`` (the registry is the
    tracking store, as ``register_model`` uses it) or ``runs:/<run_id>/model`` (version label ``run``).
    """
    uri = resolve_tracking_uri(tracking_uri)
    try:
        if source.startswith("models:/"):
            version, artifact_uri = registry_version(source, uri)
        else:
            version, artifact_uri = "run", _run_model_uri(source, uri)
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, tracking_uri=uri, dst_path=dst))
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; all mean "cannot resolve"
        raise ModelSourceError(f"cannot fetch model {source} from MLflow at {uri}: {exc}") from exc
    return pyfunc_checkpoint(path), version


def pyfunc_checkpoint(path: Path) -> Path:
    """The checkpoint folder inside a downloaded pyfunc model (its ``MLmodel`` names the artifact's path); a
    folder without ``MLmodel`` (a model registered as plain artifacts, before pyfunc models) is the checkpoint."""
    if not (path / "MLmodel").is_file():
        return path
    flavor = mlflow.models.Model.load(str(path)).flavors.get("python_function", {})
    artifact = (flavor.get("artifacts") or {}).get(CHECKPOINT_ARTIFACT)
    if not artifact:
        raise ModelSourceError(f"{path} is an MLflow model without a {CHECKPOINT_ARTIFACT!r} artifact: not a "
                               f"pareto-ray model")
    return path / artifact["path"]


def _run_model_uri(source: str, tracking_uri: str) -> str:
    """A ``runs:/<run_id>/<name>`` source: the run's logged model of that name, else its artifact folder."""
    run_id, _, name = source.removeprefix("runs:/").partition("/")
    client = MlflowClient(tracking_uri)
    experiment = client.get_run(run_id).info.experiment_id
    for model in client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'"):
        if model.name == (name or "model"):
            return model.artifact_location
    return source


def registry_version(source: str, tracking_uri: str) -> tuple[str, str]:
    """(``<name>/<version>``, artifact URI) of a ``models:/`` URI; ``latest`` and ``@alias`` resolved."""
    ref = source.removeprefix("models:/").rstrip("/")
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = ref.rpartition("/")
        if version == "latest":
            version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return f"{name}/{version}", client.get_model_version_download_uri(name, str(version))
