"""`psipo experiment` (not written yet)."""

from __future__ import annotations

import argparse

from psipo.errors import PsipoInputError


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    parser = subparsers.add_parser("experiment", help=help_text, description=help_text)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise PsipoInputError("'psipo experiment' is not implemented yet")
