"""`psipo train --config run.yaml [--key value ...]`: preference fine-tuning of a causal LM.

Every key of the YAML config is also a ``--key VALUE`` option (command line wins); the
options and their documentation come from the dataclasses in :mod:`psipo.lm.config`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from psipo._config import add_arguments, overrides_from_args

EXIT_CODES = (
    "Exit codes: 0 done, 1 a file the system would not read or write, 2 bad input, 3 a NaN/inf step stopped\n"
    "training (nothing non-finite saved), 130 Ctrl-C, 143 SIGTERM (in a one-process run, after a checkpoint of\n"
    "the step in progress: --resume goes on from it). In the last step, or while final/ is saved, the signal\n"
    "waits for final/."
)
"""The exit codes of a training command, closing its --help."""

EPILOG = f"""\
examples:
  python -m psipo.lm.fixtures quickstart .psipo-quickstart   # tiny local model + pairs
  psipo train --config configs/quickstart.yaml
  psipo train --config configs/qwen2.5-0.5b-ultrafeedback.yaml --tau 0.05 --max_steps 200
  psipo train --config run.yaml --resume                       # continue the last checkpoint
  psipo train --config run.yaml --overwrite                    # replace the run in output_dir

The run folder (output_dir) receives config.yaml, metrics.jsonl, checkpoints/step-N/ and
final/ (load it with transformers.AutoModelForCausalLM.from_pretrained, or peft with LoRA).
A run folder belongs to one run: a second live run, or a fresh run into a folder holding
another run, is refused; --resume refuses a config that differs from the checkpoint's
(but for the keys --resume's help lists) and data that changed.
{EXIT_CODES}
"""


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    from psipo.lm.config import TrainConfig

    add_training_parser(subparsers, "train", help_text, EPILOG, TrainConfig, run)


def run(args: argparse.Namespace) -> int:
    from psipo.lm.config import load_train_config
    from psipo.lm.trainer import train

    config = load_train_config(args.config, overrides_from_args(args))
    result = train(config)
    report_training(config, result, ("loss", "h_mean", "accuracy", "eval_loss"), what="model")
    return 0


def add_training_parser(
    subparsers: argparse._SubParsersAction,
    name: str,
    help_text: str,
    epilog: str,
    config_class: type,
    run: Callable[[argparse.Namespace], int],
) -> None:
    """A training subcommand: ``--config YAML`` plus one ``--key`` option per config field."""
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=help_text + " Keys come from --config and/or --key VALUE options.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="YAML", help="YAML file of config keys (see the options below)")
    add_arguments(parser, config_class)
    parser.set_defaults(func=run)


def report_training(config: Any, result: Any, keys: tuple[str, ...], *, what: str) -> None:
    """The closing lines of a training command: the data summary (unless the run began with
    it, on its progress line) and the last metrics; by the main process of a multi-process run only."""
    if not result.main_process:
        return
    last = result.history[-1] if result.history else {}
    shown = [f"{k} {last[k]:.4g}" for k in keys if k in last]
    skipped = sum(record.get("skipped_steps", 0) for record in result.history)
    if skipped:
        shown.append(f"{skipped} skipped as non-finite")
    if not config.run.progress:
        print(result.train_data.summary())
    where = f"final {what}: {result.final_dir}" if result.final_dir is not None else "nothing was written (output_dir is null)"
    if result.hub_url:
        where += f", uploaded to {result.hub_url}"
    details = f" ({', '.join(shown)})" if shown else ""
    steps = last.get("step", 0)
    print(f"trained {steps} step{'' if steps == 1 else 's'}{details}; {where}")
