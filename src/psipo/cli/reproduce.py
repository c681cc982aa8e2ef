"""``psipo reproduce``: the short form of ``psipo experiment paper`` (same options, same outputs)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    from psipo.cli.experiment import add_experiment_parser

    add_experiment_parser(subparsers, "reproduce", "paper", help_text)
