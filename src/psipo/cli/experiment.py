"""``psipo experiment NAME``: run an experiment into a results folder (figures, REPORT.md, results.json).

Each experiment is a package under ``psipo.experiments`` that exposes a config dataclass, its
``validate(config)``, a ``QUICK`` preset (a mapping of keys to values) and
``run_experiment(config, out_dir, *, progress, command)`` (and optionally a ``FULL`` preset for
``--full``: the heavy settings), which writes the folder through
:mod:`psipo.experiments.reporting` and returns the results (with their ``claims``,
``runtime_seconds`` and ``figures``). One whose outputs can be made from a stored run without
training exposes ``read_stored_run(source)`` and ``rerender(results, out_dir, *, command)`` too,
offered as ``--report-from``.
Adding one is one entry in :data:`EXPERIMENTS`; a short
form such as ``psipo reproduce`` is a subcommand that calls :func:`add_experiment_parser`.
Only the package of the experiment named on the command line is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from psipo._config import add_arguments, load_config, overrides_from_args
from psipo._io import expand_home, lock_folder, prepare_output_folder, remove_stale_temporaries
from psipo.errors import PsipoInputError


@dataclasses.dataclass(frozen=True)
class Experiment:
    """How the CLI finds an experiment."""

    module: str
    """Package with the config dataclass, ``validate``, ``QUICK`` and ``run_experiment``."""
    config: str
    """Name of its config dataclass in the package."""
    help: str
    """One line for ``psipo experiment --help``."""
    default_out: str
    """Default results folder."""
    quick: str
    """What ``--quick`` is for, in a few words (its help lists the preset after them)."""
    own_key: str
    """A top-level key of its results.json that no other experiment's has: a folder holding a
    results.json without it is another's, which a run would overwrite."""
    description: str = ""
    """More for the experiment's own ``--help``."""

    def package(self) -> Any:
        return importlib.import_module(self.module)


EXPERIMENTS = {
    "paper": Experiment(
        module="psipo.experiments.paper",
        config="ReproduceConfig",
        help="The paper's illustrative experiments (§5.3.1, §5.4) on tabular policies, beside the closed "
        "forms; `psipo reproduce` for short.",
        default_out="results",
        quick="tiny preset for smoke tests",
        own_key="asymptotic",
        description="Trains every (dataset × loss × τ × seed) run at once; with the defaults it takes seconds.",
    ),
    "lm": Experiment(
        module="psipo.experiments.lm_lab",
        config="LabConfig",
        help="The paper's claims on a transformer LM with enumerable responses: exact KL, "
        "total preference and optimum, {DPO, IPO} × τ × seeds × preference determinism.",
        default_out="results/lm_lab",
        quick="about one minute",
        own_key="enumerated",
    ),
}


class _ExperimentNames(argparse._SubParsersAction):
    """Subparsers that import an experiment's package, for its options, only when it is chosen."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        name = values[0]
        chosen = self._name_parser_map.get(name)
        if name in EXPERIMENTS and not chosen.get_default("has_options"):
            _add_experiment_options(chosen, EXPERIMENTS[name])
        super().__call__(parser, namespace, values, option_string)


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    parser = subparsers.add_parser("experiment", help=help_text, description=help_text)
    names = parser.add_subparsers(dest="experiment", metavar="NAME", required=True, action=_ExperimentNames)
    for name, experiment in EXPERIMENTS.items():
        sub = names.add_parser(name, help=experiment.help, description=_description(experiment.help, experiment))
        sub.set_defaults(func=run, experiment=name, invoked_as=f"psipo experiment {name}")


def add_experiment_parser(
    subparsers: argparse._SubParsersAction, command: str, name: str, help_text: str
) -> argparse.ArgumentParser:
    """A subcommand ``command`` that runs experiment ``name`` with all its options: a short form."""
    experiment = EXPERIMENTS[name]
    parser = subparsers.add_parser(command, help=help_text, description=_description(help_text, experiment))
    _add_experiment_options(parser, experiment)
    parser.set_defaults(func=run, experiment=name, invoked_as=f"psipo {command}")
    return parser


def _description(help_text: str, experiment: Experiment) -> str:
    return " ".join(part for part in (help_text, experiment.description) if part)


def _add_experiment_options(parser: argparse.ArgumentParser, experiment: Experiment) -> None:
    package = experiment.package()
    stored_runs = hasattr(package, "read_stored_run")  # --report-from, for experiments that can re-render
    parser.add_argument("--out", default=None, help=f"results folder (default: {experiment.default_out}"
                        + ("; with --report-from, its folder)" if stored_runs else ")"))
    presets = parser.add_mutually_exclusive_group()
    presets.add_argument("--quick", action="store_true",
                         help=f"{experiment.quick}: " + ", ".join(f"{k}={v}" for k, v in package.QUICK.items())
                         + " (a --config file and options override it)")
    if hasattr(package, "FULL"):
        presets.add_argument("--full", action="store_true",
                             help="the heavy settings: " + ", ".join(f"{k}={v}" for k, v in package.FULL.items())
                             + " (a --config file and options override it)")
    parser.add_argument("--config", type=Path, default=None, help="YAML file of the keys below")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    if stored_runs:
        parser.add_argument(
            "--report-from", metavar="RESULTS", default=None,
            help="train nothing: decide the claims again and redraw the figures and REPORT.md from a "
            "stored run (its results folder or results.json), with that run's own settings",
        )
    add_arguments(parser, getattr(package, experiment.config))
    parser.set_defaults(has_options=True)


EXPERIMENT_LOCK = ".psipo-experiment.lock"
"""The lock file of an experiment's --out folder (not a run folder's ``.psipo.lock``: a training
run may live inside an experiment's folder, never inside another run's)."""


def run(args: argparse.Namespace) -> int:
    experiment = EXPERIMENTS[args.experiment]
    package = experiment.package()
    report_from = getattr(args, "report_from", None)
    if report_from is not None:
        _refuse_settings_beside_report_from(args)
        stored = package.read_stored_run(report_from)  # before --out is made: a bad source leaves nothing
    else:
        preset = package.QUICK if args.quick else package.FULL if getattr(args, "full", False) else {}
        # The preset, then the --config file over it, then the options; validated here, so that a
        # bad value is blamed on its --option or file:line.
        config = load_config(
            getattr(package, experiment.config), args.config, overrides_from_args(args), defaults=preset,
            check=package.validate,
        )
    default_out = experiment.default_out if report_from is None else _folder_of(report_from)
    # --out=~/x reaches psipo unexpanded (no shell expands a ~ after '='): it made a folder named ~
    chosen = expand_home(str(args.out if args.out is not None else default_out))
    if chosen.strip():  # an empty --out is prepare_output_folder's to refuse
        _refuse_a_folder_of_another(Path(chosen), args.invoked_as, experiment)
    # before the work: a bad --out fails now, not at the end
    out = prepare_output_folder(chosen, "--out")
    command = shlex.join(["psipo", *sys.argv[1:]]) if sys.argv[1:2] == [args.command] else None
    # One experiment at a time writes a folder: two would leave one's figures beside the other's report.
    lock = lock_folder(out, EXPERIMENT_LOCK, key="--out", what="psipo experiment")
    try:
        # Holding the lock, no live writer owns a temporary here: what a killed run left (its
        # figures drawn aside, a file half-written, the previous figures/ moved aside) is settled.
        remove_stale_temporaries(out)
        if report_from is not None:
            results = package.rerender(stored, out, command=command)
        else:
            results = package.run_experiment(config, out, progress=not args.no_progress, command=command)
    finally:
        os.close(lock)
    verdicts = [claim["verdict"] for claim in results["claims"]]
    seconds = results["runtime_seconds"]
    duration = f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"
    # A claim that is undecided or could not be measured is said so, never folded into the count.
    undecided = verdicts.count("undecided")
    unmeasured = len(results.get("claims_not_measured", []))
    tally = f"{verdicts.count('holds')} of {len(verdicts)} claims hold"
    tally += f" ({undecided} undecided)" if undecided else ""
    tally += f"; {unmeasured} not measured by this configuration" if unmeasured else ""
    source = f"re-rendered from {report_from} (a run of {duration})" if report_from is not None else duration
    print(
        f"{args.invoked_as}: {source}; {tally}; wrote "
        f"{out / 'REPORT.md'}, {out / 'results.json'} and {len(results['figures'])} figures"
    )
    return 0


def _refuse_settings_beside_report_from(args: argparse.Namespace) -> None:
    """--report-from renders a stored run with that run's own settings: any other is refused."""
    given = [option for option, flag in (("--quick", args.quick), ("--full", getattr(args, "full", False)),
                                         ("--config", args.config is not None)) if flag]
    given += [f"--{key}" for key in overrides_from_args(args)]
    if given:
        raise PsipoInputError(
            f"--report-from: renders the stored run with its own settings; drop {', '.join(given)} "
            "(or run the experiment without --report-from)"
        )


def _refuse_a_folder_of_another(out: Path, command: str, experiment: Experiment) -> None:
    """A folder of another command is refused before anything is written there: a psipo run
    folder (or one inside it), or one whose results.json is not this experiment's (another
    experiment's, or a file of the user's), which this run would write over."""
    from psipo.lm.run_folder import LOCK_NAME

    run = next((p for p in (out.absolute(), *out.absolute().parents) if (p / LOCK_NAME).is_file()), None)
    if run is not None:
        where = "is" if run == out.absolute() else f"lies inside {run}, which is"
        raise PsipoInputError(f"--out: {out} {where} the folder of a psipo training run; choose another --out")
    from psipo.experiments.reporting import RESULTS_FILE

    stored = out / RESULTS_FILE
    if not stored.is_file():
        return
    try:
        results = json.loads(stored.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        results = None
    if not isinstance(results, dict) or experiment.own_key not in results:
        raise PsipoInputError(
            f"--out: {out} holds a results.json that is not of `{command}` (another experiment's?), "
            "which this run would overwrite; choose another --out"
        )


def _folder_of(source: str) -> Path:
    """The results folder named by --report-from (a folder, or the folder of a results.json)."""
    path = Path(expand_home(source))
    return path if path.is_dir() else path.parent
