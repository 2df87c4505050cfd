"""Benchmark the continuous Pareto-front methods and write ``docs/results.md``.

Three parts, each stored in ``docs/results.json`` so they can run separately:

* ``paper`` — the papers' protocol (``data.composition: paper``): every method with its paper config
  (``jobs/configs/paper/<dataset>/<method>.yaml``), test HV of accuracies at the config's grid (11 rays;
  66 for 3 tasks), validation HV, trainable parameters, Δp%, seconds per epoch and wall time.  Each run
  is written as it finishes and a rerun skips finished runs, so an interrupted benchmark resumes.
* ``mnist`` — the permuted protocol of the first benchmark (pareto-ray's own composition, each source
  digit used once): LS, PaLoRA, LORPMAN, PHN-LoRA, PaMaL, COSMOS and PHN on
  MultiMNIST and MultiFashion (``../shared/data``), LeNet, batch 256, Adam
  1e-3, each method with its paper's settings (the method configs' defaults).
  Trains in this process with the shared loop (no Ray: wall time per epoch
  should measure the method, not the cluster) and scores the test front at
  the 11-ray grid: accuracy HV (reference 0), trainable parameters, Δp% over
  the plain LeNet, seconds per epoch.
* ``toy`` — every method on every problem with a known front
  (``pareto_ray.toy``): IGD relative to the front's diameter and HV ratio.

    python benchmarks/methods.py paper --datasets multimnist multifashion --seeds 0 1 2
    python benchmarks/methods.py paper --datasets multimnist3 --methods palora lorpman pamal
    python benchmarks/methods.py mnist --epochs 10 --seeds 0 1 2
    python benchmarks/methods.py toy
    python benchmarks/methods.py report          # rewrite docs/results.md from docs/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pareto_ray.config import load_config  # noqa: E402
from pareto_ray.data import load_dataset  # noqa: E402
from pareto_ray.fronts import evaluate_front, front_arrays, front_metrics  # noqa: E402
from pareto_ray.loop import build_optimizer, train_epoch  # noqa: E402
from pareto_ray.methods import build_model  # noqa: E402
from pareto_ray.metrics import parameter_overhead  # noqa: E402
from pareto_ray.preferences import simplex_grid  # noqa: E402

METHODS = ["ls", "palora", "lorpman", "phn_lora", "pamal", "cosmos", "phn", "mgda", "pareto_mtl"]
LABELS = {"ls": "LS", "palora": "PaLoRA", "lorpman": "LORPMAN", "phn_lora": "PHN-LoRA", "pamal": "PaMaL",
          "cosmos": "COSMOS", "phn": "PHN", "mgda": "MGDA", "pareto_mtl": "Pareto MTL (K=5)"}
DATASETS = {"multimnist": "MultiMNIST", "multifashion": "MultiFashion"}
RESULTS = REPO / "docs" / "results.json"
REPORT = REPO / "docs" / "results.md"
NOTES = "## Notes"  # from this heading on, docs/results.md is hand-written and survives a rerun


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, " \
           f"{torch.get_num_threads()} threads"


def load_results() -> dict[str, Any]:
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for part in ("paper", "mnist", "toy", "meta"):
        results.setdefault(part, {})
    return results


def save_results(results: dict[str, Any], part: str) -> None:
    """Write ``results[part]`` (and its meta) into the file, keeping what another part wrote meanwhile."""
    merged = load_results()
    merged[part].update(results[part])  # by key: two benchmark processes (say one per seed) can share the file
    if part in results.get("meta", {}):
        merged.setdefault("meta", {}).setdefault(part, {}).update(results["meta"][part])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(f".{part}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=1))
    tmp.replace(RESULTS)
    results.update({k: v for k, v in merged.items() if k != "meta"})  # the report sees the other processes' runs
    results.setdefault("meta", {}).update(merged.get("meta", {}))


#: A marker per run being trained (its process id inside), so two benchmark processes never train one key twice.
RUNNING = Path(tempfile.gettempdir()) / "pareto-ray-benchmark-running"


def _holder(marker: Path) -> int | None:
    """The live process id in ``marker``, else None (no marker, or its process died)."""
    try:
        pid = int(marker.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


@contextmanager
def claimed(key: str) -> Iterator[bool]:
    """Whether this process may train ``key``: no other live process holds its marker (a dead one's is taken)."""
    RUNNING.mkdir(parents=True, exist_ok=True)
    marker = RUNNING / (key.replace("/", "__") + ".pid")
    tmp = marker.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(str(os.getpid()))
    try:
        os.link(tmp, marker)  # atomic: fails if the marker exists
    except FileExistsError:
        if _holder(marker) is not None:
            tmp.unlink()
            yield False  # another live benchmark process is training this key
            return
        tmp.replace(marker)  # its process died: take the key over
    tmp.unlink(missing_ok=True)
    try:
        yield True
    finally:
        if _holder(marker) == os.getpid():
            marker.unlink(missing_ok=True)


def run_mnist(dataset: str, method: str, seed: int, epochs: int, max_train: int | None, max_eval: int | None,
              root: str) -> dict[str, Any]:
    overrides = [f"data.dataset={dataset}", f"data.root={root}", f"method.name={method}", f"seed={seed}",
                 f"train.epochs={epochs}", "train.batch_size=256", "train.lr=0.001", "ray.num_workers=1"]
    if max_train:
        overrides.append(f"data.max_train={max_train}")
    if max_eval:
        overrides.append(f"data.max_eval={max_eval}")
    cfg = load_config(None, overrides)
    data = load_dataset(cfg.data)
    torch.manual_seed(seed)
    meth, model, reference = build_model(cfg.model, cfg.method, data.tasks, data.input_shape)
    optimizer = build_optimizer(model, "adam", cfg.train.lr)
    epoch_seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        train_epoch(model, meth, optimizer, data.train, epoch, epochs, cfg.train.batch_size, seed)
        epoch_seconds.append(time.perf_counter() - start)
    rays = meth.eval_rays(simplex_grid(data.num_tasks))
    table = evaluate_front(model, data.test, rays, 1000)
    params, overhead = parameter_overhead(model, reference)
    _, acc, _ = front_arrays(table)
    return {"dataset": dataset, "method": method, "seed": seed, "epochs": epochs, "train_samples": len(data.train),
            "test_samples": len(data.test), **{f"test_{k}": v for k, v in front_metrics(table).items()},
            "params": params, "delta_params_pct": overhead, "seconds_per_epoch": float(np.mean(epoch_seconds)),
            "front": acc.tolist()}


def cmd_mnist(args: argparse.Namespace) -> None:
    results = load_results()
    started = time.perf_counter()
    for dataset in args.datasets:
        max_train = args.max_train.get(dataset)
        for seed in args.seeds:
            for method in args.methods:
                rec = run_mnist(dataset, method, seed, args.epochs, max_train, args.max_eval, args.root)
                results["mnist"][f"{dataset}/{method}/{seed}"] = rec
                save_results(results, "mnist")
                print(f"{dataset:13s} {method:9s} seed {seed}: HV {rec['test_hv']:.4f}  "
                      f"{rec['seconds_per_epoch']:.1f} s/epoch  params {rec['params']}", flush=True)
    for dataset in args.datasets:  # the setting each dataset's rows were produced with
        results["meta"].setdefault("mnist", {})[dataset] = {
            "command": " ".join(sys.argv), "machine": machine(), "wall_minutes": (time.perf_counter() - started) / 60,
            "epochs": args.epochs, "seeds": args.seeds, "max_train": args.max_train.get(dataset),
            "max_eval": args.max_eval}
    save_results(results, "mnist")
    write_report(results)


PAPER_CONFIGS = REPO / "jobs" / "configs" / "paper"
PAPER_DATASETS = {"multimnist": "MultiMNIST", "multifashion": "MultiFashion",
                  "multi_fashion_mnist": "Multi-(Fashion+MNIST)", "multimnist3": "MultiMNIST-3"}


def run_paper(dataset: str, method: str, seed: int, root: str, epochs: int | None = None,
              sets: list[str] | None = None) -> dict[str, Any]:
    """One run of ``jobs/configs/paper/<dataset>/<method>.yaml`` in this process (no Ray), scored on val and test.

    ``sets`` are ``key=value`` overrides of the paper config (an ablation: reported apart, selected on validation).
    """
    overrides = [f"data.root={root}", f"seed={seed}", "ray.num_workers=1"] + ([f"train.epochs={epochs}"] if epochs else [])
    overrides += sets or []
    cfg = load_config(PAPER_CONFIGS / dataset / f"{method}.yaml", overrides)
    data = load_dataset(cfg.data)
    torch.manual_seed(seed)
    meth, model, reference = build_model(cfg.model, cfg.method, data.tasks, data.input_shape)
    optimizer = build_optimizer(model, cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    started, epoch_seconds = time.perf_counter(), []
    for epoch in range(cfg.train.epochs):
        t = time.perf_counter()
        train_epoch(model, meth, optimizer, data.train, epoch, cfg.train.epochs, cfg.train.batch_size, seed,
                    tasks=data.tasks)
        epoch_seconds.append(time.perf_counter() - t)
    rays = meth.eval_rays(simplex_grid(data.num_tasks, cfg.eval.grid_points))
    val = front_metrics(evaluate_front(model, data.val, rays, 1000, tasks=data.tasks))
    table = evaluate_front(model, data.test, rays, 1000, tasks=data.tasks)
    test = front_metrics(table)
    params, overhead = parameter_overhead(model, reference)
    _, acc, _ = front_arrays(table)
    return {"dataset": dataset, "method": method, "seed": seed, "epochs": cfg.train.epochs,
            "train_samples": len(data.train), "val_samples": len(data.val), "test_samples": len(data.test),
            "val_hv": val["hv"], **{f"test_{k}": v for k, v in test.items()}, "params": params,
            "delta_params_pct": overhead, "seconds_per_epoch": float(np.mean(epoch_seconds)),
            "wall_seconds": time.perf_counter() - started, "front": acc.tolist(),
            "config": f"jobs/configs/paper/{dataset}/{method}.yaml", "set": sets or []}


def cmd_paper(args: argparse.Namespace) -> None:
    results = load_results()
    for dataset in args.datasets:
        for seed in args.seeds:
            for method in args.methods:
                key = f"{dataset}/{method}/{seed}" + (f"/{','.join(args.set)}" if args.set else "")
                if key in load_results()["paper"] and not args.rerun:
                    continue  # finished before (here or in another process): a benchmark resumes where it stopped
                with claimed(key) as mine:
                    if not mine:
                        print(f"{key}: another benchmark process is training it, skipped", flush=True)
                        continue
                    rec = run_paper(dataset, method, seed, args.root, args.epochs, args.set)
                results["paper"][key] = rec
                results["meta"].setdefault("paper", {})[key] = {"command": " ".join(sys.argv), "machine": machine()}
                save_results(results, "paper")
                print(f"{dataset:20s} {method:10s} seed {seed}: val HV {rec['val_hv']:.4f}  test HV {rec['test_hv']:.4f}  "
                      f"{rec['wall_seconds'] / 60:.1f} min  params {rec['params']}", flush=True)
    write_report(results)


TOY_RUNS: list[tuple[str, str, list[str]]] = [
    *[(m, p, []) for p in ("toy", "toy_scaled", "concave", "zdt1", "zdt2") for m in METHODS[1:]],
    ("pamal", "toy_scaled", ["balancing=gradient"]), ("pamal", "toy_scaled", ["balancing=loss"]),
    *[(m, p, ["solver=epo"]) for p in ("concave", "zdt1", "zdt2") for m in ("phn_lora", "phn")],
]


def cmd_toy(args: argparse.Namespace) -> None:
    from pareto_ray.toy import dent_points, get_problem, run_toy

    results = load_results()
    started = time.perf_counter()
    for method, problem, extra in TOY_RUNS:
        res = run_toy(method, problem, [f"seed={args.seed}", *extra])
        dent = len(dent_points(np.asarray(res["points"]), get_problem(problem).front()))
        key = f"{problem}/{method}{'/' + ','.join(extra) if extra else ''}"
        results["toy"][key] = {k: v for k, v in res.items() if k not in ("rays", "points")} | {"set": extra,
                                                                                             "dent_points": dent}
        save_results(results, "toy")
        print(f"{key:40s} IGD/diam {res['igd_relative']:.4f}  HV ratio {res['hv_ratio']:.4f}  dent {dent}", flush=True)
    results["meta"]["toy"] = {"command": " ".join(sys.argv), "machine": machine(),
                              "wall_minutes": (time.perf_counter() - started) / 60}
    save_results(results, "toy")
    write_report(results)


# --- report --------------------------------------------------------------------------------------------------

def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def plot_fronts(records: list[dict[str, Any]], dataset: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for i, method in enumerate(METHODS):
        recs = sorted((r for r in records if r["method"] == method), key=lambda r: r["seed"])
        if not recs:
            continue
        front = np.asarray(recs[0]["front"])
        single = method in ("ls", "mgda")  # one model, one point
        style = "*" if single else "o-"
        ax.plot(front[:, 0], front[:, 1], style, ms=9 if single else 4, color=f"C{i}",
                label=f"{LABELS[method]} (seed {recs[0]['seed']})")
    ax.set_xlabel("task 1 accuracy (test)")
    ax.set_ylabel("task 2 accuracy (test)")
    ax.set_title(f"{DATASETS[dataset]}: test fronts, 11 rays")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def paper_report(records: list[dict[str, Any]]) -> list[str]:
    lines = ["## The papers' protocol", "",
             "Every method with its paper config (`jobs/configs/paper/<dataset>/<method>.yaml`: the PaMaL/PaLoRA "
             "composition — 60,000 pairs drawn with replacement, 50,000 train / 10,000 validation, 10,000 test, no "
             "normalization; LeNet, Adam 1e-3, batch 256; each method's epochs and knobs from its paper, the config "
             "names the source of every value). Trained in one process with the shared loop (no Ray), the threads the "
             "command gives, on a machine shared with other jobs (wall times are noisy). HV "
             "of test accuracies at the config's grid (11 rays; 66 for MultiMNIST-3), reference 0; mean ± std over "
             "seeds (the training seed; the composition is fixed by data.seed = 0, as the papers keep one dataset). "
             "`../shared/data`'s MNIST is a 10,000-digit subset (8,000 train / 2,000 test digits, composed with "
             "replacement), so MultiMNIST numbers are not comparable with the papers' full-MNIST ones; "
             "Fashion-MNIST is complete.", "",
             "Command: `python benchmarks/methods.py paper --datasets <dataset> --methods <methods> --seeds <seeds>`", ""]
    every, ablations = records, [r for r in records if r.get("set")]
    records = [r for r in records if not r.get("set")]
    for dataset, title in PAPER_DATASETS.items():
        recs = [r for r in records if r["dataset"] == dataset]
        if not recs:
            continue
        lines += [f"### {title}", "",
                  "| method | seeds | test HV | val HV | best acc 1 | best acc 2 | non-dominated | trainable params | Δp% "
                  "| epochs | s / epoch | wall min |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for method in METHODS:
            mr = sorted((r for r in recs if r["method"] == method), key=lambda r: r["seed"])
            if not mr:
                continue
            lines.append(f"| {LABELS[method]} | {','.join(str(r['seed']) for r in mr)} "
                         f"| {_fmt([r['test_hv'] for r in mr])} | {_fmt([r['val_hv'] for r in mr])} "
                         f"| {np.mean([r['test_acc_1_max'] for r in mr]):.4f} "
                         f"| {np.mean([r['test_acc_2_max'] for r in mr]):.4f} "
                         f"| {np.mean([r['test_nondominated'] for r in mr]):.1f} "
                         f"| {mr[0]['params']:,} | {mr[0]['delta_params_pct']:.1f} | {mr[0]['epochs']} "
                         f"| {np.mean([r['seconds_per_epoch'] for r in mr]):.1f} "
                         f"| {np.mean([r['wall_seconds'] for r in mr]) / 60:.1f} |")
        lines.append("")
    if ablations:
        lines += ["### Ablations of the paper configs", "",
                  "`--set` overrides one config value (`python benchmarks/methods.py paper ... --set key=value`). "
                  "A setting is chosen on **validation** HV only; the test HV is shown for the record, never used to "
                  "choose.", "",
                  "| dataset | method | set | seeds | val HV | test HV | non-dominated | wall min |",
                  "|---|---|---|---|---|---|---|---|"]
        base = {(r["dataset"], r["method"]) for r in ablations}
        for dataset, method in sorted(base):
            variants = sorted((r for r in every if (r["dataset"], r["method"]) == (dataset, method)),
                              key=lambda r: bool(r.get("set")))  # the config's own row first
            for sets in dict.fromkeys(tuple(r.get("set", [])) for r in variants):
                mr = sorted((r for r in variants if tuple(r.get("set", [])) == sets), key=lambda r: r["seed"])
                lines.append(f"| {PAPER_DATASETS[dataset]} | {LABELS[method]} | {', '.join(sets) or 'the config'} "
                             f"| {','.join(str(r['seed']) for r in mr)} | {_fmt([r['val_hv'] for r in mr])} "
                             f"| {_fmt([r['test_hv'] for r in mr])} "
                             f"| {np.mean([r['test_nondominated'] for r in mr]):.1f} "
                             f"| {np.mean([r['wall_seconds'] for r in mr]) / 60:.1f} |")
        lines.append("")
    return lines


def write_report(results: dict[str, Any]) -> None:
    lines = ["# Benchmark results", "",
             "Tables written by `benchmarks/methods.py` (rerun it rather than editing them; the notes at the end "
             "are hand-written and kept). Raw numbers: `docs/results.json`.", ""]
    meta = results.get("meta", {})
    paper = list(results.get("paper", {}).values())
    if paper:
        lines += paper_report(paper)
    mnist = list(results.get("mnist", {}).values())
    if mnist:
        lines += ["## The permuted protocol (before the papers' composition; kept for comparison)", "",
                  "pareto-ray's first composition: each source digit used once (7,200 training composites), MNIST "
                  "normalization; not the papers' setting (see the table above).", "",
                  "LeNet, batch 256, Adam 1e-3, every method with its paper's settings (the defaults of its config). "
                  "HV of test accuracies at the 11-ray grid, reference 0, mean ± std over seeds; Δp% is over the "
                  "plain multi-task LeNet (27,450 parameters). The machine is shared with other jobs, so wall times "
                  "are noisy.", ""]
        for dataset, title in DATASETS.items():
            recs = [r for r in mnist if r["dataset"] == dataset]
            if not recs:
                continue
            m = meta.get("mnist", {}).get(dataset, {})
            n_train, n_test = recs[0]["train_samples"], recs[0]["test_samples"]
            lines += [f"### {title} ({n_train} training, {n_test} test composites)", "",
                      f"Command: `{m.get('command', '?')}`  ", f"Machine: {m.get('machine', '?')}; "
                      f"{m.get('epochs')} epochs, seeds {m.get('seeds')}; the whole command took "
                      f"{m.get('wall_minutes', 0):.1f} min.", "",
                      "| method | test HV | best acc 1 | best acc 2 | non-dominated | trainable params | Δp% | s / epoch |",
                      "|---|---|---|---|---|---|---|---|"]
            for method in METHODS:
                mr = [r for r in recs if r["method"] == method]
                if not mr:
                    continue
                lines.append(f"| {LABELS[method]} | {_fmt([r['test_hv'] for r in mr])} "
                             f"| {np.mean([r['test_acc_1_max'] for r in mr]):.4f} "
                             f"| {np.mean([r['test_acc_2_max'] for r in mr]):.4f} "
                             f"| {np.mean([r['test_nondominated'] for r in mr]):.1f} "
                             f"| {mr[0]['params']:,} | {mr[0]['delta_params_pct']:.1f} "
                             f"| {np.mean([r['seconds_per_epoch'] for r in mr]):.1f} |")
            plot = plot_fronts(recs, dataset, REPO / "docs" / f"results_{dataset}.png")
            lines += ["", f"![{title} fronts]({plot.name})", ""]
    toy = results.get("toy", {})
    if toy:
        m = meta.get("toy", {})
        lines += ["## Problems with known fronts", "",
                  f"Command: `{m.get('command', '?')}`  ", f"Machine: {m.get('machine', '?')}; total "
                  f"{m.get('wall_minutes', 0):.1f} min.  ",
                  "Each method's default settings on `pareto-ray toy` (seed 0, 51 evaluation rays): IGD relative "
                  "to the true front's diameter (lower is better), HV ratio to the true front's HV (reference: "
                  "the front's nadir + 10% of its range), and the number of points strictly inside the dent of "
                  "the convex hull (only meaningful on the non-convex fronts: concave, zdt2).", "",
                  "| problem | method | settings | IGD / diameter | HV ratio | non-dominated | dent points | s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in toy.values():
            lines.append(f"| {r['problem']} | {LABELS[r['method']]} | {' '.join(r['set']) or 'default'} "
                         f"| {r['igd_relative']:.4f} | {r['hv_ratio']:.4f} | {int(r['nondominated'])} "
                         f"| {r['dent_points']} | {r['seconds']:.0f} |")
        lines.append("")
    if REPORT.is_file() and NOTES in REPORT.read_text():  # the hand-written analysis below the tables is kept
        lines += [NOTES + REPORT.read_text().split(NOTES, 1)[1].rstrip("\n")]
    REPORT.write_text("\n".join(lines) + "\n")
    print(f"wrote {REPORT}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    pp = sub.add_parser("paper")
    pp.add_argument("--datasets", nargs="+", default=["multimnist", "multifashion"], choices=list(PAPER_DATASETS))
    pp.add_argument("--methods", nargs="+", default=["ls", "palora", "lorpman", "phn_lora", "pamal"], choices=METHODS)
    pp.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    pp.add_argument("--epochs", type=int, default=None, help="override every config's epochs (quick checks only)")
    pp.add_argument("--rerun", action="store_true", help="train runs already in docs/results.json again")
    pp.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="override the paper configs (an ablation, e.g. method.alpha=2: kept and reported apart)")
    pp.add_argument("--root", default=str(REPO.parent / "shared" / "data"))
    pp.add_argument("--threads", type=int, default=2)
    mn = sub.add_parser("mnist")
    mn.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    mn.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    mn.add_argument("--seeds", nargs="+", type=int, default=[0])
    mn.add_argument("--epochs", type=int, default=10)
    mn.add_argument("--max-train", type=json.loads, default={}, help='JSON {"dataset": n}: training subset per dataset')
    mn.add_argument("--max-eval", type=int, default=None)
    mn.add_argument("--root", default=str(REPO.parent / "shared" / "data"))
    mn.add_argument("--threads", type=int, default=2)
    toy = sub.add_parser("toy")
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--threads", type=int, default=1)
    sub.add_parser("report")
    args = parser.parse_args()
    if hasattr(args, "threads"):
        torch.set_num_threads(args.threads)
    {"paper": cmd_paper, "mnist": cmd_mnist, "toy": cmd_toy,
     "report": lambda a: write_report(load_results())}[args.part](args)


if __name__ == "__main__":
    main()
