"""Load benchmark of the Ray Serve deployment (not a test; prints numbers).

Two parts:

* ``rule`` (in-process, no Ray): for B requests with k distinct λ, times the
  merged path (one forward per λ group, cached W(λ)) against the per-sample
  path (one forward for all) and shows what the start-up cost model picks.
* ``load`` (default): starts Serve on localhost and drives it with C concurrent
  async httpx clients (``--clients 16 64``: one run each), λ drawn from Dir(1)
  per request (two-task models: also from 3 fixed rays); ``resnet18`` sends
  3×64×64 images as base64 PNG (decoded in the ingress), the digit models
  nested lists.  For this deployment, the same with batching off
  (``max_batch_size: 1``) and the bare backbone (``backbone_only``: the same
  network with every preference layer replaced by its base layer, λ ignored —
  the no-conditioning limit), one after the other in one run.  Prints
  requests/s, p50/p99 latency, the mean batch size and the ratios, with the
  compute ceiling (c): the bare forward's samples/s at the mean batch size
  over its samples/s at batch 1, timed in process with the replica's threads.

* ``failover``: starts Serve on localhost, drives it with C clients for a
  while, ``kill -9``s one replica of a deployment mid-run and prints what the
  clients saw: answers by status, error bodies that are not JSON, transport
  errors, the longest stretch with no successful answer after the kill, the
  slowest answer, and the RSS of the Serve processes.

    python benchmarks/serve_load.py rule
    python benchmarks/serve_load.py load --clients 16 --requests 40
    python benchmarks/serve_load.py load --backbone resnet18 --clients 16 64 --requests 12
    python benchmarks/serve_load.py load --model ray_results/<run>/checkpoint_<n>
    python benchmarks/serve_load.py failover --clients 4 --seconds 40 --kill-at 10 [--replicas 1]
    python benchmarks/serve_load.py fuzz --requests 1000

* ``fuzz``: starts Serve on localhost, sends N malformed requests of the new
  input forms (truncated, noisy and 100-megapixel PNGs, corrupt base64,
  zero-byte and mixed uploads, .npy of the wrong shape), and prints the answers
  by status, whether every error named a field, and the RSS of the Serve
  replicas before and after (memory flat: no leak per bad request).


"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


#: Backbones the benchmark can build, with the input it serves and its number of tasks.  resnet18 serves
#: 3×64×64 RGB images (sent as PNG by ``load``), 3 tasks, as the issue on batching measures it.
BACKBONES = {"lenet": ((1, 28, 28), 2), "mlp": ((1, 28, 28), 2), "resnet18": ((3, 64, 64), 3)}


def make_checkpoint(path: Path, backbone: str) -> Path:
    """A PaLoRA checkpoint with random (non-zero) adapters: throughput does not depend on training."""
    from pareto_ray.checkpoint import DatasetSpec, save_checkpoint
    from pareto_ray.config import load_config
    from pareto_ray.layers import LowRankPreferenceLayer
    from pareto_ray.methods import build_model
    from pareto_ray.tasks import classification_tasks

    shape, tasks = BACKBONES[backbone]
    # channel-style conv adapters (an r-channel conv and a 1×1 conv): the per-sample path is one rank-T·r product
    # per layer; PaLoRA's default "kernel" style (the paper's) costs T full convolutions per layer on that path
    cfg = load_config(None, [f"model.backbone={backbone}", "method.name=palora", f"data.num_tasks={tasks}",
                             "method.conv_style=channel"])
    torch.manual_seed(0)
    _, model, _ = build_model(cfg.model, cfg.method, tasks, shape)
    for m in model.modules():
        if isinstance(m, LowRankPreferenceLayer):
            torch.nn.init.normal_(m.lora_B, std=0.1)
    dataset = None
    if shape[0] == 3:  # an RGB image model: uint8 images normalized per channel, as ImageNet-style data are
        dataset = DatasetSpec(classification_tasks(tasks), {"kind": "image", "shape": list(shape), "dtype": "uint8",
                                                            "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                                                            "std": [0.229, 0.224, 0.225]})
    return save_checkpoint(path, model, cfg, {"epoch": 0, "metrics": {}}, dataset=dataset)


# ----------------------------------------------------------------------------- rule

def rule(args: argparse.Namespace) -> None:
    from pareto_ray.preferences import dirichlet
    from pareto_ray.serving.engine import Engine
    from pareto_ray.serving.inputs import preference_key
    from pareto_ray.serving.loading import load_served_model
    from pareto_ray.serving.predictors import BatchItem
    from pareto_ray.serving.schemas import ServeSettings

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.model or str(make_checkpoint(Path(tmp) / "ckpt", args.backbone))
        engine = Engine(load_served_model(source), ServeSettings(cache_size=4096))
    predictor = engine.predictor
    print(f"cost model (ms): {json.dumps(predictor.costs().as_ms())}   torch threads {torch.get_num_threads()}")
    print(f"{'B':>4} {'k':>4} {'merged ms':>10} {'per-sample ms':>14} {'faster':>11} {'model picks':>12}")
    g = torch.Generator().manual_seed(0)
    for b in args.batch_sizes:
        for k in sorted({1, 2, 3, 4, 8, 16, b} & set(range(1, b + 1))):
            rays = [preference_key(r.numpy(), 1e-3) for r in dirichlet(k, 2, generator=g)]
            items = [BatchItem(torch.randn(1, 1, 28, 28), rays[i % k]) for i in range(b)]
            times = {}
            for path in ("merged", "per_sample"):
                settings = engine.settings.model_copy(update={"forward_path": path})
                predictor.run_batch(items, settings)  # warm-up, fills the cache
                best = float("inf")
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    predictor.run_batch(items, settings)
                    best = min(best, time.perf_counter() - t)
                times[path] = best * 1e3  # best of repeats: the least disturbed by other load
            faster = min(times, key=times.get)
            picked = predictor.costs().choose(k, b, 0)
            print(f"{b:>4} {k:>4} {times['merged']:>10.2f} {times['per_sample']:>14.2f} {faster:>11} {picked:>12}")


# ----------------------------------------------------------------------------- load

async def drive(url: str, clients: int, requests: int, prefs: np.ndarray, inputs: dict, token: str | None) -> dict[str, float]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    batch_sizes: list[int] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, headers=headers) as client:
        async def one(c: int) -> None:
            nonlocal errors
            for i in range(requests):
                body = {"preference": prefs[(c * requests + i) % len(prefs)].tolist(), **inputs}
                t = time.perf_counter()
                r = await client.post("/v1/predict", json=body)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors += 1
                else:
                    batch_sizes.append(int(r.headers.get("x-batch-size", 1)))

        await asyncio.gather(*(one(c) for c in range(min(clients, 4))))  # warm-up
        latencies.clear()
        batch_sizes.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1e3
    return {"rps": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "mean_batch": float(np.mean(batch_sizes)) if batch_sizes else 0.0, "errors": errors}


def request_inputs(backbone: str, n: int, rng: np.random.Generator) -> dict:
    """The inputs of one request: RGB models get ``n`` random images as base64 PNG (decoded in the ingress),
    the digit models ``n`` nested-list tensors (as before)."""
    import base64

    from pareto_ray.inputs_spec import encode_png

    shape, _ = BACKBONES[backbone]
    if shape[0] == 3:
        return {"images": [base64.b64encode(encode_png(rng.integers(0, 256, shape, dtype=np.uint8))).decode()
                           for _ in range(n)]}
    return {"inputs": torch.randn(n, *shape).tolist()}


def compute_ceiling(source: str, batch: float, threads: int, repeats: int = 10) -> dict[str, float]:
    """(c): the bare backbone's samples/s at ``batch`` (the mean batch size, rounded) over its samples/s at batch 1,
    in this process with the replica's torch threads — what batching could give at most."""
    from pareto_ray.serving.loading import load_served_model
    from pareto_ray.serving.predictors import base_network

    torch.set_num_threads(threads)
    served = load_served_model(source)
    bare = base_network(served.model)
    shape = served.dataset.input_shape
    b = max(1, round(batch))
    rates = {}
    with torch.inference_mode():
        for n in sorted({1, b}):
            x = torch.randn(n, *shape)
            bare(x)
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                bare(x)
                best = min(best, time.perf_counter() - t)
            rates[n] = n / best
    return {"batch": b, "samples_s_at_1": rates[1], "samples_s_at_batch": rates[b], "ceiling": rates[b] / rates[1]}


def load(args: argparse.Namespace) -> None:
    from ray import serve

    sys.path.insert(0, str(REPO))
    from pareto_ray.preferences import dirichlet
    from pareto_ray.runtime import init_ray
    from pareto_ray.serving.app import build_app

    tmp = tempfile.TemporaryDirectory()
    source = args.model or str(make_checkpoint(Path(tmp.name) / "ckpt", args.backbone))
    _, tasks = BACKBONES[args.backbone]
    rng = torch.Generator().manual_seed(0)
    dir1 = np.round(dirichlet(4096, tasks, generator=rng).double().numpy(), 6)
    dir1[:, -1] = 1 - dir1[:, :-1].sum(axis=1)  # sums to 1 exactly after rounding
    rays = {"Dir(1)": dir1}
    if tasks == 2 and not args.dirichlet_only:
        rays = {"3 rays": np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]]), **rays}
    inputs = request_inputs(args.backbone, args.inputs_per_request, np.random.default_rng(0))
    batching = {"max_batch_size": args.max_batch_size, "batch_wait_timeout_s": args.wait}
    setups = [("this deployment", {"settings": batching}),
              ("batching off", {"settings": {**batching, "max_batch_size": 1}}),
              ("bare backbone", {"settings": batching, "backbone_only": True})]
    init_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config={"enable_access_log": False})
    url = f"http://127.0.0.1:{args.port}"
    replicas = {"num_replicas": args.replicas, "ingress_replicas": 1, "num_cpus": args.num_cpus}
    print(f"{args.backbone}: {args.replicas} model replica(s) of {args.num_cpus:g} CPU (torch threads follow it), "
          f"1 ingress replica (decodes), max_batch_size {args.max_batch_size}, wait {args.wait:g} s, "
          f"{args.requests} requests per client, {args.inputs_per_request} input(s) per request, "
          f"inputs as {next(iter(inputs))}", flush=True)
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    try:
        for name, extra in setups:
            serve.run(build_app({"model": source, **replicas, **extra}), name="bench", route_prefix="/",
                      logging_config={"enable_access_log": False})  # a log line per request costs CPU here
            for clients in args.clients:
                for draw, prefs in rays.items():
                    results[name, draw, clients] = r = asyncio.run(drive(url, clients, args.requests, prefs, inputs, None))
                    print(f"{name:>16} | {clients:>3} clients | λ {draw:>6} | {r['rps']:8.1f} req/s | "
                          f"p50 {r['p50_ms']:7.1f} ms | p99 {r['p99_ms']:7.1f} ms | mean batch {r['mean_batch']:5.1f} | "
                          f"errors {r['errors']}", flush=True)
            serve.delete("bench")
    finally:
        serve.shutdown()
    threads = max(1, int(args.num_cpus))
    ceilings = {}
    for clients in args.clients:
        for draw in rays:
            ours, off, bare = (results[s, draw, clients] for s in ("this deployment", "batching off", "bare backbone"))
            c = ceilings.setdefault(round(ours["mean_batch"]), compute_ceiling(source, ours["mean_batch"], threads))
            gain = ours["rps"] / off["rps"]
            print(f"{clients:>3} clients, λ {draw:>6}: vs batching off {gain:.2f}x (compute ceiling (c) at batch "
                  f"{c['batch']}: {c['ceiling']:.2f}x, so {gain / c['ceiling']:.2f} of it)   vs bare backbone "
                  f"{ours['rps'] / bare['rps']:.2f}x", flush=True)
    full = ceilings.setdefault(args.max_batch_size, compute_ceiling(source, args.max_batch_size, threads))
    print(f"compute ceiling at max_batch_size {args.max_batch_size}: {full['ceiling']:.2f}x "
          f"({full['samples_s_at_batch']:.1f} vs {full['samples_s_at_1']:.1f} samples/s, {threads} thread(s))")
    tmp.cleanup()
    summary = {f"{s}|{d}|{c}": v for (s, d, c), v in results.items()}
    print(json.dumps({"backbone": args.backbone, "replicas": args.replicas, "num_cpus": args.num_cpus,
                      "clients": args.clients, "requests": args.requests, "results": summary,
                      "ceilings": {str(k): v for k, v in ceilings.items()}}))


# ----------------------------------------------------------------------------- failover

def serve_pids() -> dict[str, list[int]]:
    """PIDs of this Ray instance's live Serve actors, by class name (ServeReplica:<app>:<deployment>, ProxyActor...)."""
    import ray
    from ray.util.state import list_actors

    out: dict[str, list[int]] = {}
    address = ray.get_runtime_context().gcs_address  # other Ray instances may run on the machine
    for actor in list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000):
        name = actor.class_name or ""
        if name.startswith(("ServeReplica", "ProxyActor", "ServeController")):
            out.setdefault(name, []).append(actor.pid)
    return out


def memory_mib(pid: int) -> tuple[int, int]:
    """RSS and PSS (shared pages divided among the processes that map them) of ``pid``, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            out[key] = int(rest.split()[0]) // 1024
    return out.get("Rss", 0), out.get("Pss", 0)


health_records: list[tuple[float, float, int]] = []  # /healthz probes of the last drive_failover: sent, done, status


async def drive_failover(url: str, clients: int, seconds: float, kill_at: float, victim: str,
                         x: list) -> tuple[list[tuple[float, float, int, bool]], float]:
    """Clients post /v1/predict for ``seconds``; at ``kill_at`` one ``victim`` replica gets SIGKILL.

    Returns per request (sent, done, status or -1 for a transport error, whether an error body was JSON), and the
    kill time; times in seconds from the start.
    """
    import httpx

    records: list[tuple[float, float, int, bool]] = []
    health_records.clear()
    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def one(c: int) -> None:
            i = 0
            while time.perf_counter() - t0 < seconds:
                pref = [0.2 + 0.6 * ((c + i) % 3) / 2, 0.0]
                pref[1] = 1 - pref[0]
                sent = time.perf_counter() - t0
                try:
                    r = await client.post("/v1/predict", json={"preference": pref, "inputs": x})
                    status, is_json = r.status_code, r.headers.get("content-type", "").startswith("application/json")
                except httpx.HTTPError:
                    status, is_json = -1, False
                records.append((sent, time.perf_counter() - t0, status, is_json))
                i += 1

        async def killer() -> float:
            await asyncio.sleep(kill_at)
            pids = serve_pids().get(victim, [])
            if not pids:
                raise RuntimeError(f"no live {victim} replica to kill")
            os.kill(pids[0], signal.SIGKILL)
            print(f"killed {victim} pid {pids[0]} at {time.perf_counter() - t0:.2f} s", flush=True)
            return time.perf_counter() - t0

        async def health() -> None:  # a probe on its own connection, twice a second
            async with httpx.AsyncClient(base_url=url, timeout=10) as probe:
                while time.perf_counter() - t0 < seconds:
                    sent = time.perf_counter() - t0
                    try:
                        status = (await probe.get("/healthz")).status_code
                    except httpx.HTTPError:
                        status = -1
                    health_records.append((sent, time.perf_counter() - t0, status))
                    await asyncio.sleep(0.5)

        *_, killed = await asyncio.gather(*(one(c) for c in range(clients)), health(), killer())
    return records, killed


def failover(args: argparse.Namespace) -> None:
    from ray import serve

    if not os.environ.get("PYTHONPATH"):  # PYTHONPATH, when set, picks the version measured (e.g. an older one)
        sys.path.insert(0, str(REPO))
    from pareto_ray.runtime import init_ray
    from pareto_ray.serving.app import AppArgs, build_app

    tmp = tempfile.TemporaryDirectory()
    source = args.model or str(make_checkpoint(Path(tmp.name) / "ckpt", args.backbone))
    app_args: dict = {"model": source, "num_cpus": args.num_cpus}
    if "num_replicas" in AppArgs.model_fields:  # the builder of older versions deploys one replica, no option
        app_args["num_replicas"] = args.replicas
        app_args["ingress_replicas"] = args.ingress_replicas
    elif args.replicas != 1:
        print("this version of build_app has no num_replicas: one replica", flush=True)
    x = torch.randn(1, 1, 28, 28).tolist()
    init_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config={"enable_access_log": False})
    url = f"http://127.0.0.1:{args.port}"
    try:
        serve.run(build_app(app_args), name="pareto-ray", route_prefix="/")
        memory = {name: [memory_mib(p) for p in pids] for name, pids in serve_pids().items()}
        records, killed = asyncio.run(drive_failover(url, args.clients, args.seconds, args.kill_at,
                                                     f"ServeReplica:pareto-ray:{args.deployment}", x))
    finally:
        serve.shutdown()
        tmp.cleanup()
    ok = sorted(done for _, done, status, _ in records if status == 200)
    after = [r for r in records if r[1] >= killed]
    failed = [r for r in after if r[2] != 200]
    gaps = np.diff([killed] + [t for t in ok if t >= killed] + [max(r[1] for r in records)])
    by_status: dict[int, int] = {}
    for r in after:
        by_status[r[2]] = by_status.get(r[2], 0) + 1
    before_ok = [done for sent, done, status, _ in records if status == 200 and done < killed]
    summary = {
        "deployment_killed": args.deployment, "model_replicas": args.replicas if "num_replicas" in app_args else 1,
        "clients": args.clients, "requests": len(records), "rps_before_kill": round(len(before_ok) / killed, 1),
        "after_kill_by_status": by_status, "after_kill_5xx": sum(1 for r in failed if 500 <= r[2] < 600),
        "after_kill_non_json_errors": sum(1 for r in failed if r[2] > 0 and not r[3]),
        "after_kill_transport_errors": sum(1 for r in failed if r[2] == -1),
        "outage_s": round(float(gaps.max()), 2),
        "slowest_answer_after_kill_s": round(max(done - sent for sent, done, _, _ in after), 2),
        "healthz_failures": sum(1 for r in health_records if r[2] != 200),
        "healthz_slowest_s": round(max(done - sent for sent, done, _ in health_records), 2),
        "rss_pss_mib_before_kill": memory,
    }
    print(json.dumps(summary))


# ----------------------------------------------------------------------------- fuzz

def bad_requests(rng: np.random.Generator) -> list[tuple[str, bytes, str]]:
    """Malformed ``/v1/predict`` requests (name, body, content type) of every input form."""
    import base64
    import io
    import struct
    import zlib

    from pareto_ray.inputs_spec import encode_png

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    def js(**body) -> bytes:
        return json.dumps({"preference": [0.5, 0.5], **body}).encode()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    def upload(*parts: tuple[str, bytes]) -> tuple[bytes, str]:
        out = b"".join(f'--bnd\r\nContent-Disposition: form-data; name="{n}"; filename="f"\r\n\r\n'.encode() + c
                       + b"\r\n" for n, c in parts)
        return out + b"--bnd--\r\n", "multipart/form-data; boundary=bnd"

    png = encode_png(rng.integers(0, 256, (1, 28, 28), dtype=np.uint8))
    huge = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10_000, 10_000, 8, 2, 0, 0, 0)) + chunk(
        b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    npy = io.BytesIO()
    np.save(npy, np.zeros((1, 3, 28, 28), np.float32))
    noise = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    j = "application/json"
    return [
        ("truncated png", js(images=[b64(png[: int(rng.integers(8, len(png) - 1))])]), j),
        ("noise image", js(images=[b64(noise)]), j),
        ("corrupt base64", js(images=[b64(png)[:17] + "*"]), j),
        ("100-megapixel header", js(images=[b64(huge)]), j),
        ("wrong-shape npy", js(npy=b64(npy.getvalue())), j),
        ("mixed forms", js(images=[b64(png)], inputs=[[[[0.0]]]]), j),
        ("zero-byte upload", *upload(("preference", b"[0.5, 0.5]"), ("images", b""))),
        ("noise upload", *upload(("preference", b"[0.5, 0.5]"), ("images", noise))),
    ]


def fuzz(args: argparse.Namespace) -> None:
    import httpx
    from ray import serve

    if not os.environ.get("PYTHONPATH"):
        sys.path.insert(0, str(REPO))
    from pareto_ray.runtime import init_ray
    from pareto_ray.serving.app import build_app

    tmp = tempfile.TemporaryDirectory()
    source = args.model or str(make_checkpoint(Path(tmp.name) / "ckpt", args.backbone))
    init_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config={"enable_access_log": False})
    url = f"http://127.0.0.1:{args.port}"
    rng = np.random.default_rng(0)
    statuses: dict[int, int] = {}
    unnamed = 0
    try:
        serve.run(build_app({"model": source, "num_replicas": 1, "ingress_replicas": 1}), name="fuzz", route_prefix="/")
        with httpx.Client(base_url=url, timeout=60) as client:
            def send(n: int) -> None:
                nonlocal unnamed
                sent = 0
                while sent < n:
                    for _, body, ctype in bad_requests(rng):
                        r = client.post("/v1/predict", content=body, headers={"content-type": ctype})
                        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                        if r.status_code != 200 and not (r.json().get("error") or {}).get("field"):
                            unnamed += 1
                        sent += 1
            send(50)  # warm-up: imports, first allocations
            statuses.clear()
            before = {name: [memory_mib(p)[0] for p in pids] for name, pids in serve_pids().items()}
            t = time.perf_counter()
            send(args.requests)
            wall = time.perf_counter() - t
            after = {name: [memory_mib(p)[0] for p in pids] for name, pids in serve_pids().items()}
            healthy = client.get("/healthz").status_code == 200
    finally:
        serve.shutdown()
        tmp.cleanup()
    print(json.dumps({"requests": sum(statuses.values()), "by_status": statuses, "errors_without_field": unnamed,
                      "healthz_after": healthy, "seconds": round(wall, 1),
                      "rss_mib_before": {k: v for k, v in before.items() if k.startswith("ServeReplica")},
                      "rss_mib_after": {k: v for k, v in after.items() if k.startswith("ServeReplica")}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part")
    for name in ("load", "rule", "failover", "fuzz"):
        p = sub.add_parser(name)
        p.add_argument("--model", help="checkpoint dir or models:/name/version (default: a random PaLoRA LeNet)")
        p.add_argument("--backbone", default="lenet", choices=list(BACKBONES),
                       help="resnet18: 3×64×64 RGB images (sent as PNG by load), 3 tasks")
    r = sub.choices["rule"]
    r.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    r.add_argument("--repeats", type=int, default=20)
    r.add_argument("--threads", type=int, default=1, help="torch threads (a replica has 1 CPU)")
    ld = sub.choices["load"]
    ld.add_argument("--clients", type=int, nargs="+", default=[16], help="one run per number of concurrent clients")
    ld.add_argument("--requests", type=int, default=40, help="requests per client")
    ld.add_argument("--replicas", type=int, default=1, help="model replicas")
    ld.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per model replica (torch threads follow it)")
    ld.add_argument("--dirichlet-only", action="store_true", help="two-task models: skip the 3-fixed-rays draw")
    ld.add_argument("--inputs-per-request", type=int, default=1)
    ld.add_argument("--max-batch-size", type=int, default=32)
    ld.add_argument("--wait", type=float, default=0.005, help="batch_wait_timeout_s")
    ld.add_argument("--port", type=int, default=8127)
    fo = sub.choices["failover"]
    fo.add_argument("--clients", type=int, default=4)
    fo.add_argument("--seconds", type=float, default=40.0, help="how long the clients post")
    fo.add_argument("--kill-at", type=float, default=10.0, help="when (s) one replica gets SIGKILL")
    fo.add_argument("--deployment", default="ParetoFrontServer", help="whose replica dies (or ParetoFrontIngress)")
    fo.add_argument("--replicas", type=int, default=2, help="model replicas")
    fo.add_argument("--ingress-replicas", type=int, default=2)
    fo.add_argument("--num-cpus", type=float, default=0.5, help="CPUs per model replica")
    fo.add_argument("--port", type=int, default=8128)
    fz = sub.choices["fuzz"]
    fz.add_argument("--requests", type=int, default=1000)
    fz.add_argument("--port", type=int, default=8171)
    args = parser.parse_args()
    if args.part == "fuzz":
        fuzz(args)
    elif args.part == "rule":
        rule(args)
    elif args.part == "failover":
        failover(args)
    else:
        if args.part is None:
            args = parser.parse_args(["load", *sys.argv[1:]])
        load(args)


if __name__ == "__main__":
    main()
