"""Configuration of the paper's reproduction (`psipo reproduce`, `psipo experiment paper`), and its fixed sets.

Every field's docstring is its ``--help`` text; the trainer's fields are flat keys
(``--steps``, ``--learning_rate``). ``--quick`` applies :data:`QUICK` before any option.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from psipo._config import flat
from psipo.errors import PsipoInputError
from psipo.tabular.train import TRAINABLE_LOSSES, TabularTrainConfig, check_taus

DEFAULT_TAUS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)

DATASET_DESCRIPTIONS = {
    "D1": "D1 = {(a,b), (b,c), (a,c)}: a total order (the paper's Figure 1)",
    "D2": "D2 = {(a,b), (b,c), (c,a)}: a cycle",
    "D3": "D3 = {(a,b), (b,a)} as printed (the paper's Figure 2): c never appears",
    "D3'": "D3' = {(a,b), (b,a), (b,c)}: c only ever loses, (a,c) unobserved (the text's Figure 2)",
}

PAPER_TRAINING = {"steps": 18000, "seeds": 10, "learning_rate": 0.01, "batch_size": 9,
                  "adam_b1": 0.9, "adam_b2": 0.999, "adam_eps": 1e-8}
"""§5.4's training: "18000 steps using Adam … learning rate 0.01 and mini-batch size 9", "10 times with
different seeds"; optax's Adam defaults. The report names every setting a run changes."""

PAPER_FIGURES = {"losses": ("ipo", "dpo"), "datasets": ("D1", "D3")}
"""What Figures 1 and 2 show: IPO and DPO, on D1 and on D3."""

EMPIRICAL_OPTIMA = ("ipo", "dpo", "rlhf")
"""The losses whose empirical optimum :mod:`psipo.tabular.empirical` computes (for the others
the report shows —)."""

PAPER_LOSSES = ["ipo", "dpo", "rlhf"]
"""The losses of §5.3.1 and §5.4, trained by default."""

LossChoice = Literal[TRAINABLE_LOSSES]  # type: ignore[valid-type]
"""A loss the tabular trainer supports: ``--losses`` accepts, and ``--help`` lists, exactly these."""


@dataclass
class ReproduceConfig:
    """The reproduction of §5.3.1 and §5.4 (defaults: the paper's settings)."""

    taus: list[float] = field(default_factory=lambda: list(DEFAULT_TAUS))
    """Regularisation strengths τ: one column of panels each."""
    losses: list[LossChoice] = field(default_factory=lambda: list(PAPER_LOSSES))
    """Losses to train: the paper's ipo (Eq. 17), dpo (Eq. 4) and rlhf (Bradley–Terry reward, then
    Eq. 3), or any other of psipo.losses (with its default hyperparameters)."""
    datasets: list[str] = field(default_factory=lambda: list(DATASET_DESCRIPTIONS))
    """Datasets of §5.4 among D1, D2, D3, D3'."""
    training: TabularTrainConfig = flat(TabularTrainConfig)

    def validate(self) -> None:
        """Raise :class:`PsipoInputError` naming the first bad key."""
        self.training.validate()
        check_taus(self.taus)
        if not self.losses or any(loss not in TRAINABLE_LOSSES for loss in self.losses):
            raise PsipoInputError(f"losses: expected a non-empty subset of {list(TRAINABLE_LOSSES)}, got {self.losses}")
        if not self.datasets or any(name not in DATASET_DESCRIPTIONS for name in self.datasets):
            raise PsipoInputError(
                f"datasets: expected a non-empty subset of {list(DATASET_DESCRIPTIONS)}, got {self.datasets}"
            )
        for key in ("taus", "losses", "datasets"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise PsipoInputError(f"{key}: values must be distinct, got {values}")
        # Every dataset of §5.4 and the §5.3.1 pair (trained alike) has at most three actions.
        self.training.check_sizes(runs=len(self.datasets) * len(self.losses) * len(self.taus), params=3)
        if self.training.rlhf_l2 != 0 and "rlhf" not in self.losses:
            raise PsipoInputError(
                f"rlhf_l2: has no effect without rlhf in losses (losses: {', '.join(self.losses)})"
            )


def validate(config: ReproduceConfig) -> None:
    """Raise :class:`PsipoInputError` naming the first bad key (the function every experiment exposes)."""
    config.validate()


QUICK = {"steps": 400, "seeds": 3, "taus": [0.1, 1.0], "record_every": 20}
"""``--quick``: a preset small enough for smoke tests (explicit options still override it)."""
