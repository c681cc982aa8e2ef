"""`psipo reward --config rm.yaml [--key value ...]`: train a Bradley–Terry reward model.

The keys are psipo train's where they mean the same thing (model, data, optimisation, run),
plus ``reward_l2`` and ``early_stopping_patience``; they come from the dataclasses in
:mod:`psipo.lm.reward` and :mod:`psipo.lm.config`.
"""

from __future__ import annotations

import argparse

from psipo._config import overrides_from_args
from psipo.cli.train import EXIT_CODES, add_training_parser, report_training

EPILOG = f"""\
examples:
  python -m psipo.lm.fixtures quickstart .psipo-quickstart   # tiny local model + pairs
  psipo reward --config rm.yaml
  psipo reward --config rm.yaml --reward_l2 0.01 --eval_steps 20 --early_stopping_patience 3
  psipo reward --config rm.yaml --resume                       # continue the last checkpoint

The model is an AutoModelForSequenceClassification with one output (a causal-LM checkpoint
gets a fresh scalar head on its last token), trained on -log sigmoid(r_chosen - r_rejected).
The run folder (output_dir) receives config.yaml, metrics.jsonl (loss, accuracy, rewards;
eval_loss, eval_accuracy, eval_ece on held-out pairs), checkpoints/step-N/ and final/ (load
it with transformers.AutoModelForSequenceClassification.from_pretrained, or as a judge with
psipo.lm.judges.RewardModel.from_pretrained). `psipo plot RUN_DIR` draws its curves.
{EXIT_CODES}
"""


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    from psipo.lm.reward import RewardConfig

    add_training_parser(subparsers, "reward", help_text, EPILOG, RewardConfig, run)


def run(args: argparse.Namespace) -> int:
    from psipo.lm.reward import load_reward_config, train_reward

    config = load_reward_config(args.config, overrides_from_args(args))
    result = train_reward(config)
    report_training(config, result, ("loss", "accuracy", "eval_loss", "eval_accuracy", "eval_ece"), what="reward model")
    return 0
