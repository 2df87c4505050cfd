"""Pareto MTL and MGDA on MultiMNIST / MultiFashion, and the wall time of Pareto MTL's
K subproblems trained concurrently on Ray vs one after another.

    python benchmarks/pareto_mtl.py --dataset multimnist --epochs 5 --max-train 10000
    python benchmarks/pareto_mtl.py --dataset multifashion --epochs 5 --max-train 10000 --sequential

Every run goes through ``pareto_ray.training.fit`` (what ``pareto-ray train`` runs): Ray Train,
MLflow (``--workdir``/mlflow.db), checkpoints; LeNet, batch 256, Adam 1e-3 as the other methods'
benchmark.  Prints one JSON line per run: test HV (accuracy, reference 0), non-dominated count,
trainable parameters (Pareto MTL: all K networks), wall seconds; with ``--sequential`` Pareto MTL
is trained a second time with ``method.parallel=1`` and both wall times are printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(overrides: list[str]) -> dict:
    from pareto_ray.checkpoint import load_model, read_state
    from pareto_ray.config import load_config
    from pareto_ray.models import count_parameters
    from pareto_ray.training import fit

    cfg = load_config(None, overrides)
    start = time.perf_counter()
    result = fit(cfg)
    seconds = time.perf_counter() - start
    model, _, _ = load_model(result.checkpoint)
    state = read_state(result.checkpoint)
    return {"method": cfg.method.name, "dataset": cfg.data.dataset, "test_hv": result.test_hv,
            "nondominated": int(result.test_metrics["nondominated"]),
            "acc_1_max": result.test_metrics["acc_1_max"], "acc_2_max": result.test_metrics["acc_2_max"],
            "parameters": count_parameters(model), "wall_seconds": round(seconds, 1),
            "parallel": state.get("parallel"), "train_seconds": state.get("train_seconds"), "run": result.run_name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="multimnist", choices=["multimnist", "multifashion"])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-train", type=int, default=10_000)
    parser.add_argument("--max-eval", type=int, default=2_000)
    parser.add_argument("--subproblems", type=int, default=5, help="Pareto MTL's K")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers per run (DDP)")
    parser.add_argument("--methods", nargs="+", default=["pareto_mtl", "mgda"], choices=["pareto_mtl", "mgda"])
    parser.add_argument("--sequential", action="store_true", help="also train Pareto MTL with method.parallel=1")
    parser.add_argument("--workdir", default="/tmp/pareto-ray-bench", help="ray_results and mlflow.db go here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    common = [f"data.dataset={args.dataset}", f"data.root={args.data_root}", f"data.max_train={args.max_train}",
              f"data.max_eval={args.max_eval}", "model.backbone=lenet", f"train.epochs={args.epochs}",
              "train.batch_size=256", "train.lr=0.001", "train.optimizer=adam", f"ray.num_workers={args.workers}",
              f"ray.storage_path={work / 'ray_results'}", f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
              "mlflow.experiment=bench-pareto-mtl", f"seed={args.seed}"]
    for method in args.methods:
        extra = [f"method.name={method}"]
        if method == "pareto_mtl":
            extra.append(f"method.num_preferences={args.subproblems}")
        row = run(common + extra + [f"name={method}-{args.dataset}-{stamp}"])
        print(json.dumps(row), flush=True)
        if method == "pareto_mtl" and args.sequential:
            seq = run(common + extra + ["method.parallel=1", f"name={method}-{args.dataset}-{stamp}-sequential"])
            print(json.dumps(seq), flush=True)
            print(json.dumps({"subproblems": args.subproblems, "parallel": row["parallel"],
                              "parallel_train_seconds": row["train_seconds"],
                              "sequential_train_seconds": seq["train_seconds"],
                              "speedup": round(seq["train_seconds"] / row["train_seconds"], 2)}), flush=True)


if __name__ == "__main__":
    main()
