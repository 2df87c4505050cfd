"""The front explorer page in headless Chromium against the real Serve app on localhost (port 8183).

A checkpoint trained here (PaLoRA-MLP, 2 epochs of MultiDigits, its validation front, its test samples
and test HV) is served twice in one Serve instance: at ``/`` without auth, and at ``/locked`` with a bearer
token (in a file).  Debian's ``chromium`` and ``chromium-driver`` drive the page through Selenium; without
them the browser tests skip (``.ci/run`` installs them).  Set ``PARETO_RAY_EXPLORER_SCREENSHOT=<png>`` to save
a screenshot of the page (docs/explorer.png is one).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import seed_files
import torch
from tolerance import assert_close

from pareto_ray.checkpoint import DatasetSpec, read_samples, sample_set, save_checkpoint, write_run_info
from pareto_ray.config import load_config
from pareto_ray.data import load_dataset
from pareto_ray.fronts import evaluate_front, front_metrics
from pareto_ray.loop import build_optimizer, train_epoch
from pareto_ray.methods import build_model
from pareto_ray.preferences import simplex_grid
from pareto_ray.serving.app import build_app
from pareto_ray.serving.explorer import page

pytestmark = pytest.mark.slow

PORT = 8183
URL = f"http://127.0.0.1:{PORT}"
CLI_PORT = 8184
TOKEN = "explorer-token-91c2"
WAIT_S = 60


def train_checkpoint(folder: Path, num_tasks: int = 2, epochs: int = 2, max_train: int = 1024) -> tuple[Path, float]:
    """A real checkpoint with its validation front, test samples and test HV (no MLflow run: run id unknown)."""
    cfg = load_config(None, ["data.dataset=multidigits", f"data.num_tasks={num_tasks}", f"data.max_train={max_train}",
                             "data.max_eval=256", "model.backbone=mlp", "method.alpha=4", "train.lr=0.003",
                             f"train.epochs={epochs}", "train.batch_size=64", "ray.num_workers=1"])
    torch.manual_seed(0)
    data = load_dataset(cfg.data)
    method, model, _ = build_model(cfg.model, cfg.method, data.tasks, data.input_shape)
    optimizer = build_optimizer(model, "adam", cfg.train.lr)
    for epoch in range(cfg.train.epochs):
        train_epoch(model, method, optimizer, data.train, epoch, cfg.train.epochs, cfg.train.batch_size, cfg.seed)
    front = evaluate_front(model, data.val, simplex_grid(num_tasks), tasks=data.tasks)
    test_hv = front_metrics(evaluate_front(model, data.test, simplex_grid(num_tasks), tasks=data.tasks))["hv"]
    path = save_checkpoint(folder / "checkpoint", model, cfg, {"epoch": cfg.train.epochs - 1, "metrics": {}},
                           front=front, dataset=DatasetSpec.of(data), samples=sample_set(data.test))
    write_run_info(path, {"run_id": None, "tracking_uri": None, "test_hv": test_hv, "val_hv": None})
    return path, test_hv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_checkpoint(tmp_path_factory.mktemp("explorer"))


@pytest.fixture(scope="module")
def three(served, tmp_path_factory):
    """A 3-task checkpoint (one short epoch), served at /three."""
    from ray import serve

    path, _ = train_checkpoint(tmp_path_factory.mktemp("three"), num_tasks=3, epochs=1, max_train=512)
    serve.run(build_app({"model": str(path), "num_cpus": 0.25, "num_replicas": 1, "ingress_replicas": 1}),
              name="explorer-three", route_prefix="/three")
    yield "/three"
    serve.delete("explorer-three")


@pytest.fixture(scope="module")
def many(served, tmp_path_factory):
    """CIFAR-100's 20 superclass tasks (a tiny format-faithful copy, one epoch), served at /many.  Its front:
    the 20 one-hot rays, the centre and 14 seeded Dirichlet rays (pymoo's 100-ray grid takes long to build)."""
    from ray import serve

    root = seed_files.write_cifar100(tmp_path_factory.mktemp("cifar"))
    cfg = load_config(None, ["data.dataset=cifar100", f"data.root={root}", "data.cache=false", "model.backbone=mlp",
                             "train.epochs=1", "train.batch_size=64"])
    torch.manual_seed(0)
    data = load_dataset(cfg.data)
    method, model, _ = build_model(cfg.model, cfg.method, data.tasks, data.input_shape)
    train_epoch(model, method, build_optimizer(model, "adam", 1e-3), data.train, 0, 1, 64, cfg.seed, tasks=data.tasks)
    t = data.num_tasks
    rays = torch.cat([torch.eye(t), torch.full((1, t), 1 / t),
                      torch.distributions.Dirichlet(torch.ones(t)).sample((14,))])
    front = evaluate_front(model, data.val, rays, tasks=data.tasks)
    path = save_checkpoint(tmp_path_factory.mktemp("many") / "checkpoint", model, cfg, {"epoch": 0, "metrics": {}},
                           front=front, dataset=DatasetSpec.of(data), samples=sample_set(data.test))
    serve.run(build_app({"model": str(path), "num_cpus": 0.25, "num_replicas": 1, "ingress_replicas": 1}),
              name="explorer-many", route_prefix="/many")
    yield "/many"
    serve.delete("explorer-many")


@pytest.fixture(scope="module")
def served(ray_session, trained, tmp_path_factory):
    from ray import serve

    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    common = {"model": str(trained[0]), "num_cpus": 0.5, "num_replicas": 1, "ingress_replicas": 1}
    serve.run(build_app(common), name="explorer", route_prefix="/")
    serve.run(build_app({**common, "token_file": str(token_file)}), name="explorer-locked", route_prefix="/locked")
    with httpx.Client(base_url=URL, timeout=60) as client:
        yield client
    serve.shutdown()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,960",
                "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()


def wait_for(driver, condition, what: str, timeout: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d), message=what)


def by_id(driver, name: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, name)


def open_page(driver, prefix: str = "") -> None:
    driver.get(f"{URL}{prefix}/explorer")


def displayed_prediction(driver) -> dict | None:
    box = by_id(driver, "predictions")
    if not box.get_attribute("data-count"):
        return None
    return {"count": int(box.get_attribute("data-count")), "preference": json.loads(box.get_attribute("data-preference")),
            "probabilities": json.loads(box.get_attribute("data-probabilities")),
            "sample": int(box.get_attribute("data-sample"))}


def prediction_at(driver, preference: list[float]) -> dict:
    """Wait until the page shows predictions for ``preference`` (as the server rounded it)."""
    def ready(d):
        p = displayed_prediction(d)
        return p if p and all(abs(a - b) < 1e-9 for a, b in zip(p["preference"], preference)) else None
    return wait_for(driver, ready, f"predictions at λ = {preference}")


def loaded(driver) -> None:
    wait_for(driver, lambda d: by_id(d, "main").is_displayed() and displayed_prediction(d), "the page to load")


def test_serve_command_prints_the_page_address(trained):
    """`pareto-ray serve` (its own local Ray, before this module's) prints the explorer's address, which answers."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [str(Path(sys.executable).parent / "pareto-ray"), "serve", "--model", str(trained[0]), "--port", str(CLI_PORT),
           "--replicas", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline, lines, address = time.monotonic() + 300, [], None
        while address is None and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("{") and "explorer" in line:
                address = json.loads(line)["explorer"]
        assert address == f"http://127.0.0.1:{CLI_PORT}/explorer", "".join(lines[-30:])
        assert any(f"front explorer at http://127.0.0.1:{CLI_PORT}/explorer" in line for line in lines)
        r = httpx.get(address, timeout=30)
        assert r.status_code == 200 and r.content == page()[0]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_page_is_public_offline_and_pins_its_script(served):
    r = served.get("/explorer")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'sha256-" in r.headers["content-security-policy"]
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    body, _ = page()
    assert r.content == body
    assert "src=" not in r.text and "<link" not in r.text  # nothing fetched from elsewhere: no CDN, no asset
    locked = httpx.get(f"{URL}/locked/explorer", timeout=30)
    assert locked.status_code == 200 and locked.content == body  # public, and it holds nothing of the model
    assert httpx.get(f"{URL}/locked/v1/explorer/card", timeout=30).status_code == 401


def test_model_card_and_front_render(served, trained, browser):
    card = served.get("/v1/explorer/card").json()
    rows = served.get("/v1/front").json()["rows"]
    assert len(card["samples"]) == 6 and card["tasks"][0]["metric"] == "acc"
    open_page(browser)
    loaded(browser)
    from selenium.webdriver.common.by import By

    points = browser.find_elements(By.CSS_SELECTOR, "#front-svg circle.front-point")
    assert len(points) == len(rows) == 11
    card_text = by_id(browser, "card-list").text
    assert "palora" in card_text and "multidigits" in card_text
    assert float(by_id(browser, "card-test-hv").text) == pytest.approx(trained[1], rel=1e-3)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#task-table tr.task-row")) == 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "#samples .sample canvas")) == 6
    # hovering a point shows its λ and every task's metric
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).move_to_element(points[3]).perform()
    tip = wait_for(browser, lambda d: by_id(d, "tooltip").is_displayed() and by_id(d, "tooltip"), "the tooltip")
    row = rows[3]
    assert f"({row['ray_1']:.3f}, {row['ray_2']:.3f})" in tip.text
    assert f"acc {row['acc_1']:.4f}" in tip.text and f"acc {row['acc_2']:.4f}" in tip.text


def test_slider_changes_predictions_like_a_direct_predict(served, browser):
    from selenium.webdriver.common.keys import Keys

    open_page(browser)
    loaded(browser)
    card = served.get("/v1/explorer/card").json()
    first = prediction_at(browser, [0.5, 0.5])
    slider = by_id(browser, "lambda-slider")
    slider.send_keys(Keys.HOME)  # λ₁ = 0, then 20 steps of 0.01 up: debounced, one request in flight
    for _ in range(20):
        slider.send_keys(Keys.ARROW_RIGHT)
    shown = prediction_at(browser, [0.2, 0.8])
    assert json.loads(by_id(browser, "lambda-value").get_attribute("data-lambda")) == pytest.approx([0.2, 0.8])
    assert shown["count"] - first["count"] <= 5, "every key press sent a request: no debounce"
    direct = served.post("/v1/predict", json={"preference": [0.2, 0.8], "inputs": [card["samples"][0]["inputs"]]})
    assert direct.status_code == 200, direct.text
    for t, p in enumerate(direct.json()["predictions"]):
        assert_close(torch.tensor(shown["probabilities"][t]), torch.tensor(p["probabilities"][0]), what=f"task {t + 1}")
    changed = max(abs(a - b) for t in range(2) for a, b in zip(shown["probabilities"][t], first["probabilities"][t]))
    assert changed > 1e-3, "moving λ did not change the predictions"
    # another sample: its predictions at the current λ
    from selenium.webdriver.common.by import By

    browser.find_elements(By.CSS_SELECTOR, "#samples .sample")[2].click()
    wait_for(browser, lambda d: (displayed_prediction(d) or {}).get("sample") == 2, "sample 3's predictions")


def test_a_target_moves_lambda_to_the_select_answer(served, browser):
    rows = served.get("/v1/front").json()["rows"]
    goal = sorted(r["acc_1"] for r in rows)[len(rows) // 2]
    body = {"constraints": [{"task": 1, "metric": "acc", "min": goal}]}
    answer = served.post("/v1/select", json=body).json()
    assert answer["feasible"]
    open_page(browser)
    loaded(browser)
    by_id(browser, "target-min-1").send_keys(str(goal))
    by_id(browser, "select-button").click()
    message = wait_for(browser, lambda d: by_id(d, "select-message").get_attribute("data-feasible") == "true"
                       and by_id(d, "select-message"), "a feasible answer")
    assert answer["message"] in message.text
    assert json.loads(message.get_attribute("data-preference")) == answer["preference"]
    assert json.loads(by_id(browser, "lambda-value").get_attribute("data-lambda")) == pytest.approx(answer["preference"])
    served_pref = served.post("/v1/predict", json={"preference": answer["preference"], "inputs": [
        served.get("/v1/explorer/card").json()["samples"][0]["inputs"]]}).json()["preference"]
    prediction_at(browser, served_pref)
    shot = os.environ.get("PARETO_RAY_EXPLORER_SCREENSHOT")
    if shot:
        browser.set_window_size(1200, 1120)
        time.sleep(0.5)
        browser.save_screenshot(str(Path(shot)))


def test_an_infeasible_target_says_so_and_keeps_lambda(served, browser):
    open_page(browser)
    loaded(browser)
    before = by_id(browser, "lambda-value").get_attribute("data-lambda")
    by_id(browser, "target-min-1").send_keys("0.999")
    by_id(browser, "target-min-2").send_keys("0.999")
    by_id(browser, "select-button").click()
    message = wait_for(browser, lambda d: by_id(d, "select-message").get_attribute("data-feasible") == "false"
                       and by_id(d, "select-message"), "an infeasible answer")
    direct = served.post("/v1/select", json={"constraints": [{"task": 1, "metric": "acc", "min": 0.999},
                                                              {"task": 2, "metric": "acc", "min": 0.999}]}).json()
    assert not direct["feasible"] and direct["message"] in message.text and "infeasible" in message.text
    assert "infeasible" in message.get_attribute("class")
    assert by_id(browser, "lambda-value").get_attribute("data-lambda") == before


def test_with_a_token_the_page_refuses_without_it(served, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, "/locked")
    wait_for(browser, lambda d: by_id(d, "auth").is_displayed(), "the token prompt")
    assert not by_id(browser, "main").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, ".front-point")
    by_id(browser, "token").send_keys("wrong-token")
    by_id(browser, "token-submit").click()
    wait_for(browser, lambda d: "refused" in by_id(d, "auth-message").text, "the refusal")
    assert not by_id(browser, "main").is_displayed()
    by_id(browser, "token").send_keys(TOKEN)
    by_id(browser, "token-submit").click()
    loaded(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#front-svg circle.front-point")) == 11
    assert TOKEN not in browser.current_url and TOKEN not in browser.page_source
    assert TOKEN not in json.dumps(browser.execute_script("return [document.cookie, {...localStorage}, {...sessionStorage}]"))


def test_three_tasks_a_triangle_picks_lambda(served, three, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    rows = served.get(f"{three}/v1/front").json()["rows"]
    card = served.get(f"{three}/v1/explorer/card").json()
    assert len(rows) == 66 and len(card["tasks"]) == 3
    open_page(browser, three)
    loaded(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#front-svg polyline.front-point")) == 66  # parallel coordinates
    assert len(browser.find_elements(By.CSS_SELECTOR, "#lambda-triangle circle.tri-point")) == 66
    first = wait_for(browser, displayed_prediction, "the first predictions")  # at λ = 1/3 each, as rounded
    triangle = by_id(browser, "lambda-triangle")
    box = triangle.rect  # click near the first task's corner (the top vertex)
    ActionChains(browser).move_to_element_with_offset(triangle, 0, int(-box["height"] * 0.3)).click().perform()
    lam = wait_for(browser, lambda d: (v := json.loads(by_id(d, "lambda-value").get_attribute("data-lambda")))[0] > 0.6
                   and v, "λ to move towards task 1")
    assert sum(lam) == pytest.approx(1.0) and min(lam) >= 0
    direct = served.post(f"{three}/v1/predict", json={"preference": lam, "inputs": [card["samples"][0]["inputs"]]}).json()
    shown = prediction_at(browser, direct["preference"])
    assert shown["count"] > first["count"]
    for t, p in enumerate(direct["predictions"]):
        assert_close(torch.tensor(shown["probabilities"][t]), torch.tensor(p["probabilities"][0]), what=f"task {t + 1}")


def test_samples_are_stored_with_the_checkpoint(trained):
    samples = read_samples(trained[0])
    assert samples["split"] == "test" and len(samples["inputs"]) == 6 and len(samples["targets"][0]) == 2
    assert torch.tensor(samples["inputs"]).shape == (6, 1, 28, 28)


def test_many_tasks_one_slider_each_renormalized(served, many, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    rows = served.get(f"{many}/v1/front").json()["rows"]
    card = served.get(f"{many}/v1/explorer/card").json()
    assert len(rows) == 35 and len(card["tasks"]) == 20
    open_page(browser, many)
    loaded(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#front-svg polyline.front-point")) == 35  # parallel coordinates
    sliders = browser.find_elements(By.CSS_SELECTOR, "#lambda-control input.task-slider")
    assert len(sliders) == 20
    first = wait_for(browser, displayed_prediction, "the first predictions")
    sliders[2].send_keys(Keys.END)  # task 3's weight 0.05 → 1, the others stay 0.05: λ_3 = 1 / 1.95
    lam = wait_for(browser, lambda d: (v := json.loads(by_id(d, "lambda-value").get_attribute("data-lambda")))[2] > 0.5
                   and v, "λ_3 to grow")
    assert lam[2] == pytest.approx(1 / 1.95, rel=1e-4) and lam[0] == pytest.approx(0.05 / 1.95, rel=1e-3)
    assert sum(lam) == pytest.approx(1.0)
    shown_weights = [float(x.text) for x in browser.find_elements(By.CSS_SELECTOR, "#lambda-control .lambda-row .mono")]
    assert shown_weights == pytest.approx(lam, abs=5e-4)  # each task's renormalized weight is shown
    direct = served.post(f"{many}/v1/predict", json={"preference": lam, "inputs": [card["samples"][0]["inputs"]]})
    assert direct.status_code == 200, direct.text
    shown = prediction_at(browser, direct.json()["preference"])
    assert shown["count"] > first["count"]
    for t, p in enumerate(direct.json()["predictions"]):
        assert_close(torch.tensor(shown["probabilities"][t]), torch.tensor(p["probabilities"][0]), what=f"task {t + 1}")
