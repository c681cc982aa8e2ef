"""`psipo evaluate --config eval.yaml [--key value ...]`: a model against its baseline.

The keys come from :class:`psipo.lm.evaluate.EvaluateConfig`; the work is
:func:`psipo.lm.evaluate.evaluate`.
"""

from __future__ import annotations

import argparse

from psipo._config import overrides_from_args
from psipo.cli.train import add_training_parser

EPILOG = """\
examples:
  psipo evaluate --model runs/quickstart/final --prompts .psipo-quickstart/eval.jsonl \\
      --judge runs/reward-quickstart/final                 # baseline: the run's reference
  psipo evaluate --config eval.yaml --reward mypackage.scores:length_penalty --out eval-lp
  psipo evaluate --model runs/quickstart/final --pairs .psipo-quickstart/eval.jsonl   # no sampling

Samples one response per prompt from the model and from the baseline (independent streams),
then writes OUT/evaluation.json and OUT/evaluation.md: the win rate of the model over the
baseline (judge: mean P(model > baseline); reward: 1[r_m > r_b] + 1/2 1[tie]) with a 95%
interval over prompts, the mean reward of each, a Monte Carlo estimate of KL(model || baseline)
with its interval (at temperature 1 and top_p 1 only) and response lengths. With --pairs
instead of --prompts nothing is sampled: each pair's h = log pi/pi_base(chosen) -
log pi/pi_base(rejected) gives the accuracy 1[h > 0], h against IPO's target 1/(2 tau), and
IPO's and DPO's losses, with 95% intervals over pairs; a reward model is scored on its own
(accuracy 1[r_w > r_l], margin, Bradley-Terry loss, calibration error).
Exit codes: 0 done, 2 bad input.
"""


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    from psipo.lm.evaluate import EvaluateConfig

    add_training_parser(subparsers, "evaluate", help_text, EPILOG, EvaluateConfig, run)


def run(args: argparse.Namespace) -> int:
    from psipo.lm.evaluate import evaluate, load_evaluate_config, summary_line

    config = load_evaluate_config(args.config, overrides_from_args(args))
    results = evaluate(config)
    print(f"{summary_line(results)}; wrote {config.out}/evaluation.json and evaluation.md")
    return 0
