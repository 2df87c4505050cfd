"""Scale benchmark: parameters, peak memory and step time per method on synthetic data of the papers' shapes.

Everything is measured in one run and printed as Markdown tables (``--markdown FILE`` also writes them):

1. **Parameters** (exact, counted on the ``meta`` device, so no weights are allocated): trainable parameters
   of each method's paper config (``jobs/configs/paper/<dataset>/<method>.yaml``) and the overhead over LS,
   Δp% = (P − P_LS) / P_LS, on every dataset's network — SegNet on CityScapes (2 tasks, 3×128×256) and NYUv2
   (3 tasks, 3×288×384) next to PaLoRA's 4.2 % / 6.3 % and PaMaL's 23.8× / 31.7× more — plus torchvision's
   ``resnet18`` and ``resnet18_mtl`` at 3×64×64 with 3 and 40 tasks.
2. **Step** on ``resnet18`` (torchvision's), 3 tasks at 3×64×64, Adam (the setting measured before issue 16),
   per method: seconds per optimizer step and its ratio to LS; PaLoRA M = 5, r = 1 with merged weights against
   the target ≤ 1.15 × (5 × LS) on CPU, and per-sample; bf16 against fp32.  Peak memory: on CUDA
   ``torch.cuda.max_memory_allocated``; on CPU the peak RSS (``ru_maxrss``) of a fresh subprocess per row,
   minus the peak RSS of an idle subprocess that imported the same modules (the baseline).
3. **Throughput per dataset/backbone** (issue 15): LS and the dataset's paper PaLoRA config at the paper's
   batch size on its input shape — Census MLP (468 inputs), UTKFace and CelebA ResNet-18 (64×64),
   CIFAR-100 VGG-16 (32×32, 20 tasks), CityScapes and NYUv2 SegNet, SARCOS MLP (21 → 7): samples/s.
4. **Streaming** (``data.streaming``): one worker's samples/s fed from memory and from Ray Data, on the
   embedded MultiDigits data (``streaming_table``).

Synthetic inputs and targets of each task kind (class ids, binary labels, values, masks, depth, normals);
the step is the training loop's (``loop.optimizer_step``).  On a small CPU keep ``--batch`` and ``--steps``
small: the defaults (batch 64 for the step table, 1 warm-up and 3 timed steps, 1 for SegNet) run in a few
minutes on 2 cores.

    python benchmarks/scale.py [--device cpu|cuda] [--threads 2] [--batch 64] [--steps 3] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "jobs" / "configs" / "paper"
METHODS = ["ls", "palora", "lorpman", "pamal", "phn_lora", "cosmos", "phn"]

#: dataset → (input shape, paper config folder)
SHAPES: dict[str, tuple[int, ...]] = {
    "census": (468,), "utkface": (3, 64, 64), "celeba": (3, 64, 64), "cifar100": (3, 32, 32),
    "cityscapes": (3, 128, 256), "nyuv2": (3, 288, 384), "sarcos": (21,),
}


def dataset_tasks(dataset: str, num_tasks: int | None = None) -> list:
    """The dataset's task list as its loader declares it (no files read); ``num_tasks`` for the ResNet rows."""
    from pareto_ray.data import census, cityscapes, nyuv2
    from pareto_ray.tasks import Task

    if dataset == "cityscapes":
        return cityscapes.tasks_of()
    if dataset == "nyuv2":
        return nyuv2.tasks_of()
    if dataset == "census":
        from pareto_ray.config import DataConfig
        return census.tasks_of(DataConfig(dataset="census"))
    if dataset == "utkface":
        return [Task("age", "regression", loss="huber", huber_delta=1.0), Task("gender", "classification", 2),
                Task("race", "classification", 5)]
    if dataset == "celeba":
        return [Task(f"attribute_{t + 1}", "binary") for t in range(num_tasks or 40)]
    if dataset == "cifar100":
        return [Task(f"superclass_{t + 1}", "classification", 5) for t in range(20)]
    if dataset == "sarcos":
        return [Task(f"torque_{j + 1}", "regression", loss="mse") for j in range(7)]
    raise ValueError(dataset)


def synthetic_batch(tasks: list, shape: tuple[int, ...], n: int, device: str, seed: int = 0) -> tuple[Any, list]:
    """Random inputs ``[n, *shape]`` and one target tensor per task, of each task kind's form."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    hw = shape[1:]
    targets = []
    for task in tasks:
        kind = task.kind
        if kind == "classification":
            y = torch.randint(0, task.outputs, (n,), generator=g)
        elif kind == "binary":
            y = torch.randint(0, 2, (n,), generator=g).float()
        elif kind == "regression":
            y = torch.randn(n, generator=g)
        elif kind == "segmentation":
            y = torch.randint(0, task.outputs, (n, *hw), generator=g)
        elif kind == "depth":
            y = torch.rand(n, 1, *hw, generator=g) + 0.1
        elif kind == "normals":
            y = torch.nn.functional.normalize(torch.randn(n, 3, *hw, generator=g), dim=1)
        else:
            raise ValueError(f"no synthetic targets for task kind {kind!r}")
        targets.append(y.to(device))
    return x.to(device), targets


def paper_config(dataset: str, method: str, overrides: list[str] | None = None):
    from pareto_ray.config import load_config
    return load_config(PAPER / dataset / f"{method}.yaml", overrides)


# ---------------------------------------------------------------------------------------------- parameters


def count_parameters(dataset: str, method: str, backbone: str | None = None, num_tasks: int | None = None) -> int:
    """Trainable parameters of a paper config's model, built on the meta device (exact, nothing allocated)."""
    import torch

    from pareto_ray.methods import build_model

    cfg = paper_config(dataset, method)
    model_cfg = cfg.model if backbone is None else cfg.model.model_copy(update={"backbone": backbone, "weights": None})
    with torch.device("meta"):
        _, model, _ = build_model(model_cfg, cfg.method, dataset_tasks(dataset, num_tasks), SHAPES[dataset])
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_table() -> list[str]:
    rows = [("CityScapes SegNet, 2 tasks", "cityscapes", None, None), ("NYUv2 SegNet, 3 tasks", "nyuv2", None, None),
            ("UTKFace resnet18_mtl, 3 tasks", "utkface", None, None), ("resnet18 (torchvision), 3 tasks", "utkface",
                                                                       "resnet18", None),
            ("CelebA resnet18_mtl, 40 tasks", "celeba", None, 40), ("resnet18 (torchvision), 40 tasks", "celeba",
                                                                    "resnet18", 40),
            ("CIFAR-100 VGG-16, 20 tasks", "cifar100", None, None), ("Census MLP, 2 tasks", "census", None, None),
            ("SARCOS MLP, 7 tasks", "sarcos", None, None)]
    lines = ["| network (paper configs) | LS params | " + " | ".join(f"{m} Δp%" for m in METHODS[1:]) + " |",
             "|---|---:|" + "---:|" * (len(METHODS) - 1)]
    ratios = []
    for label, dataset, backbone, tasks in rows:
        counts = {m: count_parameters(dataset, m, backbone, tasks) for m in METHODS}
        ls = counts["ls"]
        cells = [f"{100 * (counts[m] - ls) / ls:.1f}" for m in METHODS[1:]]
        lines.append(f"| {label} | {ls:,} | " + " | ".join(cells) + " |")
        if dataset in ("cityscapes", "nyuv2") and backbone is None:
            palora, pamal = counts["palora"] - ls, counts["pamal"] - ls
            ratios.append(f"{label}: PaLoRA (r = 4) Δp = {100 * palora / ls:.2f} % (paper "
                          f"{'4.2' if dataset == 'cityscapes' else '6.3'} %), PaMaL Δp = {100 * pamal / ls:.1f} % = "
                          f"{pamal / palora:.1f}× PaLoRA's (paper {'23.8' if dataset == 'cityscapes' else '31.7'}×)")
    return lines + [""] + [f"- {r}" for r in ratios]


# ---------------------------------------------------------------------------------------------- steps (child)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: build one model, take warm-up + timed steps, report times and peak memory."""
    import resource

    import torch

    from pareto_ray.loop import build_optimizer, check_step, global_task_losses, grad_scaler, optimizer_step
    from pareto_ray.methods import build_model

    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    if spec.get("idle"):
        return {"rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    torch.manual_seed(0)
    cfg = paper_config(spec["dataset"], spec["method"], spec.get("overrides"))
    tasks = dataset_tasks(spec["dataset"], spec.get("num_tasks"))
    shape = SHAPES[spec["dataset"]]
    model_cfg = cfg.model if spec.get("backbone") is None else cfg.model.model_copy(
        update={"backbone": spec["backbone"], "weights": None})
    method, model, _ = build_model(model_cfg, cfg.method, tasks, shape)
    model.to(device)
    optimizer = build_optimizer(model, cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    batch = spec.get("batch") or cfg.train.batch_size
    x, y = synthetic_batch(tasks, shape, batch, device)
    precision, per_sample = spec.get("precision", "fp32"), spec.get("forward") == "per_sample"
    check_step(method, precision, 1, device)
    criterion, scaler = global_task_losses(tasks), grad_scaler(precision, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss, _ = optimizer_step(model, method, optimizer, [(x, y)], i / (spec["warmup"] + spec["steps"]), per_sample,
                                 criterion, precision, scaler)
        float(loss)  # the step's end (a sync on CUDA, so the time is the step's)
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - start)
    out = {"step_s": sorted(times)[len(times) // 2], "batch": batch,
           "rays": int(method.train_rays(0.5).shape[0]),
           "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    if device == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    return out


def run_child(spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """One measurement in a fresh subprocess (its peak RSS is its own); ``timeout`` seconds at most."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                              env=env, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- tables


def step_table(args: argparse.Namespace) -> list[str]:
    base = {"device": args.device, "threads": args.threads, "warmup": 1, "steps": args.steps, "dataset": "utkface",
            "backbone": "resnet18", "batch": args.batch}
    palora5 = ["method.rank=1", "method.rays_per_step=5"]
    rows = [("LS", {"method": "ls"}), ("PaLoRA M=5 r=1 merged", {"method": "palora", "overrides": palora5,
                                                                  "forward": "merged"}),
            ("PaLoRA M=5 r=1 per-sample", {"method": "palora", "overrides": palora5, "forward": "per_sample"}),
            ("LORPMAN", {"method": "lorpman"}), ("PaMaL", {"method": "pamal"}), ("PHN-LoRA", {"method": "phn_lora"}),
            ("COSMOS", {"method": "cosmos"}), ("PHN (chunked)", {"method": "phn"}),
            ("LS bf16", {"method": "ls", "precision": "bf16"}),
            ("PaLoRA M=5 r=1 merged bf16", {"method": "palora", "overrides": palora5, "forward": "merged",
                                            "precision": "bf16"})]
    idle = run_child({**base, "idle": True})
    results = {}
    for label, extra in rows:
        results[label] = run_child({**base, **extra}, args.timeout)
        print(f"  {label}: {results[label]}", file=sys.stderr, flush=True)
    ls = results["LS"]
    cuda = args.device == "cuda"
    mem_of = (lambda r: r["cuda_peak_bytes"] / 2**20) if cuda else (lambda r: (r["rss_kb"] - idle["rss_kb"]) / 1024)
    lines = [f"resnet18 (torchvision), 3 tasks at 3×64×64, batch {args.batch}, Adam, {args.device}, "
             f"{args.threads} threads, median of {args.steps} steps after 1 warm-up; memory: "
             + ("torch.cuda.max_memory_allocated" if cuda else
                f"peak RSS of a fresh process minus an idle one's ({idle['rss_kb'] / 1024:.0f} MiB)"), "",
             "| method | rays/step | s/step | × LS | × (M × LS) | peak MiB | memory × LS |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, _ in rows:
        r = results[label]
        if "error" in r:
            lines.append(f"| {label} | — | error: {r['error'][:80]} | | | | |")
            continue
        ratio = r["step_s"] / ls["step_s"]
        lines.append(f"| {label} | {r['rays']} | {r['step_s']:.3f} | {ratio:.2f} | {ratio / r['rays']:.2f} | "
                     f"{mem_of(r):.0f} | {mem_of(r) / mem_of(ls):.2f} |")
    merged = results["PaLoRA M=5 r=1 merged"]
    notes = []
    if "error" not in merged:
        target = merged["step_s"] / (5 * ls["step_s"])
        notes.append(f"- PaLoRA M=5 merged = {target:.2f} × (5 × LS): target ≤ 1.15 × on CPU "
                     f"{'met' if target <= 1.15 else 'NOT met'}")
    for a, b in (("LS bf16", "LS"), ("PaLoRA M=5 r=1 merged bf16", "PaLoRA M=5 r=1 merged")):
        if "error" not in results[a] and "error" not in results[b]:
            notes.append(f"- {a}: {results[a]['step_s'] / results[b]['step_s']:.2f} × the fp32 step time, "
                         f"{mem_of(results[a]) / mem_of(results[b]):.2f} × its memory")
    return lines + [""] + notes


def throughput_table(args: argparse.Namespace) -> list[str]:
    rows = [("Census MLP (468 inputs)", "census"), ("UTKFace resnet18_mtl 64×64", "utkface"),
            ("CelebA resnet18_mtl 64×64, 40 tasks", "celeba"), ("CIFAR-100 VGG-16 32×32, 20 tasks", "cifar100"),
            ("CityScapes SegNet 128×256", "cityscapes"), ("NYUv2 SegNet 288×384", "nyuv2"),
            ("SARCOS MLP 21→7", "sarcos")]
    batch = "the paper's batch size" if args.throughput_batch is None else f"batch {args.throughput_batch}"
    lines = [f"LS and the dataset's paper PaLoRA config at {batch}, {args.device}, {args.threads} "
             f"threads, median of {args.steps} timed steps after 1 warm-up (SegNet: 1 timed step)", "",
             "| dataset / backbone | params (LS) | batch | LS s/step | LS samples/s | PaLoRA M | PaLoRA s/step | "
             "PaLoRA samples/s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, dataset in rows:
        steps = 1 if dataset in ("cityscapes", "nyuv2") else args.steps
        base = {"device": args.device, "threads": args.threads, "warmup": 1, "steps": steps, "dataset": dataset,
                "batch": args.throughput_batch}
        ls, pal = run_child({**base, "method": "ls"}, args.timeout), run_child({**base, "method": "palora"}, args.timeout)
        print(f"  {label}: LS {ls}, PaLoRA {pal}", file=sys.stderr, flush=True)
        params = count_parameters(dataset, "ls")
        if "error" in ls or "error" in pal:
            lines.append(f"| {label} | {params:,} | | error: {(ls.get('error') or pal.get('error'))[:80]} | | | | |")
            continue
        lines.append(f"| {label} | {params:,} | {ls['batch']} | {ls['step_s']:.3f} | {ls['batch'] / ls['step_s']:.0f} | "
                     f"{pal['rays']} | {pal['step_s']:.3f} | {pal['batch'] / pal['step_s']:.0f} |")
    return lines


def streaming_table(args: argparse.Namespace) -> list[str]:
    """One worker's training samples/s, in memory vs streamed by Ray Data, in this process on a local Ray.

    MultiDigits (the embedded data) with ``data.copies=10`` (about 11.6k training composites), PaLoRA and LS on
    LeNet at batch 256: the same ``loop.train_epoch``, fed from the tensor or from ``training.streaming``'s
    batches (Parquet shards → decode map step → ``iter_torch_batches``), 1 torch thread for the step so that
    Ray Data's tasks have the other CPU (what ``ray.data_cpus`` reserves).  Epoch 1 is the warm-up (Ray Data
    starts its executor then); epochs 2–3 are timed.
    """
    import tempfile

    import ray
    import torch

    from pareto_ray.config import load_config
    from pareto_ray.data import load_dataset
    from pareto_ray.loop import build_optimizer, train_epoch
    from pareto_ray.methods import build_model
    from pareto_ray.runtime import init_ray
    from pareto_ray.training.streaming import epoch_batches, steps_per_epoch, train_dataset

    torch.set_num_threads(1)
    init_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    cache = tempfile.mkdtemp(prefix="scale-stream-")
    lines = ["MultiDigits × 10 copies, LeNet, batch 256, 1 torch thread, 1 CPU for Ray Data, epochs 2–3 of 3", "",
             "| method | samples | in memory samples/s | streamed samples/s | streamed / in memory |",
             "|---|---:|---:|---:|---:|"]
    for name in ("ls", "palora"):
        cfg = load_config(None, ["data.copies=10", f"data.cache_dir={cache}", f"method.name={name}",
                                 "train.batch_size=256", "train.epochs=3"])
        data = load_dataset(cfg.data)
        dataset, rows = train_dataset(cfg.data)
        steps = steps_per_epoch(rows, cfg.train.batch_size, 1)
        rates = {}
        for path in ("memory", "streamed"):
            torch.manual_seed(0)
            method, model, _ = build_model(cfg.model, cfg.method, data.tasks, data.input_shape)
            opt = build_optimizer(model, cfg.train.optimizer, cfg.train.lr)
            seconds = []
            for epoch in range(3):
                streamed = None
                if path == "streamed":
                    streamed = (epoch_batches(dataset.iterator(), cfg.train.batch_size, 1, epoch, 0, "cpu",
                                              data.num_tasks), steps)
                start = time.perf_counter()
                train_epoch(model, method, opt, data.train, epoch, 3, cfg.train.batch_size, 0, tasks=data.tasks,
                            streamed=streamed)
                seconds.append(time.perf_counter() - start)
            rates[path] = 2 * steps * cfg.train.batch_size / sum(seconds[1:])
            print(f"  streaming {name} {path}: epochs {[round(t, 2) for t in seconds]} s", file=sys.stderr, flush=True)
        lines.append(f"| {name} | {rows:,} | {rates['memory']:.0f} | {rates['streamed']:.0f} | "
                     f"{rates['streamed'] / rates['memory']:.2f} |")
    ray.shutdown()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="batch of the step table (the paper's elsewhere)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (after 1 warm-up)")
    parser.add_argument("--throughput-batch", type=int, default=None,
                        help="batch of the throughput table (default: each paper config's)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measured row at most")
    parser.add_argument("--skip", nargs="*", default=[], choices=["params", "step", "throughput", "streaming"])
    parser.add_argument("--markdown", help="also write the tables to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    import torch

    torch.set_num_threads(args.threads)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    out = [f"`python benchmarks/scale.py --device {args.device} --threads {args.threads} --batch {args.batch} "
           f"--steps {args.steps}` (torch {torch.__version__})", ""]
    sections = [("params", "Trainable parameters and Δp% over LS", parameter_table),
                ("step", "Step time and peak memory per method", lambda: step_table(args)),
                ("throughput", "Throughput per dataset / backbone (synthetic data, real shapes)",
                 lambda: throughput_table(args)),
                ("streaming", "Ray Data streaming vs in memory, one worker", lambda: streaming_table(args))]
    for key, title, fn in sections:
        if key in args.skip:
            continue
        section = [f"#### {title}", "", *fn(), ""]
        print("\n".join(section), flush=True)
        out += section
    out.append(f"(measured in one run, {time.perf_counter() - started:.0f} s)")
    print(out[-1])
    text = "\n".join(out)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
