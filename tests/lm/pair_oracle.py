"""The oracles shared by the held-out pair tests: ``psipo evaluate --pairs`` on a run's final/
(its own tokenisation, reference and scoring) must find what the run recorded on those pairs;
and how many pairs a run's length limits cut, counted from their uncut lengths."""

from __future__ import annotations

from typing import Any

import pytest


def assert_evaluation_matches(results: dict[str, Any], record: dict[str, Any], *, prefix: str, loss: str | None = None) -> None:
    """``results`` of evaluate --pairs against a run's held-out ``record`` (keys ``prefix`` +
    h_mean, h_std, accuracy, loss: ``eval_`` for psipo train, ``eval_pairs_`` for psipo
    online); ``loss``: the loss whose mean the record holds (None: not compared)."""
    assert results["h"]["mean"] == pytest.approx(record[f"{prefix}h_mean"], rel=1e-5, abs=1e-6)
    assert results["h"]["std"] == pytest.approx(record[f"{prefix}h_std"], rel=1e-5, abs=1e-6)
    assert results["accuracy"]["mean"] == pytest.approx(record[f"{prefix}accuracy"])
    if loss is not None:
        assert results[f"{loss}_loss"]["mean"] == pytest.approx(record[f"{prefix}loss"], rel=1e-5)


def cut_by_limits(rows, tokenizer, *, max_prompt_length, max_length):
    """How many pairs the length limits cut, from their uncut token counts: a prompt keeps its
    last max_prompt_length tokens, then each completion (with its EOS) what max_length leaves."""
    from psipo.lm.trainer import tokenized_pairs

    whole = tokenized_pairs(rows, tokenizer, "rows", max_length=10**6, max_prompt_length=10**6, append_eos=True)
    cut = 0
    for pair in whole.pairs:
        prompt = min(len(pair.prompt_ids), max_prompt_length)
        longest = max(len(pair.chosen_ids), len(pair.rejected_ids))
        cut += len(pair.prompt_ids) > max_prompt_length or prompt + longest > max_length
    return cut

