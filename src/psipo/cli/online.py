"""`psipo online --config online.yaml [--key value ...]`: train a causal LM on its own samples.

The keys are psipo train's where they mean the same thing (model, optimisation, run), plus the
prompts, the algorithm (online_ipo, ipo_md, online_dpo, rloo), its judge or reward and the
generation settings; they come from the dataclasses in :mod:`psipo.lm.online`.
"""

from __future__ import annotations

import argparse

from psipo._config import overrides_from_args
from psipo.cli.train import EXIT_CODES, add_training_parser, report_training

EPILOG = f"""\
examples:
  python -m psipo.lm.fixtures quickstart .psipo-quickstart   # tiny local model + prompts
  psipo online --config online.yaml --algorithm online_ipo --judge runs/reward-quickstart/final
  psipo online --config online.yaml --algorithm ipo_md --mixture 0.125
  psipo online --config online.yaml --algorithm rloo --reward mypackage.rewards:length_penalty
  psipo online --config online.yaml --resume                   # continue the last checkpoint

Each step samples num_generations responses per prompt from the policy (ipo_md: from its
geometric mixture with the reference), asks the judge (or the reward) about them and takes one
optimizer step. The run folder (output_dir) receives config.yaml, metrics.jsonl (loss; reward when
there is one, and preference_strength for the pairwise algorithms, both with a reward-model judge;
kl, entropy (both left out at top_p < 1), response_length, cut_fraction, generation_fraction,
tokens_per_second; eval_win_rate, eval_kl, eval_reward with eval_prompts), checkpoints/step-N/ and
final/. `psipo plot RUN_DIR` draws it.
{EXIT_CODES}
"""


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    from psipo.lm.online import OnlineConfig

    add_training_parser(subparsers, "online", help_text, EPILOG, OnlineConfig, run)


def run(args: argparse.Namespace) -> int:
    from psipo.lm.online import load_online_config, train_online

    config = load_online_config(args.config, overrides_from_args(args))
    result = train_online(config)
    report_training(config, result, ("loss", "reward", "kl", "eval_win_rate"), what="model")
    return 0
