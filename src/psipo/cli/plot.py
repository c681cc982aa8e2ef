"""`psipo plot RUN_DIR [RUN_DIR ...]`: draw a training run's metric curves (metrics.jsonl) as PNG
(train, reward or online), or several runs of one command in one figure to compare them (psipo
train runs with psipo online runs on their held-out pairs)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    parser = subparsers.add_parser("plot", help=help_text, description=help_text)
    parser.add_argument(
        "run_dirs",
        metavar="RUN_DIR",
        nargs="+",
        help="output_dir of a `psipo train`, `psipo reward` or `psipo online` run; several runs of one "
        "command are drawn in one figure, each in its colour (--out names it); train runs beside online "
        "runs, on their held-out pairs",
    )
    parser.add_argument(
        "--out",
        metavar="PNG",
        default=None,
        help="output PNG file, ending in .png (default for one run: RUN_DIR/curves.png; needed for several)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from psipo._io import check_output_file, expand_home
    from psipo.errors import PsipoInputError
    from psipo.lm.plots import plot_runs

    # --out=~/x.png reaches psipo unexpanded (no shell expands a ~ after '='): it made a folder named ~
    run_dirs, out = [expand_home(d) for d in args.run_dirs], expand_home(args.out)
    if out is not None:
        out = check_output_file(out, "--out")
        if out.suffix.lower() != ".png":  # the bytes are PNG whatever the name: a .pdf or .svg would lie
            raise PsipoInputError(f"--out: {out} does not end in .png; psipo plot draws a PNG, name a .png file")
    print(plot_runs(run_dirs, out))
    return 0
