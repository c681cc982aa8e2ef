"""Preference runs of the lab: every run is :func:`psipo.lm.train` on a copy of π_ref.

Same losses (:mod:`psipo.losses`), same chunked log-probs and the same loop as ``psipo train``.
The lab only fixes the settings that make τ the paper's τ and the optimiser the paper's:
``aggregation: sum`` (log-probs of whole responses, so h is the sequence log-ratio gap of
§5.1), constant learning rate without warm-up, no gradient clipping, no EOS.

Learning curves come from the trainer's checkpoints (``save_steps = eval_every``): each
checkpoint's weights are evaluated exactly after the run.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch

from psipo._config import from_dict
from psipo.lm import TrainConfig, train
from psipo.lm.checkpoint import list_checkpoints


@dataclasses.dataclass
class RunSettings:
    """Optimisation settings shared by the runs of one grid."""

    steps: int
    batch_size: int
    learning_rate: float
    eval_every: int
    max_length: int
    prompt_length: int


@dataclasses.dataclass
class TrainedPolicy:
    """A finished run: the final model, the trainer's metrics and the evaluated checkpoints."""

    model: Any
    history: list[dict[str, Any]]
    checkpoints: list[tuple[int, Path]]
    """(step, folder of the save_pretrained weights) of every intermediate checkpoint."""


def trainer_config(
    settings: RunSettings, *, loss: str, tau: float, seed: int, run_dir: Path
) -> TrainConfig:
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
            "lr_scheduler": "constant",
            "max_grad_norm": None,
            "append_eos": False,
            "max_length": settings.max_length,
            "max_prompt_length": settings.prompt_length,
            "output_dir": str(run_dir),
            "cache_dir": str(run_dir / "cache"),
            "seed": seed,
            "logging_steps": settings.eval_every,
            "save_steps": settings.eval_every,
            "save_total_limit": None,
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
    run_dir: Path,
) -> TrainedPolicy:
    """Train a copy of π_ref on ``pairs`` with ``loss`` at ``tau``."""
    config = trainer_config(settings, loss=loss, tau=tau, seed=seed, run_dir=run_dir)
    result = train(config, model=copy.deepcopy(reference_model), train_pairs=pairs)
    checkpoints = []
    for folder in list_checkpoints(run_dir):
        step = int(folder.name.split("-")[1])
        if step < settings.steps:
            checkpoints.append((step, folder / "model"))
    return TrainedPolicy(result.model.eval(), result.history, checkpoints)


def load_weights(model: Any, folder: Path) -> Any:
    """A copy of ``model`` with the save_pretrained weights in ``folder``."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    snapshot = copy.deepcopy(model)
    snapshot.load_state_dict(state)
    return snapshot.eval()
