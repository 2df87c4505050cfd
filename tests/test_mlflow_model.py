"""The logged model is an MLflow pyfunc model (a real local sqlite store): signature, input example, λ as an
inference parameter, answers equal to the server's, and the registry version still servable."""

from __future__ import annotations

import base64
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from test_serving_core import write_checkpoint
from tolerance import assert_close

from pareto_ray import model_tracking, tracking
from pareto_ray.inputs_spec import encode_png
from pareto_ray.serving.engine import Engine
from pareto_ray.serving.inputs import INPUT_SHAPE
from pareto_ray.serving.loading import load_served_model
from pareto_ray.serving.schemas import PredictRequest, ServeSettings

pytestmark = pytest.mark.slow


def images(n: int) -> list[str]:
    rng = np.random.default_rng(3)
    return [base64.b64encode(encode_png(rng.integers(0, 256, INPUT_SHAPE, dtype=np.uint8))).decode() for _ in range(n)]


def probabilities(answer: dict) -> list[torch.Tensor]:
    return [torch.tensor(p["probabilities"]) for p in answer["predictions"]]


def test_pyfunc_model_answers_as_the_server(tmp_path, mlflow_uri):
    checkpoint = write_checkpoint(tmp_path / "checkpoint")
    run_id, _ = tracking.start_run(mlflow_uri, "pyfunc-test", "run", {})
    model_uri = model_tracking.log_model(mlflow_uri, run_id, checkpoint)
    version = model_tracking.register_model(mlflow_uri, run_id, "pyfunc-test", model_uri=model_uri)
    tracking.end_run(mlflow_uri, run_id)

    mlflow.set_tracking_uri(mlflow_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/pyfunc-test/{version}")
    finally:
        mlflow.set_tracking_uri(None)
    signature = model.metadata.signature
    assert signature.inputs.input_names() == ["image"]
    assert {p.name for p in signature.params.params} == {"preference", "top_k", "areas"}
    assert model.metadata.saved_input_example_info is not None
    files = {f.path for f in MlflowClient(mlflow_uri).list_artifacts(run_id)}
    assert not any(p.endswith((".pkl", ".pickle")) for p in files)

    x = images(3)
    pref = [0.2, 0.8]
    got = model.predict(pd.DataFrame({"image": x}), params={"preference": pref, "top_k": 2})
    engine = Engine(load_served_model(str(checkpoint)), ServeSettings())
    want = engine.predict(PredictRequest.model_validate({"preference": pref, "images": x, "output": {"top_k": 2}}))
    want = json.loads(want.model_dump_json(exclude_none=True, by_alias=True))
    assert got["preference"] == pref and [p["kind"] for p in got["predictions"]] == ["classification"] * 2
    for a, b in zip(probabilities(got), probabilities(want)):
        assert_close(a, b)
    assert got["predictions"][0]["top_k"][0][0]["class"] == want["predictions"][0]["top_k"][0][0]["class"]
    other = model.predict(pd.DataFrame({"image": x}), params={"preference": [0.9, 0.1]})
    assert not torch.allclose(probabilities(other)[0], probabilities(got)[0])  # λ is really a parameter

    # `pareto-ray serve --model models:/NAME/VERSION` downloads it and serves the checkpoint inside
    path, label = model_tracking.download_model(f"models:/pyfunc-test/{version}", mlflow_uri, str(tmp_path / "dl"))
    assert label == f"pyfunc-test/{version}" and (path / "model.safetensors").is_file()
    served = load_served_model(str(path))
    assert served.weights_sha256 == engine.served.weights_sha256
