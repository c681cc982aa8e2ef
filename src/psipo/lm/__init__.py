"""Preference fine-tuning of Hugging Face causal LMs with the losses of :mod:`psipo.losses`.

Public API (imported on first use, so ``import psipo.lm`` loads neither torch nor
transformers):

* :class:`TrainConfig`, :func:`load_train_config` — the configuration (``psipo train --help``);
* :func:`train` → :class:`TrainResult` — the training loop the CLI runs;
* :class:`TokenizedPair` — a pre-tokenised preference pair; :class:`TokenizedData` — tokenised
  pairs and what happened to the rows on the way;
* :func:`sequence_logps` — chunked per-sequence log-probs of a causal LM;
* :func:`sample` → :class:`Samples` — seeded, batched sampling with per-token log-probs, from a
  model or from its token-level geometric mixture with a reference;
* :class:`RewardConfig`, :func:`load_reward_config`, :func:`train_reward` — Bradley–Terry reward
  models (``psipo reward``);
* :class:`OnlineConfig`, :func:`load_online_config`, :func:`train_online` — online IPO, IPO-MD,
  online DPO and RLOO on the policy's own samples (``psipo online``);
* :func:`make_judge`, :func:`make_reward`, :class:`RewardModel`, :class:`TabularOracle` — judges
  P(a ≻ b) and rewards r from a reward model, a ``package.module:function`` or an exact oracle;
* :class:`EvaluateConfig`, :func:`load_evaluate_config` and :func:`psipo.lm.evaluate.evaluate` (the
  module's name, so not re-exported) — a model against its baseline: win rate, rewards, KL,
  lengths (``psipo evaluate``);
* :mod:`psipo.lm.fixtures` — tiny local models and synthetic preference data.

Every submodule (``psipo.lm.evaluate``, ``psipo.lm.judges``, ...) is also an attribute on first
use, so dotted names work after ``import psipo.lm`` (or ``import psipo``) alone.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "psipo.lm.config",
    "load_train_config": "psipo.lm.config",
    "train": "psipo.lm.trainer",
    "TrainResult": "psipo.lm.trainer",
    "TokenizedPair": "psipo.lm.data",
    "TokenizedData": "psipo.lm.data",
    "sequence_logps": "psipo.lm.logprobs",
    "sample": "psipo.lm.sampling",
    "Samples": "psipo.lm.sampling",
    "RewardConfig": "psipo.lm.reward",
    "load_reward_config": "psipo.lm.reward",
    "train_reward": "psipo.lm.reward",
    "OnlineConfig": "psipo.lm.online",
    "load_online_config": "psipo.lm.online",
    "train_online": "psipo.lm.online",
    "make_judge": "psipo.lm.judges",
    "make_reward": "psipo.lm.judges",
    "RewardModel": "psipo.lm.judges",
    "TabularOracle": "psipo.lm.judges",
    "EvaluateConfig": "psipo.lm.evaluate",
    "load_evaluate_config": "psipo.lm.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    from psipo import _submodule

    return _submodule("psipo.lm", name)  # psipo.lm.evaluate, psipo.lm.judges, ... on first use
