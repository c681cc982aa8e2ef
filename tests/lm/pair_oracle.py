"""The oracle shared by the held-out pair tests: ``psipo evaluate --pairs`` on a run's final/
(its own tokenisation, reference and scoring) must find what the run recorded on those pairs."""

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
