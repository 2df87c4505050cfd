"""The README's own-model-and-data example (examples/wine.py) end to end: a 2-worker Ray Train run with a
model.factory and a data.factory through the CLI, `pareto-ray evaluate`, then the Serve app answering
/v1/predict for it — the same commands and app as the built-in datasets."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import REPO

from pareto_ray.checkpoint import read_dataset_spec
from pareto_ray.cli import main
from pareto_ray.fronts import read_front

pytestmark = pytest.mark.slow

PORT = 8139


def _last_json(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def wine_run(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wine")
    sets = {"train.epochs": 3, "ray.num_workers": 2, "ray.storage_path": str(tmp / "ray_results"),
            "mlflow.tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "name": "wine-e2e"}
    return tmp, [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def test_own_model_and_data_train_evaluate_and_serve(wine_run, capsys, monkeypatch):
    tmp, sets = wine_run
    monkeypatch.chdir(REPO)  # examples/ is imported from the working directory, as by a user in their project
    assert main(["train", "--config", "examples/wine.yaml", *sets, "--json"]) == 0
    out = _last_json(capsys)
    spec = read_dataset_spec(out["checkpoint"])
    assert [(t.name, t.kind) for t in spec.tasks] == [("cultivar", "classification"), ("rich", "binary"),
                                                      ("alcohol", "regression")]
    assert spec.input_shape == (11,)
    front = read_front(out["front"])
    assert {"acc_1", "acc_2", "loss_3", "mae_3"} <= set(front.column_names) and front.num_rows == 21
    assert 0 < out["test_hv"] <= 1 and out["test"]["loss_3_min"] > 0

    assert main(["evaluate", out["checkpoint"], "--split", "test", "--json"]) == 0
    again = _last_json(capsys)
    assert again["hv"] == pytest.approx(out["test_hv"], rel=1e-9)

    from ray import serve

    from pareto_ray.serving.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    try:
        serve.run(build_app({"model": out["checkpoint"], "num_replicas": 1, "ingress_replicas": 1, "num_cpus": 0.5}),
                  name="wine", route_prefix="/wine")
        rows = [[0.1] * 11, [-0.5] * 11]
        r = httpx.post(f"http://127.0.0.1:{PORT}/wine/v1/predict", json={"preference": [0.2, 0.3, 0.5], "inputs": rows},
                       timeout=60)
        assert r.status_code == 200, r.text
        predictions = r.json()["predictions"]
        assert len(predictions) == 3 and len(predictions[0]["classes"]) == 2
        assert len(predictions[0]["probabilities"][0]) == 3  # the cultivar task's 3 classes
        bad = httpx.post(f"http://127.0.0.1:{PORT}/wine/v1/predict", json={"preference": [0.2, 0.3, 0.5],
                                                                            "inputs": [[0.1] * 12]}, timeout=60)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "inputs"  # the checkpoint's input shape
    finally:
        serve.shutdown()
    assert Path(out["plot"]).is_file()
