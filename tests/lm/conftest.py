"""Tiny local models and data for the LM tests (no downloads)."""

from __future__ import annotations

import pytest
import torch

from psipo.lm.fixtures import make_synthetic_preferences, make_tiny_model_dir, write_jsonl

VOCAB = 64

# Tiny models are all overhead: one thread avoids OpenMP spin-waiting against other processes
# on a 2-core machine (10x faster here).
torch.set_num_threads(1)


@pytest.fixture
def figure(monkeypatch):
    """The axes of each figure drawn with matplotlib's pyplot, captured when the code under test
    closes it (plt.close), in order: what `psipo plot` drew, checked on the figure itself."""
    import matplotlib.pyplot as plt

    drawn: list = []
    close = plt.close

    def capture(fig):
        drawn.extend(fig.axes)
        close(fig)

    monkeypatch.setattr(plt, "close", capture)
    return drawn


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A 2-layer, hidden-32 Llama with a word-level tokenizer (pad token, chat template)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", layers=2, hidden=32, heads=2, vocab=VOCAB)


@pytest.fixture(scope="session")
def rows():
    return make_synthetic_preferences(32, vocab=VOCAB, seed=3)


@pytest.fixture(scope="session")
def train_file(tmp_path_factory, rows):
    return write_jsonl(rows, tmp_path_factory.mktemp("data") / "train.jsonl")


@pytest.fixture
def base_config(model_dir, tmp_path):
    """Keys of a small, quick run; tests add or override keys."""
    return {
        "model": str(model_dir),
        "output_dir": str(tmp_path / "run"),
        "cache_dir": str(tmp_path / "cache"),
        "learning_rate": 1e-2,
        "batch_size": 8,
        "max_steps": 3,
        "warmup_ratio": 0.0,
        "logging_steps": 1,
        "progress": False,
        "max_length": 64,
        "max_prompt_length": 32,
    }
