"""``pareto-ray`` command line: train, evaluate, tune, serve, toy, expand.

Each subcommand imports what it needs when it runs, so ``pareto-ray --help``
starts without importing Ray, PyTorch or MLflow.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pareto_ray.checkpoint import CheckpointError
from pareto_ray.config import ConfigError, load_config
from pareto_ray.data.files import DatasetError


def _front_table(front: pa.Table, title: str) -> Table:
    table = Table(title=title)
    for name in front.column_names:
        table.add_column(name, justify="right")
    for row in front.to_pylist():
        table.add_row(*(f"{v:.4f}" for v in row.values()))
    return table


def _emit_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, default=float), flush=True)


def _print_whole(console: Console, text: str) -> None:
    """Lines with paths in them, never wrapped (a piped console is 80 columns wide) nor read as markup."""
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from pareto_ray.fronts import read_front
    from pareto_ray.training import ProgressDisplay, fit

    cfg = load_config(args.config, args.set)
    with ProgressDisplay(console) as progress:
        result = fit(cfg, progress=progress, verbose=args.verbose)
    console.print(_front_table(read_front(result.front), f"{result.run_name}: test front"))
    console.print(f"val HV {result.val_hv:.4f}   test HV {result.test_hv:.4f}   "
                  f"non-dominated {int(result.test_metrics['nondominated'])}")
    _print_whole(console, f"checkpoint: {result.checkpoint}\nfront: {result.front}\nplot: {result.plot}\n"
                          f"MLflow run: {result.run_id}  (resume with --set name={result.run_name})")
    if args.json:
        _emit_json(result.summary())
    return 0


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from pareto_ray.fronts import read_front
    from pareto_ray.training.evaluate import evaluate_checkpoint

    out = evaluate_checkpoint(args.checkpoint, args.split, args.output)
    console.print(_front_table(read_front(out["front"]), f"{args.checkpoint}: {args.split} front"))
    console.print(f"{args.split} HV {out['hv']:.4f}   non-dominated {int(out['nondominated'])}")
    _print_whole(console, f"front: {out['front']}\nplot: {out['plot']}")
    if args.json:
        _emit_json(out)
    return 0


def cmd_tune(args: argparse.Namespace, console: Console) -> int:
    from pareto_ray.training.sweep import resume_sweep, run_sweep

    if args.resume:
        if args.config or args.set or args.num_samples:
            raise ConfigError("--resume continues a sweep as it was started: drop --config, --set and --num-samples")
        result = resume_sweep(args.resume, verbose=args.verbose)
    elif args.config:
        result = run_sweep(load_config(args.config, args.set), args.num_samples, verbose=args.verbose)
    else:
        raise ConfigError("give --config FILE (with a tune: section) or --resume SWEEP_FOLDER")
    table = Table(title=f"sweep {result.name}: {result.table.num_rows} trials ({result.stopped_early} stopped early)")
    columns = [c for c in result.table.column_names if c not in ("checkpoint", "run_name")]
    for name in columns:
        table.add_column(name, justify="right")
    for row in result.table.select(columns).to_pylist():
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    console.width = max(console.width, 160)  # the table is wide: let it wrap rather than elide
    console.print(table)
    if result.interrupted:
        _print_whole(console, f"interrupted: continue with  pareto-ray tune --resume {result.experiment_path}")
    else:
        _print_whole(console, f"best: trial {result.best['trial_id']}  val HV {result.best_val_hv:.4f}  "
                              f"test HV {result.best_test_hv:.4f}\nbest config: {result.best_config}\n"
                              f"best checkpoint: {result.best_checkpoint}")
    _print_whole(console, f"sweep table: {result.table_path}\nMLflow parent run: {result.parent_run_id}")
    if args.json:
        _emit_json(result.summary())
    return 130 if result.interrupted else 0


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from pareto_ray.serving.guard import TokenError, read_token
    from pareto_ray.serving.loading import load_served_model

    # Load the model here first, as a replica would: a missing, truncated or mismatched checkpoint (or an unknown
    # registry version) is one line and exit code 2 before Ray starts, not a deployment that fails after a minute.
    load_served_model(args.model, args.tracking_uri)
    try:
        read_token(args.token_file)
    except TokenError as exc:
        console.print("[bold red]error:[/]", escape(str(exc)), soft_wrap=True)
        return 2
    from pareto_ray.serving.app import run

    console.print(f"serving {args.model} on http://{args.host}:{args.port}  (front explorer at "
                  f"http://{args.host}:{args.port}/explorer, OpenAPI at /docs; Ctrl-C stops)", soft_wrap=True)
    run(args.model, args.host, args.port, args.tracking_uri, num_replicas=args.replicas, access_log=args.access_log,
        token_file=args.token_file)
    return 0


def cmd_toy(args: argparse.Namespace, console: Console) -> int:
    from pareto_ray.toy import plot_toy, run_toy

    result = run_toy(args.method, args.problem, args.set)
    table = Table(title=f"{args.method} on {args.problem} ({result['optimizer']}, {result['steps']} steps, "
                        f"lr {result['lr']:g}, {result['seconds']:.1f} s)")
    keys = ["igd", "igd_relative", "hv_ratio", "nondominated"]
    for key in keys:
        table.add_column(key, justify="right")
    table.add_row(*(f"{result[k]:.4g}" for k in keys))
    console.print(table)
    if args.plot:
        _print_whole(console, f"plot: {plot_toy(result, args.plot)}")
    if args.json:
        _emit_json({k: v for k, v in result.items() if k not in ("rays", "points")})
    return 0


def cmd_expand(args: argparse.Namespace, console: Console) -> int:
    from pareto_ray.fronts import read_front
    from pareto_ray.training.expand import expand

    cfg = load_config(args.config, args.set)
    out = expand(args.from_checkpoint, cfg, args.output, pseudo=args.pseudo)
    console.print(_front_table(read_front(out["front"]), f"expansion of {args.from_checkpoint}: test front"))
    console.print(f"test HV {out['hv']:.4f} (start point {out['start']['hv']:.4f})   "
                  f"non-dominated {int(out['nondominated'])}   {out['seconds']:.1f} s")
    if args.pseudo:
        console.print(_front_table(pa.Table.from_pylist(out["pseudo"]), "pseudopreferences (test)"))
    _print_whole(console, f"checkpoint: {out['checkpoint']}\nfront: {out['front']}\nplot: {out['plot']}")
    if args.json:
        _emit_json({k: v for k, v in out.items() if k != "history"})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pareto-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a Pareto front model on Ray Train")
    train.add_argument("--config", help="YAML config (default: built-in defaults, MultiDigits + PaLoRA)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    train.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    train.add_argument("--verbose", action="store_true",
                       help="also show Ray Train's INFO lines (every report and checkpoint, worker-group start)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="re-evaluate a checkpoint's front on a split")
    ev.add_argument("checkpoint", help="checkpoint directory written by `pareto-ray train`")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--output", help="folder for the front Parquet and PNG (default: <checkpoint>/../fronts)")
    ev.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    ev.set_defaults(func=cmd_evaluate)

    tune = sub.add_parser("tune", help="sweep hyperparameters with Ray Tune (maximizes validation HV)")
    tune.add_argument("--config", help="YAML config with a tune: section (e.g. jobs/configs/tune_quickstart.yaml)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    tune.add_argument("--num-samples", type=int, help="override tune.num_samples")
    tune.add_argument("--resume", metavar="PATH", help="continue an interrupted sweep from its folder")
    tune.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    tune.add_argument("--verbose", action="store_true", help="also show the trials' Ray Train INFO lines")
    tune.set_defaults(func=cmd_tune)

    srv = sub.add_parser("serve", help="serve a trained model over HTTP with Ray Serve (any λ per request)")
    srv.add_argument("--model", required=True, metavar="SOURCE",
                     help="checkpoint directory or MLflow registry URI models:/<name>/<version>")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    srv.add_argument("--replicas", type=int, metavar="N",
                     help="model replicas, one CPU each (default: 2 where the machine has 2 CPUs, else 1)")
    srv.add_argument("--access-log", action="store_true", help="log one line per request (default: off)")
    srv.add_argument("--token-file", metavar="PATH",
                     help="file holding the API token (default: $PARETO_RAY_API_TOKEN; neither: no auth)")
    srv.set_defaults(func=cmd_serve)

    toy = sub.add_parser("toy", help="train one method on a problem with a known front and score it (IGD, HV ratio)")
    toy.add_argument("--method", required=True, help="method name, e.g. palora, lorpman, pamal, phn_lora")
    toy.add_argument("--problem", required=True, help="toy, toy_scaled, concave, zdt1 or zdt2")
    toy.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="trainer (optimizer, steps, lr, seed, eval_points) or method setting, e.g. --set solver=epo")
    toy.add_argument("--plot", help="save the learned front over the true one as this PNG")
    toy.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    toy.set_defaults(func=cmd_toy)

    exp = sub.add_parser("expand", help="Pareto expansion: PaLoRA adapters around a single-point checkpoint")
    exp.add_argument("--from", dest="from_checkpoint", required=True, help="checkpoint of a single-point model (ls)")
    exp.add_argument("--config", required=True, help="YAML config with method.name: palora (epochs, lr, rank, ...)")
    exp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    exp.add_argument("--output", default="expansion", help="folder for the checkpoint, front and plot")
    exp.add_argument("--pseudo", action="store_true", help="also evaluate pseudopreferences (1,-1), (-1,1), (0,0)")
    exp.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    exp.set_defaults(func=cmd_expand)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=args.json if hasattr(args, "json") else False)
    try:
        return args.func(args, console)
    except (ConfigError, FileNotFoundError, CheckpointError, DatasetError) as exc:
        console.print("[bold red]error:[/]", escape(str(exc)), soft_wrap=True)  # a long path stays one line
        return 2


if __name__ == "__main__":
    sys.exit(main())
