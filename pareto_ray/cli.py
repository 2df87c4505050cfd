"""``pareto-ray`` command line: train and evaluate (more subcommands join here)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from pareto_ray.checkpoint import CheckpointError
from pareto_ray.config import ConfigError, load_config


def _front_table(front: pa.Table, title: str) -> Table:
    table = Table(title=title)
    for name in front.column_names:
        table.add_column(name, justify="right")
    for row in front.to_pylist():
        table.add_row(*(f"{v:.4f}" for v in row.values()))
    return table


def _emit_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, default=float), flush=True)


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from pareto_ray.evaluation import read_front
    from pareto_ray.trainer import fit

    cfg = load_config(args.config, args.set)
    result = fit(cfg)
    console.print(_front_table(read_front(result.front), f"{result.run_name}: test front"))
    console.print(f"val HV {result.val_hv:.4f}   test HV {result.test_hv:.4f}   "
                  f"non-dominated {int(result.test_metrics['nondominated'])}")
    console.print(f"checkpoint: {result.checkpoint}\nfront: {result.front}\nplot: {result.plot}\n"
                  f"MLflow run: {result.run_id}  (resume with --set name={result.run_name})")
    if args.json:
        _emit_json(result.summary())
    return 0


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from pareto_ray.evaluation import evaluate_checkpoint, read_front

    out = evaluate_checkpoint(args.checkpoint, args.split, args.output)
    console.print(_front_table(read_front(out["front"]), f"{args.checkpoint}: {args.split} front"))
    console.print(f"{args.split} HV {out['hv']:.4f}   non-dominated {int(out['nondominated'])}")
    if args.json:
        _emit_json(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pareto-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a Pareto front model on Ray Train")
    train.add_argument("--config", help="YAML config (default: built-in defaults, MultiDigits + PaLoRA)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    train.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="re-evaluate a checkpoint's front on a split")
    ev.add_argument("checkpoint", help="checkpoint directory written by `pareto-ray train`")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--output", help="folder for the front Parquet and PNG (default: <checkpoint>/../fronts)")
    ev.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    ev.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=args.json if hasattr(args, "json") else False)
    try:
        return args.func(args, console)
    except (ConfigError, FileNotFoundError, CheckpointError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
