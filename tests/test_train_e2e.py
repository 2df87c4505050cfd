"""End to end: `pareto-ray train` on Ray Train (2 workers) → MLflow → checkpoint → evaluate."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import tiny_overrides
from mlflow.tracking import MlflowClient

from pareto_ray import model_tracking
from pareto_ray.cli import main

pytestmark = pytest.mark.slow


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _train(argv: list[str], capsys) -> dict:
    assert main(["train", "--json", *argv]) == 0
    return _last_json(capsys)


def test_train_track_evaluate_and_resume(ray_session, tmp_path, mlflow_uri, capsys):
    sets = tiny_overrides(tmp_path, mlflow_uri, name="e2e", **{"mlflow.register_model": "e2e-model"})
    out = _train(["--config", "jobs/configs/quickstart.yaml", *sum((["--set", s] for s in sets), [])], capsys)
    for key in ("run_id", "checkpoint", "val_hv", "test_hv", "front"):
        assert key in out
    assert 0 < out["test_hv"] <= 1 and 0 < out["val_hv"] <= 1

    client = MlflowClient(mlflow_uri)
    history = client.get_metric_history(out["run_id"], "val_hv")
    assert sorted(m.step for m in history) == [0, 1]
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["method.name"] == "palora" and run.data.params["train.epochs"] == "2"
    assert run.data.metrics["test_hv"] == pytest.approx(out["test_hv"])
    artifacts = {a.path for a in client.list_artifacts(out["run_id"], "fronts")}
    assert {"fronts/test_front.parquet", "fronts/test_front.png", "fronts/val_front.parquet"} <= artifacts
    run_info = json.loads(Path(out["checkpoint"], "run.json").read_text())  # the front explorer's model card
    assert run_info["run_id"] == out["run_id"] and run_info["test_hv"] == pytest.approx(out["test_hv"])
    assert len(json.loads(Path(out["checkpoint"], "samples.json").read_text())["inputs"]) == 6
    version = MlflowClient(mlflow_uri, registry_uri=mlflow_uri).get_model_version("e2e-model", "1")
    assert version.run_id == out["run_id"] and "/models/m-" in version.source  # a logged MLflow model
    local, _ = model_tracking.download_model("models:/e2e-model/1", mlflow_uri, str(tmp_path / "registered"))
    assert (local / "model.safetensors").is_file() and (local / "config.json").is_file()
    assert (local.parents[1] / "MLmodel").is_file()  # <model>/artifacts/<checkpoint>: a pyfunc model
    assert (local / "samples.json").is_file() and (local / "run.json").is_file()  # the explorer's, wherever it loads

    # the checkpoint re-evaluates to the same front (val front stored at training time, test front from the run)
    front = pq.read_table(out["front"])
    assert len(front) == 11 and {"ray_1", "ray_2", "acc_1", "acc_2", "loss_1", "loss_2"} <= set(front.column_names)
    assert main(["evaluate", out["checkpoint"], "--split", "val", "--output", str(tmp_path / "ev"), "--json"]) == 0
    val = _last_json(capsys)
    stored = pq.read_table(out["checkpoint"] + "/front.parquet")
    assert _same(val["front"], stored)
    assert val["hv"] == pytest.approx(out["val_hv"], abs=1e-6)
    assert main(["evaluate", out["checkpoint"], "--output", str(tmp_path / "ev"), "--json"]) == 0
    assert _last_json(capsys)["hv"] == pytest.approx(out["test_hv"], abs=1e-6)

    # rerunning with the same name and one more epoch resumes: epoch 2 only, same MLflow run
    sets = tiny_overrides(tmp_path, mlflow_uri, name="e2e", **{"train.epochs": 3})
    again = _train(["--config", "jobs/configs/quickstart.yaml", *sum((["--set", s] for s in sets), [])], capsys)
    assert again["run_id"] == out["run_id"]
    assert sorted(m.step for m in client.get_metric_history(out["run_id"], "val_hv")) == [0, 1, 2]


def _same(path: str, stored) -> bool:
    got = pq.read_table(path)
    return all(got.column(c).to_pylist() == pytest.approx(stored.column(c).to_pylist(), abs=1e-6)
               for c in stored.column_names)
