"""``psipo reproduce``: the paper's §5.3.1 and §5.4 into a results folder (figures, REPORT.md, results.json)."""

from __future__ import annotations

import argparse
from pathlib import Path

from psipo._config import add_arguments, load_config, overrides_from_args


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    from psipo.experiments.paper import QUICK, ReproduceConfig

    parser = subparsers.add_parser(
        "reproduce",
        help=help_text,
        description=help_text
        + " Trains every (dataset × loss × τ × seed) run at once; with the defaults it takes seconds.",
    )
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny preset for smoke tests: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()),
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML file of the keys below")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_arguments(parser, ReproduceConfig)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from psipo.experiments.paper import QUICK, ReproduceConfig, run_reproduction

    overrides = {**(QUICK if args.quick else {}), **overrides_from_args(args)}
    config = load_config(ReproduceConfig, args.config, overrides, check=ReproduceConfig.validate)
    results = run_reproduction(config, args.out, progress=not args.no_progress)
    timing = results["timing_seconds"]
    print(
        f"psipo reproduce: trained in {timing['train_grid'] + timing['train_asymptotic']:.2f} s "
        f"({timing['total']:.1f} s in total); wrote {args.out / 'REPORT.md'}, "
        f"{args.out / 'results.json'} and {len(results['figures'])} figures"
    )
    return 0
