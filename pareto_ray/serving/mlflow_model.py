"""The MLflow pyfunc adapter: a logged pareto-ray model answers ``predict`` as ``/v1/predict`` does.

``model_tracking.log_model`` logs this file as the model's code (MLflow's *models
from code*: MLflow runs the file when the model is loaded, so no Python
object is pickled) and the checkpoint folder as its artifact
``checkpoint`` (weights from ``model.safetensors`` only)::

    model = mlflow.pyfunc.load_model("models:/NAME/latest")
    model.predict(pd.DataFrame({"image": [base64_png]}), params={"preference": [0.2, 0.8]})
    model.predict(rows_dataframe, params={"preference": [...], "top_k": 3})      # tabular: one column each
    model.predict(np.zeros((4, 1, 28, 28), np.float32), params={"preference": [...]})  # model inputs

The answer is ``/v1/predict``'s JSON body (``preference``, ``predictions``
per task, ``forward``, ``batch_size``), from the same ``Engine``: the same
validation (λ, inputs), decoding and encoding, and per-task presentation.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from pareto_ray.serving.engine import Engine
from pareto_ray.serving.inputs import parse_array
from pareto_ray.serving.loading import load_served_model
from pareto_ray.serving.predictors import BatchItem
from pareto_ray.serving.schemas import OutputOptions, PredictRequest, ServeSettings


class ParetoFrontModel(PythonModel):
    """A pareto-ray checkpoint behind MLflow's pyfunc interface; λ is the inference parameter ``preference``."""

    def load_context(self, context: Any) -> None:
        self.engine = Engine(load_served_model(context.artifacts["checkpoint"]), ServeSettings(max_inputs=65_536))

    # model_input has no type hint: MLflow would read one as a schema of its own (the signature is the schema)
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> dict[str, Any]:  # noqa: ANN001
        return predict(self.engine, model_input, params)


def predict(engine: Engine, model_input: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """``/v1/predict``'s answer for pyfunc inputs (see the module docstring); a bad input raises ``RequestError``."""
    params = dict(params or {})
    t = engine.num_tasks
    pref = params.get("preference")
    pref = [1.0 / t] * t if pref is None else [float(v) for v in np.asarray(pref, dtype=np.float64).ravel()]
    top_k = int(params.get("top_k") or 0)
    output = OutputOptions(top_k=top_k or None, areas=bool(params.get("areas", False)))
    spec = engine.frontend.spec
    if isinstance(model_input, pd.DataFrame):
        if spec.kind == "image":
            request = PredictRequest(preference=pref, images=[_text(v) for v in model_input["image"]], output=output)
        else:
            rows = [{k: _native(v) for k, v in row.items()} for row in model_input.to_dict("records")]
            request = PredictRequest(preference=pref, rows=rows, output=output)
        return engine.predict(request).model_dump(mode="json", exclude_none=True, by_alias=True)
    x = parse_array(np.asarray(model_input), tuple(spec.shape), engine.settings.max_inputs, "inputs")
    item = BatchItem(x, engine.frontend.preference(pref), output)
    return engine.response(item, engine.run_batch([item])[0]).model_dump(mode="json", exclude_none=True, by_alias=True)


def _text(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _native(value: Any) -> Any:
    """pandas' cell → a JSON-like value (NaN → None: a missing number)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


if __name__ != "pareto_ray.serving.mlflow_model":  # run by MLflow as the model's code, not imported as a module
    mlflow.models.set_model(ParetoFrontModel())
