"""The ``psipo`` command line: one module per subcommand, each with ``register(subparsers)``.

Bad input (:class:`~psipo.errors.PsipoInputError`) becomes one ``psipo: error: ...`` line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from psipo.errors import PsipoInputError

# Each subcommand lives in its own module; importing lazily keeps `psipo solve` from paying
# for transformers' import time.
SUBCOMMANDS = {
    "reproduce": "Reproduce the paper's experiments (§5.3, §5.4) into a results folder.",
    "solve": "Print the exact ΨPO optimum of a tabular problem file (YAML or JSON).",
    "train": "Fine-tune a Hugging Face causal LM with IPO, DPO and their family.",
    "plot": "Draw the metric curves of a training run folder as PNG.",
    "experiment": "Run a lab experiment (e.g. `lm`: the paper's claims at LM scale).",
}


def _subcommand_from(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, import just that subcommand's module."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="psipo", description="Learning from pairwise preferences: ΨPO, IPO, DPO, RLHF."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        if only in SUBCOMMANDS and name != only:
            subparsers.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(f"psipo.cli.{name}")
        module.register(subparsers, help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_subcommand_from(argv))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PsipoInputError as exc:
        print(f"psipo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("psipo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
