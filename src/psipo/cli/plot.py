"""`psipo plot RUN_DIR`: draw a training run's metric curves (metrics.jsonl) as PNG (train, reward or online)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    parser = subparsers.add_parser("plot", help=help_text, description=help_text)
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="output_dir of a `psipo train`, `psipo reward` or `psipo online` run"
    )
    parser.add_argument("--out", metavar="PNG", default=None, help="output PNG file, ending in .png (default: RUN_DIR/curves.png)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from psipo._io import check_output_file, expand_home
    from psipo.errors import PsipoInputError
    from psipo.lm.plots import plot_run

    # --out=~/x.png reaches psipo unexpanded (no shell expands a ~ after '='): it made a folder named ~
    run_dir, out = expand_home(args.run_dir), expand_home(args.out)
    if out is not None:
        out = check_output_file(out, "--out")
        if out.suffix.lower() != ".png":  # the bytes are PNG whatever the name: a .pdf or .svg would lie
            raise PsipoInputError(f"--out: {out} does not end in .png; psipo plot draws a PNG, name a .png file")
    print(plot_run(run_dir, out))
    return 0
