"""Training throughput: linear scalarization (1 forward) vs PaLoRA with M rays.

PaLoRA runs its M rays either (a) as M forwards with merged weights, or
(b) as one forward of the batch repeated M times with per-sample λ.
Prints samples/s per ray for each and the ratios, measured in one run.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--batch 256] [--rays 5] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pareto_ray.config import ModelConfig
from pareto_ray.loop import build_optimizer, train_step
from pareto_ray.methods import LSConfig, PaLoRAConfig, build_model


def measure(method_cfg, per_sample: bool, device: str, batch: int, steps: int, backbone: str) -> float:
    """Seconds per training step (median of ``steps`` after warm-up)."""
    torch.manual_seed(0)
    method, model, _ = build_model(ModelConfig(backbone=backbone), method_cfg, 2)
    model.to(device)
    opt = build_optimizer(model, "adam", 1e-3)
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch, 2), device=device)
    times = []
    for i in range(steps + 5):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(model, method, opt, x, y, progress=i / (steps + 5), per_sample=per_sample)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 5:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rays", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--backbone", default="lenet", choices=["lenet", "mlp"])
    args = parser.parse_args()

    palora = PaLoRAConfig(rays_per_step=args.rays)
    ls = measure(LSConfig(), False, args.device, args.batch, args.steps, args.backbone)
    merged = measure(palora, False, args.device, args.batch, args.steps, args.backbone)
    per_sample = measure(palora, True, args.device, args.batch, args.steps, args.backbone)
    rate = {"ls": args.batch / ls, "palora_merged": args.batch * args.rays / merged,
            "palora_per_sample": args.batch * args.rays / per_sample}
    print(f"device={args.device} backbone={args.backbone} batch={args.batch} M={args.rays} "
          f"threads={torch.get_num_threads()}")
    for name, step in (("LS (1 forward)", ls), (f"PaLoRA merged x{args.rays}", merged),
                       (f"PaLoRA per-sample x{args.rays}", per_sample)):
        print(f"  {name:<24} {step * 1e3:8.2f} ms/step")
    for name, r in rate.items():
        print(f"  {name:<24} {r:10.0f} samples/s per ray")
    ratios = {"merged_vs_ls": rate["palora_merged"] / rate["ls"],
              "per_sample_vs_ls": rate["palora_per_sample"] / rate["ls"],
              "per_sample_vs_merged": rate["palora_per_sample"] / rate["palora_merged"]}
    for name, r in ratios.items():
        print(f"  ratio {name:<22} {r:6.2f}")
    print(json.dumps({"device": args.device, "samples_per_s_per_ray": rate, "ratios": ratios}))


if __name__ == "__main__":
    main()
