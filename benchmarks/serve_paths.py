"""The serving forward paths on one model, in process (not a test; prints numbers).

For a PaLoRA model on a backbone (default torchvision's ResNet-18 at 3×64×64,
3 tasks, rank 1, random non-zero adapters), times at batch B with k distinct λ:

* ``bare``: the backbone alone, no preference conditioning (the limit);
* ``per_sample``: one forward with a λ per sample (``model.predict``);
* ``merged``: one forward per λ group from cached merged weights (the cache
  warm: the steady state of repeated λ);
* ``merged+merge``: the same with every group's weights merged anew (cold cache).

Each is the best of ``--repeats`` runs, taken round-robin with bare's (so each row's ratios are
measured side by side), as samples/s and as a fraction of bare.

    python benchmarks/serve_paths.py --threads 1
    python benchmarks/serve_paths.py --backbone lenet --shape 1 28 28 --tasks 2
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import torch


def build(backbone: str, shape: tuple[int, ...], tasks: int, rank: int, conv_style: str):
    from pareto_ray.config import load_config
    from pareto_ray.layers import LowRankPreferenceLayer
    from pareto_ray.methods import build_model
    from pareto_ray.serving.predictors import ConditionedPredictor, PathCosts, base_network
    from pareto_ray.serving.schemas import ServeSettings

    cfg = load_config(None, [f"model.backbone={backbone}", "method.name=palora", f"method.rank={rank}",
                                 f"method.conv_style={conv_style}"])
    torch.manual_seed(0)
    _, model, _ = build_model(cfg.model, cfg.method, tasks, shape)
    for m in model.modules():
        if isinstance(m, LowRankPreferenceLayer):
            torch.nn.init.normal_(m.lora_B, std=0.1)
    model.eval()
    costs = PathCosts(merged_call=1, merged_sample=1, merge_weights=1, per_sample_call=1, per_sample_sample=1)
    predictor = ConditionedPredictor(model, ServeSettings(cache_size=4096), costs=costs, input_shape=shape)
    return model, predictor, base_network(model)


def best_of(fns: dict, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` timings of each function, taken round-robin (so a burst of other load on the machine
    hits all of them alike, and the ratios to bare are measured side by side)."""
    for fn in fns.values():
        fn()  # warm-up
    out = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[name] = min(out[name], time.perf_counter() - t)
    return out


def merged_forward(predictor, x: torch.Tensor, groups: dict, cold: bool) -> None:
    """One forward per λ group from merged weights (merged anew first when ``cold``)."""
    for key, idx in groups.items():
        if cold:
            predictor.cache.merge(key)
        predictor.forward_merged(x[idx], key)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--shape", type=int, nargs="+", default=[3, 64, 64])
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--conv-style", default="channel", choices=["channel", "kernel"],
                   help="PaLoRA's convolution adapters (kernel: the paper's; its per-sample path costs T convolutions)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from pareto_ray.preferences import dirichlet
    from pareto_ray.serving.inputs import preference_key

    shape = tuple(args.shape)
    model, predictor, bare = build(args.backbone, shape, args.tasks, args.rank, args.conv_style)
    g = torch.Generator().manual_seed(0)
    print(f"{args.backbone} {list(shape)}, {args.tasks} tasks, rank {args.rank}, {args.conv_style} conv adapters, "
          f"{torch.get_num_threads()} threads")
    print(f"{'B':>4} {'k':>4} {'bare/s':>9} {'per_sample':>11} {'merged':>8} {'merged+merge':>13}")
    rows = []
    with torch.inference_mode():
        for b in args.batch_sizes:
            x = torch.randn(b, *shape)
            for k in sorted({1, 4, b} & set(range(1, b + 1))):
                keys = [preference_key(r.numpy(), 1e-3) for r in dirichlet(k, args.tasks, generator=g)]
                prefs = torch.tensor([keys[i % k] for i in range(b)], dtype=torch.float32)
                groups = {key: [i for i in range(b) if i % k == j] for j, key in enumerate(keys)}
                t = best_of({"bare": partial(bare, x), "per_sample": partial(predictor.forward_per_sample, x, prefs),
                             "merged": partial(merged_forward, predictor, x, groups, False),
                             "merged+merge": partial(merged_forward, predictor, x, groups, True)}, args.repeats)
                t_bare, t_ps, t_m, t_mm = t["bare"], t["per_sample"], t["merged"], t["merged+merge"]
                row = {"B": b, "k": k, "bare_samples_s": b / t_bare, "per_sample": t_bare / t_ps, "merged": t_bare / t_m,
                       "merged_and_merge": t_bare / t_mm}
                rows.append(row)
                print(f"{b:>4} {k:>4} {b / t_bare:>9.1f} {t_bare / t_ps:>10.2f}x {t_bare / t_m:>7.2f}x "
                      f"{t_bare / t_mm:>12.2f}x", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
