"""`psipo plot` (not written yet)."""

from __future__ import annotations

import argparse

from psipo.errors import PsipoInputError


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    parser = subparsers.add_parser("plot", help=help_text, description=help_text)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise PsipoInputError("'psipo plot' is not implemented yet")
