r"""Preference datasets of (x, y_w, y_l) rows over finite action sets, and the paper's D1–D3.

A :class:`PreferenceDataset` stores each row as integer indices (context, chosen action,
rejected action). Everything the empirical losses need follows from its *incidence matrix*
:math:`B \in \{-1,0,1\}^{N \times XA}`: row i has +1 at (x_i, y_{w,i}) and −1 at
(x_i, y_{l,i}), so for a tabular softmax policy with logits θ = log π_ref + δ

.. math:: h_\pi(y_{w,i}, y_{l,i}) = (B\,\delta)_i,

because the log-softmax normaliser of context x_i cancels in the difference.

The datasets of Azar et al. (2023, §5.4) over Y = {a, b, c}:

* D1 = {(a,b), (b,c), (a,c)} — a total order (Figure 1);
* D2 = {(a,b), (b,c), (c,a)} — a cycle;
* D3 = {(a,b), (b,a)} — as printed; it never mentions c, so no empirical loss can move π(c)
  relative to π(a)+π(b) (θ_c gets zero gradient and θ_a+θ_b keeps its value);
* D3' = {(a,b), (b,a), (b,c)} — the variant matching the text about Figure 2: c is observed
  only as a loser and the pair (a,c) is never observed.

and, for §5.3.1, D0 = {(y1, y2)} over two actions: every observed comparison is won by y1,
the sampled counterpart of p*(y1≻y2) = 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from psipo.errors import PsipoInputError
from psipo.tabular.problem import NO_CONTEXT, as_list, policy_table


@dataclass(frozen=True)
class PreferenceDataset:
    """Rows (x, y_w, y_l) as indices into ``contexts`` and ``actions``."""

    name: str
    actions: tuple[str, ...]
    contexts: tuple[str, ...]
    context_index: torch.Tensor
    """[N] long: the context x of each row."""
    chosen_index: torch.Tensor
    """[N] long: the preferred action y_w of each row."""
    rejected_index: torch.Tensor
    """[N] long: the dispreferred action y_l of each row."""

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[Sequence[str]],
        *,
        actions: Sequence[str],
        contexts: Sequence[str] = (NO_CONTEXT,),
        name: str = "dataset",
    ) -> PreferenceDataset:
        """Build a dataset from ``(y_w, y_l)`` rows (one context) or ``(x, y_w, y_l)`` rows, given
        as any iterable (a list, a generator).

        Raises :class:`PsipoInputError` for an empty dataset, unknown or duplicate names,
        malformed rows and rows comparing an action with itself.
        """
        actions = tuple(as_list(actions, f"{name}: actions", items="action names"))
        contexts = tuple(as_list(contexts, f"{name}: contexts", items="context names"))
        rows = as_list(rows, f"{name}: rows", items="(y_w, y_l) or (x, y_w, y_l) rows")
        for kind, names in (("actions", actions), ("contexts", contexts)):
            if not names:
                raise PsipoInputError(f"{name}: {kind}: must not be empty")
            if len(set(names)) != len(names):
                raise PsipoInputError(f"{name}: {kind}: names must be distinct, got {list(names)}")
        if len(rows) == 0:
            raise PsipoInputError(f"{name}: the dataset is empty (no (y_w, y_l) rows)")
        action_id = {a: i for i, a in enumerate(actions)}
        context_id = {c: i for i, c in enumerate(contexts)}
        indices = []
        for i, row in enumerate(rows):
            row = tuple(as_list(row, f"{name}: row {i}", items="names"))
            if len(row) == 2 and len(contexts) == 1:
                row = (contexts[0], *row)
            if len(row) != 3:
                raise PsipoInputError(
                    f"{name}: row {i}: expected (x, y_w, y_l)"
                    + (" or (y_w, y_l)" if len(contexts) == 1 else "")
                    + f", got {row!r}"
                )
            x, chosen, rejected = row
            if x not in context_id:
                raise PsipoInputError(f"{name}: row {i}: unknown context {x!r}; known: {list(contexts)}")
            for action in (chosen, rejected):
                if action not in action_id:
                    raise PsipoInputError(f"{name}: row {i}: unknown action {action!r}; known: {list(actions)}")
            if chosen == rejected:
                raise PsipoInputError(f"{name}: row {i}: compares action {chosen!r} with itself")
            indices.append((context_id[x], action_id[chosen], action_id[rejected]))
        context_index, chosen_index, rejected_index = torch.tensor(indices, dtype=torch.long).T
        return cls(name, actions, contexts, context_index, chosen_index, rejected_index)

    def __len__(self) -> int:
        return int(self.chosen_index.numel())

    @property
    def num_params(self) -> int:
        """Number of logits of a tabular policy: contexts × actions."""
        return len(self.contexts) * len(self.actions)

    def rows(self) -> list[tuple[str, str, str]]:
        """The rows as (x, y_w, y_l) names."""
        return [
            (self.contexts[x], self.actions[chosen], self.actions[rejected])
            for x, chosen, rejected in zip(
                self.context_index.tolist(), self.chosen_index.tolist(), self.rejected_index.tolist()
            )
        ]

    def reference_policy(self, pi_ref: object = None) -> torch.Tensor:
        """π_ref as a validated [X, A] float64 table: None (uniform), a [A] vector or mapping, or [X, A]."""
        return policy_table(pi_ref, "pi_ref", self.actions, len(self.contexts))

    def incidence(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        r"""[N, X·A] matrix B with :math:`(B\delta)_i = \delta_{x_i,y_{w,i}} - \delta_{x_i,y_{l,i}}`."""
        num_actions = len(self.actions)
        rows = torch.arange(len(self))
        matrix = torch.zeros(len(self), self.num_params, dtype=dtype)
        matrix[rows, self.context_index * num_actions + self.chosen_index] = 1.0
        matrix[rows, self.context_index * num_actions + self.rejected_index] = -1.0
        return matrix


PAPER_ACTIONS = ("a", "b", "c")
"""Y = {y_a, y_b, y_c} of §5.4."""


def paper_datasets() -> dict[str, PreferenceDataset]:
    """D1, D2, D3 (as printed) and D3' of §5.4, keyed by name."""
    rows = {
        "D1": [("a", "b"), ("b", "c"), ("a", "c")],
        "D2": [("a", "b"), ("b", "c"), ("c", "a")],
        "D3": [("a", "b"), ("b", "a")],
        "D3'": [("a", "b"), ("b", "a"), ("b", "c")],
    }
    return {
        name: PreferenceDataset.from_rows(r, actions=PAPER_ACTIONS, name=name)
        for name, r in rows.items()
    }


def deterministic_pair_dataset() -> PreferenceDataset:
    """D0 = {(y1, y2)} for §5.3.1: the one comparison is always won by y1 (p*(y1≻y2) = 1)."""
    return PreferenceDataset.from_rows([("y1", "y2")], actions=("y1", "y2"), name="D0")
