"""The Ray Serve deployment over real HTTP on localhost (port 8137).

One trained checkpoint (PaLoRA on MultiDigits, a few epochs of the shared
loop, no Ray Train) is served from its directory through ``serve run`` on
serve/config.yaml (the real CLI); a second application, deployed with
``serve.run``, serves the same model from an MLflow registry URI (an MLflow
pyfunc model, as training logs it) with bearer-token auth on (the token in a
file).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_serving_io import corruptions  # the fuzz cases, sent over HTTP here
from tolerance import assert_close

from pareto_ray import model_tracking, tracking
from pareto_ray.checkpoint import CheckpointError, save_checkpoint
from pareto_ray.config import load_config
from pareto_ray.data import load_dataset
from pareto_ray.fronts import evaluate_front
from pareto_ray.inputs_spec import encode_png
from pareto_ray.loop import build_optimizer, train_epoch
from pareto_ray.methods import build_model
from pareto_ray.preferences import simplex_grid
from pareto_ray.serving.app import build_app
from pareto_ray.serving.schemas import TOKEN_ENV

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

PORT = 8137
URL = f"http://127.0.0.1:{PORT}"
TOKEN = "test-token-7f3a"
SETTINGS = {"max_batch_size": 16, "batch_wait_timeout_s": 0.05, "max_inputs": 128, "max_body_bytes": 4 * 2**20,
            "body_timeout_s": 2.0}
#: The model deployment's max_ongoing_requests here (≥ max_batch_size); the slow-client test opens more sockets.
MODEL_SLOTS = 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real checkpoint: PaLoRA-MLP trained 2 epochs on MultiDigits, enough for λ to matter."""
    cfg = load_config(None, ["data.dataset=multidigits", "data.max_train=1024", "data.max_eval=256",
                             "model.backbone=mlp", "method.alpha=4", "train.lr=0.003", "train.epochs=2",
                             "train.batch_size=64", "ray.num_workers=1"])
    torch.manual_seed(0)
    data = load_dataset(cfg.data)
    method, model, _ = build_model(cfg.model, cfg.method, data.num_tasks)
    optimizer = build_optimizer(model, "adam", cfg.train.lr)
    for epoch in range(cfg.train.epochs):
        train_epoch(model, method, optimizer, data.train, epoch, cfg.train.epochs, cfg.train.batch_size, cfg.seed)
    front = evaluate_front(model, data.val, simplex_grid(2))
    path = save_checkpoint(tmp_path_factory.mktemp("serve") / "checkpoint", model, cfg,
                           {"epoch": cfg.train.epochs - 1, "metrics": {}}, front=front)
    return path, model.eval(), data.test


def deploy_config(tmp: Path, checkpoint: Path, **settings) -> None:
    """``serve run --non-blocking`` on serve/config.yaml, pointed at ``checkpoint`` (the real CLI and config path).

    One replica of each deployment, the model's with half a CPU (the test machine has two), instead of
    autoscaling; the model deployment with ``MODEL_SLOTS`` slots.
    """
    import ray
    from ray import serve

    raw = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    raw["http_options"]["port"] = PORT
    (app,) = raw["applications"]
    app["args"] = {"model": str(checkpoint), "num_cpus": 0.5}
    ingress, model = (next(d for d in app["deployments"] if d["name"] == name)
                      for name in ("ParetoFrontIngress", "ParetoFrontServer"))
    model.pop("autoscaling_config")
    model["ray_actor_options"]["num_cpus"] = 0.5
    model["max_ongoing_requests"] = MODEL_SLOTS
    for deployment in (ingress, model):
        deployment["num_replicas"] = 1
        deployment["user_config"] = {**deployment["user_config"], **settings}  # both deployments, the same settings
    deployment = model
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    address = ray.get_runtime_context().gcs_address
    subprocess.run([str(Path(sys.executable).parent / "serve"), "run", "--non-blocking", "--address", address, str(path)],
                   cwd=REPO, check=True, timeout=180, capture_output=True)
    expected = deployment["user_config"]
    for _ in range(600):
        status = serve.status().applications.get(app["name"])
        if status is not None and status.status == "DEPLOY_FAILED":
            raise RuntimeError(status.message)
        if status is not None and status.status == "RUNNING":
            try:
                if httpx.get(f"{URL}/v1/model", timeout=10).json()["settings"] == expected:
                    return
            except (httpx.HTTPError, KeyError):
                pass
        time.sleep(0.25)
    raise TimeoutError(f"{app['name']} did not come up with settings {expected}")


@pytest.fixture(scope="module")
def client(ray_session, trained, tmp_path_factory):
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    deploy_config(tmp_path_factory.mktemp("config"), trained[0], **SETTINGS)
    with httpx.Client(base_url=URL, timeout=60) as c:
        yield c
    serve.shutdown()


@pytest.fixture(scope="module")
def registry(client, trained, tmp_path_factory):
    """The same checkpoint registered in MLflow, served from models:/ at /registry with auth on."""
    from ray import serve

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    run_id, _ = tracking.start_run(uri, "serve-test", "serve-run", {})
    model_uri = model_tracking.log_model(uri, run_id, trained[0])  # an MLflow pyfunc model, as training logs it
    version = model_tracking.register_model(uri, run_id, "pareto-serve-test", model_uri=model_uri)
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    app = build_app({"model": f"models:/pareto-serve-test/{version}", "tracking_uri": uri, "num_cpus": 0.5,
                     "num_replicas": 1, "ingress_replicas": 1, "token_file": str(token_file)})
    serve.run(app, name="registry", route_prefix="/registry")  # Serve's default logging: access logs on
    yield version, uri
    serve.delete("registry")


def inputs(split, n: int, start: int = 0) -> torch.Tensor:
    return split.inputs(index=slice(start, start + n))


def library_probs(model, x: torch.Tensor, pref: list[float]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t.softmax(-1) for t in model.predict(x, torch.tensor(pref).expand(len(x), -1))]


def http_probs(body: dict) -> list[torch.Tensor]:
    return [torch.tensor(p["probabilities"]) for p in body["predictions"]]


def test_round_trip_equals_the_library(client, trained):
    _, model, test = trained
    x = inputs(test, 8)
    r = client.post("/v1/predict", json={"preference": [0.3, 0.7], "inputs": x.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["preference"] == [0.3, 0.7] and body["forward"] == "merged"
    for got, want in zip(http_probs(body), library_probs(model, x, [0.3, 0.7])):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert [p["classes"] for p in body["predictions"]] == [w.argmax(-1).tolist() for w in library_probs(model, x, [0.3, 0.7])]


def test_vertex_preference_favours_its_task(client, trained):
    _, _, test = trained
    x, y = inputs(test, 128), test.labels[:128]
    score = {}
    for name, pref in {"task1": [0.95, 0.05], "task2": [0.05, 0.95]}.items():
        probs = http_probs(client.post("/v1/predict", json={"preference": pref, "inputs": x.tolist()}).json())
        # mean probability of the true class, per task (a smooth accuracy)
        score[name] = [probs[t][torch.arange(len(y)), y[:, t]].mean().item() for t in range(2)]
    assert score["task1"][0] > score["task2"][0]
    assert score["task2"][1] > score["task1"][1]


def test_concurrent_requests_share_batches_and_match_unbatched(client, trained):
    _, model, test = trained
    prefs = [[0.2, 0.8], [0.7, 0.3]]
    xs = [inputs(test, 1, start=i) for i in range(24)]

    async def burst():
        async with httpx.AsyncClient(base_url=URL, timeout=60) as c:
            return await asyncio.gather(*(c.post("/v1/predict", json={"preference": prefs[i % 2], "inputs": x.tolist()})
                                          for i, x in enumerate(xs)))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    sizes = [int(r.headers["x-batch-size"]) for r in responses]
    assert max(sizes) > 1, sizes
    assert any(int(r.headers["x-batch-groups"]) == 2 for r in responses)
    for i, r in enumerate(responses):
        assert r.json()["batch_size"] == sizes[i]
        for got, want in zip(http_probs(r.json()), library_probs(model, xs[i], prefs[i % 2])):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


GOOD_X = np.zeros((1, 1, 28, 28)).tolist()
MALFORMED = [
    ("λ too short", {"json": {"preference": [1.0], "inputs": GOOD_X}}, 422, "preference"),
    ("λ too long", {"json": {"preference": [0.2, 0.3, 0.5], "inputs": GOOD_X}}, 422, "preference"),
    ("λ negative", {"json": {"preference": [-0.2, 1.2], "inputs": GOOD_X}}, 422, "preference"),
    ("λ NaN", {"content": b'{"preference": [NaN, 0.5], "inputs": [[[[0.0]]]]}'}, 422, "preference"),
    ("λ Inf", {"content": b'{"preference": [Infinity, 0.0], "inputs": [[[[0.0]]]]}'}, 422, "preference"),
    ("λ sum off", {"json": {"preference": [0.5, 0.6], "inputs": GOOD_X}}, 422, "preference"),
    ("λ strings", {"json": {"preference": ["0.5", "0.5"], "inputs": GOOD_X}}, 422, "preference.0"),
    ("λ missing", {"json": {"inputs": GOOD_X}}, 422, "preference"),
    ("inputs wrong shape", {"json": {"preference": [0.5, 0.5], "inputs": [[1.0, 2.0]]}}, 422, "inputs"),
    ("inputs wrong type", {"json": {"preference": [0.5, 0.5], "inputs": [[[["x"] * 28] * 28]]}}, 422, "inputs"),
    ("inputs ragged", {"json": {"preference": [0.5, 0.5], "inputs": [[[[0.0] * 28] * 27 + [[0.0]]]]}}, 422, "inputs"),
    ("inputs not a list", {"json": {"preference": [0.5, 0.5], "inputs": 3}}, 422, "inputs"),
    ("empty batch", {"json": {"preference": [0.5, 0.5], "inputs": []}}, 422, "inputs"),
    ("oversized batch", {"json": {"preference": [0.5, 0.5], "inputs": [[[[0]]]] * 129}}, 422, "inputs"),
    ("unknown field", {"json": {"preference": [0.5, 0.5], "inputs": GOOD_X, "temperature": 2}}, 422, "temperature"),
    ("not JSON", {"content": b"{preference: oops"}, 400, "body"),
    ("body too large", {"content": b" " * (4 * 2**20 + 1)}, 413, "body"),
    ("λ sum off by 1.009e-3", {"json": {"preference": [0.501009, 0.5], "inputs": GOOD_X}}, 422, "preference"),
    ("inputs one boolean", {"json": {"preference": [0.5, 0.5], "inputs": [[[[0.5] * 27 + [True]] * 28]]}}, 422, "inputs"),
    ("duplicate key", {"content": b'{"preference": [0.5, 0.5], "inputs": [[[[0.0]]]], "preference": [1.0, 0.0]}'},
     400, "preference"),
    ("JSON array", {"content": b"[]"}, 422, "body"),
    ("empty body", {"content": b""}, 400, "body"),
]


@pytest.mark.parametrize("case, request_kwargs, status, field", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_bodies_get_4xx_naming_the_field(client, case, request_kwargs, status, field):
    headers = {"content-type": "application/json"}
    r = client.post("/v1/predict", headers=headers, **request_kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["field"] == field and error["message"] and error["expected"]
    assert client.get("/healthz").json() == {"status": "ok"}  # the replica keeps answering


def test_errors_outside_the_routes_are_json_too(client):
    for method, path, status in (("GET", "/nope", 404), ("GET", "/v1/predict", 405), ("DELETE", "/healthz", 405)):
        r = client.request(method, path)
        assert r.status_code == status and r.json()["error"]["field"] == "path", r.text
    for headers in ({"x-big": "a" * 20_000}, [(f"x-h{i}", "v") for i in range(150)]):
        r = client.get("/healthz", headers=headers)
        assert r.status_code == 431 and r.json()["error"]["field"] == "headers", r.text
    for bound in (b"NaN", b'"NaN"', b"Infinity", b"true"):
        r = client.post("/v1/select", content=b'{"constraints": [{"task": 1, "min": %s}]}' % bound,
                        headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "constraints.0.min", r.text


def test_inputs_that_overflow_the_model_get_422_not_null(client):
    x = np.full((1, 1, 28, 28), 3e38)  # finite float32, far outside the trained range
    x[..., ::2] *= -1
    r = client.post("/v1/predict", json={"preference": [0.5, 0.5], "inputs": x.tolist()})
    assert r.status_code == 422 and r.json()["error"]["field"] == "inputs", r.text[:300]


def test_slow_clients_hold_neither_health_nor_predictions(client):
    """More clients than the model deployment has slots send headers and '{' of a body, then stall."""
    socks = []
    try:
        for _ in range(MODEL_SLOTS + 4):
            sock = socket.create_connection(("127.0.0.1", PORT))
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
            socks.append(sock)
        time.sleep(0.5)
        t = time.perf_counter()
        assert httpx.get(f"{URL}/healthz", timeout=5).json() == {"status": "ok"}
        r = httpx.post(f"{URL}/v1/predict", json={"preference": [0.5, 0.5], "inputs": GOOD_X}, timeout=5)
        assert r.status_code == 200
        for sock in socks:  # each slow client gets 408 once the body deadline passes, and the connection closes
            sock.settimeout(SETTINGS["body_timeout_s"] + 10)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer[:200]
            assert json.loads(body)["error"]["field"] == "body"
        assert time.perf_counter() - t < SETTINGS["body_timeout_s"] + 10
    finally:
        for sock in socks:
            sock.close()
    assert client.get("/healthz").status_code == 200


def test_user_config_changes_without_a_redeploy(client, trained, tmp_path):
    pseudo = {"preference": [1.2, -0.2], "inputs": GOOD_X}
    assert client.post("/v1/predict", json=pseudo).status_code == 422
    client.post("/v1/predict", json={"preference": [0.15, 0.85], "inputs": GOOD_X})
    client.post("/v1/predict", json={"preference": [0.15, 0.85], "inputs": GOOD_X})
    hits = client.get("/v1/model").json()["cache"]["hits"]
    assert hits >= 1
    try:
        deploy_config(tmp_path, trained[0], **SETTINGS, allow_pseudo=True)  # only user_config differs
        r = client.post("/v1/predict", json=pseudo)
        assert r.status_code == 200 and r.json()["preference"] == [1.2, -0.2]
        # the same replica reconfigured in place: a restarted one would have an empty cache
        assert client.get("/v1/model").json()["cache"]["hits"] >= hits
    finally:
        deploy_config(tmp_path, trained[0], **SETTINGS)
    assert client.post("/v1/predict", json=pseudo).status_code == 422


def test_repeated_preference_hits_the_weight_cache(client):
    body = {"preference": [0.45, 0.55], "inputs": GOOD_X}
    assert client.post("/v1/predict", json=body).headers["x-forward-path"] == "merged"  # one λ: merged weights
    before = client.get("/v1/model").json()["cache"]
    second = client.post("/v1/predict", json=body)
    after = client.get("/v1/model").json()["cache"]
    assert after["hits"] == before["hits"] + 1 and after["misses"] == before["misses"]
    assert second.json()["preference"] == [0.45, 0.55]


def test_model_and_front_endpoints(client, trained):
    info = client.get("/v1/model").json()
    assert info["method"] == "palora" and info["num_tasks"] == 2 and info["input_shape"] == [1, 28, 28]
    assert info["source"] == str(trained[0])
    assert info["preference_conditioned"] and info["version"] == "checkpoint" and info["epoch"] == 1
    assert info["settings"]["max_batch_size"] == 16 and info["torch_threads"] == 1  # Ray pins threads to the CPUs
    front = client.get("/v1/front").json()
    assert front["num_tasks"] == 2 and len(front["rows"]) == 11 and set(front["rows"][0]) >= {"ray_1", "acc_2", "loss_1"}
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/select", "/v1/front", "/v1/model", "/healthz"} <= set(spec["paths"])
    for path, model in (("/v1/predict", "PredictRequest"), ("/v1/select", "SelectRequest")):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"} and model in spec["components"]["schemas"]
    assert {"Constraint", "Objective", "ErrorBody"} <= set(spec["components"]["schemas"])


def test_select_meets_constraints_or_says_infeasible(client):
    rows = client.get("/v1/front").json()["rows"]
    acc2 = sorted(r["acc_2"] for r in rows)
    target = acc2[len(acc2) // 2]  # met by about half of the evaluated rays
    r = client.post("/v1/select", json={"constraints": [{"task": 2, "metric": "acc", "min": target}],
                                        "objective": {"task": 1, "metric": "acc", "goal": "max"}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["feasible"] and out["expected"]["acc_2"] >= target - 1e-9
    best_grid = max(row["acc_1"] for row in rows if row["acc_2"] >= target)
    assert out["expected"]["acc_1"] >= best_grid - 1e-9 and abs(sum(out["preference"]) - 1) < 1e-6
    r = client.post("/v1/select", json={"constraints": [{"task": 1, "min": 1.01}]})
    assert r.status_code == 200 and not r.json()["feasible"] and "infeasible" in r.json()["message"]
    r = client.post("/v1/select", json={"constraints": [{"task": 5, "min": 0.5}]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "constraints.0.task"
    # the selected λ is servable as is
    assert client.post("/v1/predict", json={"preference": out["preference"], "inputs": GOOD_X}).status_code == 200


def test_served_from_the_mlflow_registry(registry, trained):
    version, _ = registry
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=f"{URL}/registry", timeout=60, headers=headers) as c:
        info = c.get("/v1/model").json()
        assert info["version"] == f"pareto-serve-test/{version}" and info["source"].startswith("models:/")
        local = httpx.get(f"{URL}/v1/model").json()
        assert info["weights_sha256"] == local["weights_sha256"]
        x = inputs(trained[2], 4)
        r = c.post("/v1/predict", json={"preference": [0.6, 0.4], "inputs": x.tolist()})
        assert r.status_code == 200
        for got, want in zip(http_probs(r.json()), library_probs(trained[1], x, [0.6, 0.4])):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bearer_token_auth(registry, client):
    body = {"preference": [0.5, 0.5], "inputs": GOOD_X}
    with httpx.Client(base_url=f"{URL}/registry", timeout=60) as c:
        assert c.post("/v1/predict", json=body).status_code == 401
        r = c.get("/v1/model", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["field"] == "Authorization"
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/healthz").status_code == 200  # health checks stay open
        assert c.post("/v1/predict", json=body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.post("/v1/predict", json=body).status_code == 200  # the app without a token: auth off


def session_files():
    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    return [p for p in session.rglob("*") if p.is_file() and not p.is_symlink()]


def test_the_token_is_in_no_file_of_rays_session(registry):
    import ray
    from ray.util.state import list_actors

    with httpx.Client(base_url=f"{URL}/registry", timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        assert c.get("/v1/model").status_code == 200  # auth is on: the ingress has the token
    hits = [str(p) for p in session_files() if TOKEN.encode() in p.read_bytes()]
    assert hits == []
    actors = list_actors(address=ray.get_runtime_context().gcs_address, detail=True, limit=1000)
    assert actors and TOKEN not in str(actors)  # what `ray list actors --detail` shows


def test_build_app_ships_no_secret(trained, monkeypatch):
    from ray import cloudpickle

    monkeypatch.setenv(TOKEN_ENV, "s3cret-from-the-env")
    blob = cloudpickle.dumps(build_app({"model": str(trained[0])}))  # all that Ray is given of the app
    assert b"s3cret-from-the-env" not in blob


def test_access_logs_are_a_setting(client, registry):
    """serve/config.yaml turns them off for its app; the registry app keeps Serve's default (on)."""
    body = {"preference": [0.5, 0.5], "inputs": GOOD_X}
    assert client.post("/v1/predict", json=body).status_code == 200
    with httpx.Client(base_url=f"{URL}/registry", timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        assert c.post("/v1/predict", json=body).status_code == 200
    time.sleep(1)

    def access_lines(app: str) -> int:
        return sum(p.read_text(errors="replace").count("POST /") for p in session_files()
                   if p.parent.name == "serve" and p.name.startswith(f"replica_{app}_"))

    assert access_lines("pareto-ray") == 0 and access_lines("registry") > 0


def test_missing_or_corrupted_checkpoint_fails_the_start(client, trained, tmp_path):
    from ray import serve

    from pareto_ray.serving.app import ParetoFrontServer

    with pytest.raises(CheckpointError, match="not found"):
        build_app({"model": str(tmp_path / "missing")})
    broken = Path(shutil.copytree(trained[0], tmp_path / "broken"))
    (broken / "model.safetensors").write_bytes(b"\x80\x04\x95 a pickle is never loaded")
    app = ParetoFrontServer.options(max_constructor_retry_count=1, ray_actor_options={"num_cpus": 0.5}).bind(
        model=str(broken))
    with pytest.raises(RuntimeError, match="Deploying application broken failed"):
        serve.run(app, name="broken", route_prefix="/broken")
    status = serve.status().applications["broken"].deployments["ParetoFrontServer"]
    assert "not a readable safetensors file" in status.message
    serve.delete("broken")
    assert client.get("/healthz").status_code == 200


def test_serve_config_builds_the_app(trained):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from pareto_ray.serving.schemas import ServeSettings

    raw = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    config = ServeDeploySchema.model_validate(raw)
    (app_cfg,) = config.applications
    assert app_cfg.import_path == "pareto_ray.serving.app:build_app" and app_cfg.args["model"].startswith("models:/")
    ingress, model = (next(d for d in app_cfg.deployments if d.name == name)
                      for name in ("ParetoFrontIngress", "ParetoFrontServer"))
    settings = ServeSettings.model_validate(model.user_config)
    assert ingress.user_config == model.user_config  # one block of settings, each deployment applies its keys
    assert model.max_ongoing_requests >= settings.max_batch_size
    assert ingress.max_ongoing_requests > model.max_ongoing_requests  # slow bodies wait in the ingress, not the model
    assert ingress.num_replicas >= 2 and model.autoscaling_config["min_replicas"] >= 2  # a replica can die
    assert app_cfg.logging_config.enable_access_log is False and config.logging_config.enable_access_log is False
    module, attr = app_cfg.import_path.split(":")
    builder = getattr(__import__(module, fromlist=[attr]), attr)
    app = call_user_app_builder_with_args_if_necessary(builder, {**app_cfg.args, "model": str(trained[0])})
    assert type(app).__name__ == "Application"


def test_cli_has_a_serve_command():
    from pareto_ray.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "models:/m/1", "--port", "8200"])
    assert args.model == "models:/m/1" and args.port == 8200 and args.func.__name__ == "cmd_serve"
    assert args.access_log is False and args.replicas is None and args.token_file is None


# ----------------------------------------------------------------------------- the input forms over HTTP

def pngs(split, n: int) -> list[bytes]:
    return [encode_png(x) for x in split.x[:n]]


def test_a_training_sample_as_png_gives_the_in_process_prediction(client, trained):
    _, model, test = trained
    assert test.x.dtype == torch.uint8  # the stored form: the PNG holds exactly the training pixels
    want = library_probs(model, inputs(test, 4), [0.3, 0.7])
    images = [base64.b64encode(p).decode() for p in pngs(test, 4)]
    r = client.post("/v1/predict", json={"preference": [0.3, 0.7], "images": images, "output": {"top_k": 3}})
    assert r.status_code == 200, r.text
    body = r.json()
    for got, w in zip(http_probs(body), want):
        assert_close(got, w)
    assert [p["kind"] for p in body["predictions"]] == ["classification"] * 2
    assert [t["class"] for t in body["predictions"][0]["top_k"][0]] == want[0][0].argsort(descending=True)[:3].tolist()
    files = [("preference", (None, b"[0.3, 0.7]"))] + [("images", (f"{i}.png", p, "image/png"))
                                                        for i, p in enumerate(pngs(test, 4))]
    r = client.post("/v1/predict", files=files)  # multipart/form-data, as curl -F sends it
    assert r.status_code == 200, r.text
    for got, w in zip(http_probs(r.json()), want):
        assert_close(got, w)


def test_model_info_and_openapi_show_the_input_spec_and_typed_answers(client):
    info = client.get("/v1/model").json()
    assert info["input"]["kind"] == "image" and info["input"]["forms"] == ["images", "npy", "inputs"]
    assert info["input"]["limits"]["max_inputs"] == SETTINGS["max_inputs"]
    assert [t["kind"] for t in info["tasks"]] == ["classification"] * 2
    schema = client.get("/openapi.json").json()
    names = set(schema["components"]["schemas"])
    assert {"ClassificationPrediction", "BinaryPrediction", "RegressionPrediction", "SegmentationPrediction",
            "DepthPrediction", "NormalsPrediction", "InputInfo"} <= names
    assert "multipart/form-data" in schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]


def test_fuzzed_inputs_get_4xx_naming_the_field_and_the_server_stays_up(client, trained):
    rng = random.Random(5)
    sent = 0
    for _ in range(3):  # bounded: 3 draws of every corruption
        for name, body, ctype in corruptions(rng):
            r = client.post("/v1/predict", content=body, headers={"content-type": ctype or "application/json"})
            sent += 1
            if r.status_code == 200:
                continue  # a flipped bit in pixel data can leave a valid PNG
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
            assert r.json()["error"]["field"], name
    assert sent >= 45 and client.get("/healthz").status_code == 200
    good = [base64.b64encode(p).decode() for p in pngs(trained[2], 1)]
    assert client.post("/v1/predict", json={"preference": [0.5, 0.5], "images": good}).status_code == 200


def test_the_mlflow_pyfunc_model_answers_as_the_server(registry, trained):
    version, uri = registry
    images = [base64.b64encode(p).decode() for p in pngs(trained[2], 3)]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{URL}/registry/v1/predict", json={"preference": [0.6, 0.4], "images": images}, headers=headers,
                   timeout=60)
    assert r.status_code == 200, r.text
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/pareto-serve-test/{version}")
    finally:
        mlflow.set_tracking_uri(None)
    answer = model.predict(pd.DataFrame({"image": images}), params={"preference": [0.6, 0.4]})
    for got, want in zip(http_probs(answer), http_probs(r.json())):
        assert_close(got, want)
