"""Discrete fronts on Ray: Pareto MTL's K subproblems as K concurrent Ray Train runs.

The subproblems share nothing while they train (Algorithm 1: "can be solved
in parallel"), so ``fit_discrete`` runs each as its own ``TorchTrainer`` (DDP
over ``ray.num_workers`` workers inside, its own checkpoints under
``<storage>/<name>-k<k>``, its own MLflow run, a child of one parent run),
at most ``method.parallel`` at a time — by default as many as the cluster's
free CPUs (GPUs) hold, the rest wait for a slot.  When all have finished,
their K networks are put together into one ``DiscreteFrontModel`` checkpoint
(``<storage>/<name>/front_checkpoint``) that the parent run finalizes like
any other: the validation front stored with it, the test front evaluated as
one Parquet table and one plot (a row per subproblem, keyed by its
preference ray), HV and the non-dominated count, the model logged (and
registered when configured).  ``pareto-ray evaluate`` and ``load_model`` take
that checkpoint as they take a continuous method's.

Rerunning with the same name resumes: each child run continues from its own
latest Ray Train checkpoint and the same MLflow runs are reused.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray

from pareto_ray import checkpoint as ckpt
from pareto_ray import tracking
from pareto_ray.config import Config
from pareto_ray.data import load_dataset
from pareto_ray.fronts import evaluate_front, front_metrics
from pareto_ray.methods import build_model
from pareto_ray.progress import ProgressDisplay
from pareto_ray.runtime import ensure_resources, init_ray, resolve_paths
from pareto_ray.training.continuous import FitResult, finalize, fit_continuous

FRONT_CHECKPOINT = "front_checkpoint"


def is_discrete(cfg: Config) -> bool:
    """Whether ``cfg`` asks for a whole discrete front (Pareto MTL without a fixed subproblem)."""
    return cfg.method.name == "pareto_mtl" and cfg.method.subproblem is None


def subproblem_config(cfg: Config, k: int) -> Config:
    """The config of subproblem ``k``'s own run (named ``<name>-k<k>``; only the front is registered)."""
    return cfg.model_copy(update={
        "name": f"{cfg.name}-k{k}",
        "method": cfg.method.model_copy(update={"subproblem": k}),
        "mlflow": cfg.mlflow.model_copy(update={"register_model": None}),
    })


def concurrency(cfg: Config, subproblems: int) -> int:
    """Subproblems trained at once: ``method.parallel``, else as many runs as the free CPUs (GPUs) hold."""
    if cfg.method.parallel is not None:
        return min(cfg.method.parallel, subproblems)
    kind, per_worker = ("GPU", 1.0) if cfg.ray.use_gpu else ("CPU", cfg.ray.cpus_per_worker)
    free = ray.available_resources().get(kind, 0.0)
    return max(1, min(subproblems, int(free // (cfg.ray.num_workers * per_worker))))


def assemble_front(cfg: Config, checkpoints: list[str], out: str | Path, extra_state: dict | None = None) -> Path:
    """One ``DiscreteFrontModel`` checkpoint from the K subproblem checkpoints, with its validation front."""
    data = load_dataset(cfg.data, train=False)  # validation and test only
    method, model, _ = build_model(cfg.model, cfg.method, data.tasks, data.input_shape)
    if len(checkpoints) != len(model.nets):
        raise ValueError(f"{len(checkpoints)} subproblem checkpoints for {len(model.nets)} preferences")
    epochs = []
    for net, path in zip(model.nets, checkpoints):
        child, _, _ = ckpt.load_model(path)
        net.load_state_dict(child.nets[0].state_dict())
        epochs.append(ckpt.read_state(path)["epoch"])
    table = evaluate_front(model, data.val, method.eval_rays(None), cfg.train.eval_batch_size, tasks=data.tasks)
    metrics = {f"val_{k}": v for k, v in front_metrics(table, cfg.eval.loss_reference).items()}
    state = {"epoch": min(epochs), "metrics": metrics, **(extra_state or {})}
    return ckpt.save_checkpoint(out, model, cfg, state, front=table, dataset=ckpt.DatasetSpec.of(data),
                                samples=ckpt.sample_set(data.test))


def fit_discrete(cfg: Config, progress: ProgressDisplay | None = None, verbose: bool = False) -> FitResult:
    """Train the K subproblems as concurrent Ray Train runs under one parent MLflow run; return the front's FitResult.

    ``progress`` shows every subproblem's epochs; ``verbose`` brings back Ray Train's INFO lines.
    """
    cfg = resolve_paths(cfg.model_copy(update={"name": cfg.run_name()}))
    init_ray(cfg.ray.address, verbose=verbose)
    ensure_resources(cfg.ray)  # each subproblem's run: they queue for the cluster, but each must fit it
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    parent_id, _ = tracking.start_run(uri, cfg.mlflow.experiment, cfg.name, cfg.flat())
    data = load_dataset(cfg.data, train=False)  # build the Parquet cache once, before any run needs it
    method, _, _ = build_model(cfg.model, cfg.method, data.tasks, data.input_shape)
    subproblems = len(method.members)
    parallel = concurrency(cfg, subproblems)
    print(f"[{cfg.name}] {subproblems} Pareto MTL subproblems, {parallel} at a time", flush=True)
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="subproblem") as pool:
            results = list(pool.map(lambda k: fit_continuous(subproblem_config(cfg, k), parent_run_id=parent_id,
                                                             progress=progress, verbose=verbose),
                                    range(subproblems)))
    except BaseException:
        tracking.end_run(uri, parent_id, "FAILED")
        raise
    seconds = time.perf_counter() - start
    subs = [{"subproblem": k, "key": method.keys[k].tolist(), "preference": method.preferences[k].tolist(),
             "run_name": r.run_name, "run_id": r.run_id, "checkpoint": r.checkpoint, "test_hv": r.test_hv}
            for k, r in enumerate(results)]
    out = Path(cfg.ray.storage_path) / cfg.name / FRONT_CHECKPOINT
    try:
        assemble_front(cfg, [r.checkpoint for r in results], out,
                       {"subproblems": subs, "parallel": parallel, "train_seconds": seconds})
    except BaseException:
        tracking.end_run(uri, parent_id, "FAILED")
        raise
    tracking.log_metrics(uri, parent_id, {"subproblems": subproblems, "parallel": parallel,
                                          "train_seconds": seconds}, step=0)
    return finalize(cfg, parent_id, uri, str(out))
