"""``psipo experiment NAME``: run a lab experiment into a results folder (figures, REPORT.md, results.json).

Each experiment is a package that exposes a config dataclass, its ``validate(config)``, a
``QUICK`` preset (a mapping of dotted keys to values) and ``run_experiment(config, out_dir, *,
progress, command)``; adding one is one entry in :data:`EXPERIMENTS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import shlex
import sys
from pathlib import Path

from psipo._config import add_arguments, load_config, overrides_from_args


@dataclasses.dataclass(frozen=True)
class Experiment:
    """How the CLI finds an experiment."""

    module: str
    """Package with ``QUICK`` and ``run_experiment``."""
    config: str
    """Name of its config dataclass in the package."""
    help: str
    """One line for ``psipo experiment --help``."""
    default_out: str
    """Default results folder."""


EXPERIMENTS = {
    "lm": Experiment(
        module="psipo.experiments.lm_lab",
        config="LabConfig",
        help="The paper's claims on a transformer LM with enumerable responses: exact KL, "
        "total preference and optimum, {DPO, IPO} × τ × seeds × preference determinism.",
        default_out="results/lm_lab",
    ),
}


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    parser = subparsers.add_parser("experiment", help=help_text, description=help_text)
    names = parser.add_subparsers(dest="experiment", metavar="NAME", required=True)
    for name, experiment in EXPERIMENTS.items():
        package = importlib.import_module(experiment.module)
        sub = names.add_parser(name, help=experiment.help, description=experiment.help)
        sub.add_argument("--out", type=Path, default=Path(experiment.default_out),
                         help=f"results folder (default: {experiment.default_out})")
        sub.add_argument("--quick", action="store_true",
                         help="about one minute: " + ", ".join(f"{k}={v}" for k, v in package.QUICK.items()))
        sub.add_argument("--config", type=Path, default=None, help="YAML file of the keys below")
        sub.add_argument("--no-progress", action="store_true", help="no progress bar")
        add_arguments(sub, getattr(package, experiment.config))
        sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    experiment = EXPERIMENTS[args.experiment]
    package = importlib.import_module(experiment.module)
    overrides = {**(package.QUICK if args.quick else {}), **overrides_from_args(args)}
    # Validated here, so that a bad value is blamed on its --option or file:line.
    config = load_config(getattr(package, experiment.config), args.config, overrides, check=package.validate)
    command = shlex.join(["psipo", *sys.argv[1:]]) if sys.argv[1:2] == ["experiment"] else None
    results = package.run_experiment(
        config, args.out, progress=not args.no_progress, command=command
    )
    verdicts = [claim["verdict"] for claim in results["claims"]]
    print(
        f"psipo experiment {args.experiment}: {results['runtime_seconds'] / 60:.1f} min; "
        f"{verdicts.count('holds')} of {len(verdicts)} claims hold; wrote {args.out / 'REPORT.md'}, "
        f"{args.out / 'results.json'} and {len(results['figures'])} figures"
    )
    return 0
