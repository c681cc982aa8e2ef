"""Preference runs of the lab: every run is :func:`psipo.lm.train` on a copy of π_ref.

Same losses (:mod:`psipo.losses`), same chunked log-probs and the same loop as ``psipo train``.
The lab only fixes the settings that make τ the paper's τ and the optimiser the paper's:
``aggregation: sum`` (log-probs of whole responses, so h is the sequence log-ratio gap of
§5.1), no warm-up, a constant learning rate unless the settings decay it, no gradient
clipping, no EOS. Runs write
nothing to disk (``output_dir: null``); learning curves come from the trainer's ``callback``,
which evaluates the live model exactly every ``eval_every`` steps.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from psipo._config import from_dict
from psipo.lm import TrainConfig, train


@dataclasses.dataclass
class RunSettings:
    """Optimisation settings shared by the runs of one grid."""

    steps: int
    batch_size: int
    learning_rate: float
    eval_every: int
    max_length: int
    prompt_length: int
    lr_scheduler: str = "constant"
    """Decay of the learning rate (psipo.lm's lr_scheduler); constant is the paper's §5.4 optimiser."""


@dataclasses.dataclass
class TrainedPolicy:
    """A finished run: the final model and the trainer's metrics (with the callback's values)."""

    model: Any
    history: list[dict[str, Any]]


def trainer_config(settings: RunSettings, *, loss: str, tau: float, seed: int) -> TrainConfig:
    """The :class:`psipo.lm.TrainConfig` of one lab run."""
    return from_dict(
        TrainConfig,
        {
            "model": "psipo-lm-lab",  # a label: the model object is passed to train()
            "loss": loss,
            "tau": tau,
            "aggregation": "sum",
            "batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate,
            "max_steps": settings.steps,
            "warmup_ratio": 0.0,
            "lr_scheduler": settings.lr_scheduler,
            "max_grad_norm": None,
            "append_eos": False,
            "max_length": settings.max_length,
            "max_prompt_length": settings.prompt_length,
            "output_dir": None,
            "seed": seed,
            "logging_steps": settings.eval_every,
            "progress": False,
            "device": "cpu",
        },
    )


def train_policy(
    reference_model: Any,
    pairs: list,
    settings: RunSettings,
    *,
    loss: str,
    tau: float,
    seed: int,
    on_log: Callable[[int, Any], Mapping[str, Any]] | None = None,
) -> TrainedPolicy:
    """Train a copy of π_ref on ``pairs`` with ``loss`` at ``tau``.

    ``on_log(step, model)`` runs at step 0 and every ``eval_every`` steps; what it returns joins
    that step's record in the history.
    """
    config = trainer_config(settings, loss=loss, tau=tau, seed=seed)
    result = train(config, model=copy.deepcopy(reference_model), train_pairs=pairs, callback=on_log)
    return TrainedPolicy(result.model.eval(), result.history)
