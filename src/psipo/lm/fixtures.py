"""Tiny local language models and synthetic preference data: no network, fully seeded.

These build what the tests, the offline quickstart, the benchmarks and the LM lab train on:

* :func:`make_tiny_model_dir` — a randomly initialised Llama-style causal LM and a
  word-level tokenizer (token ``w<i>`` ↔ one id, so text lengths are token lengths), saved
  with ``save_pretrained`` so that it loads through ``AutoModelForCausalLM.from_pretrained``
  like any Hub model;
* :func:`make_synthetic_preferences` — preference rows (standard, conversational or
  implicit-prompt) whose chosen completions use the lower half of the word vocabulary and
  rejected ones the upper half: a task a small model can learn;
* ``python -m psipo.lm.fixtures quickstart DIR`` — the model and data of
  ``configs/quickstart.yaml`` (``DIR/model``, ``DIR/train.jsonl``, ``DIR/eval.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any, Literal

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>", "<system>", "<user>", "<assistant>")
"""Ids 0..5 of every fixture tokenizer; word ``w<i>`` has id ``len(SPECIAL_TOKENS) + i``."""

CHAT_TEMPLATE = (
    "{% for message in messages %}<{{ message['role'] }}> {{ message['content'] }} "
    "{% if message['role'] == 'assistant' %}<eos> {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)
"""A minimal chat template: ``<role> content`` per message, assistant turns end with EOS."""


def make_tokenizer(vocab_size: int, *, pad_token: bool = True, chat_template: bool = True) -> Any:
    """A word-level fast tokenizer with ``vocab_size`` ids: the special tokens, then ``w0, w1, ...``.

    ``pad_token=False`` builds one without a pad token (like many base LMs' tokenizers).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    n_words = vocab_size - len(SPECIAL_TOKENS)
    if n_words < 2:
        raise ValueError(f"vocab_size must be > {len(SPECIAL_TOKENS) + 1}, got {vocab_size}")
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{i}": len(SPECIAL_TOKENS) + i for i in range(n_words)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>" if pad_token else None,
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny_model(
    *,
    layers: int = 2,
    hidden: int = 64,
    vocab: int = 256,
    heads: int = 4,
    intermediate: int | None = None,
    max_position_embeddings: int = 1024,
    tie_word_embeddings: bool = False,
    seed: int = 0,
) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` (float32, eval mode), seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def make_tiny_model_dir(
    path: str | Path,
    *,
    layers: int = 2,
    hidden: int = 64,
    vocab: int = 256,
    heads: int = 4,
    intermediate: int | None = None,
    max_position_embeddings: int = 1024,
    tie_word_embeddings: bool = False,
    pad_token: bool = True,
    chat_template: bool = True,
    seed: int = 0,
) -> Path:
    """Save a tiny random Llama model and its word-level tokenizer to ``path``; return ``path``.

    The folder loads with ``AutoModelForCausalLM.from_pretrained(path)`` and
    ``AutoTokenizer.from_pretrained(path)``. ``layers=4, hidden=256, vocab=32000`` is the
    ~20M-parameter model of the TRL benchmark.
    """
    from psipo.lm.model import quiet_transformers

    quiet_transformers()
    path = Path(path)
    model = make_tiny_model(
        layers=layers,
        hidden=hidden,
        vocab=vocab,
        heads=heads,
        intermediate=intermediate,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        seed=seed,
    )
    model.generation_config.pad_token_id = None
    tokenizer = make_tokenizer(vocab, pad_token=pad_token, chat_template=chat_template)
    _save_into(path, lambda folder: (model.save_pretrained(folder), tokenizer.save_pretrained(folder)))
    return path


def _save_into(path: Path, save: Any) -> None:
    """Run ``save(folder)`` on a temporary sibling folder of ``path``, give what it wrote the
    umask's permissions (safetensors creates 0600 files whatever the umask), then move each file
    into ``path`` by rename: other files already in ``path`` stay as they are."""
    import os
    import shutil
    import tempfile

    from psipo._io import _apply_umask

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        save(tmp)
        _apply_umask(tmp)
        path.mkdir(exist_ok=True)
        for entry in sorted(tmp.iterdir()):
            os.replace(entry, path / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _words(rng: random.Random, n: int, lo: int, hi: int) -> str:
    return " ".join(f"w{rng.randrange(lo, hi)}" for _ in range(n))


def make_synthetic_preferences(
    n: int,
    *,
    vocab: int = 256,
    prompt_length: tuple[int, int] = (4, 12),
    completion_length: tuple[int, int] = (2, 8),
    format: Literal["standard", "conversational", "implicit"] = "standard",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``n`` preference rows for a fixture tokenizer of ``vocab`` ids.

    Prompt and completion token counts are drawn uniformly from the inclusive ranges. Chosen
    completions use words from the lower half of the word vocabulary, rejected ones from the
    upper half, so "prefer the lower half" is a learnable preference. ``format`` picks the
    row shape: ``standard`` (prompt/chosen/rejected strings), ``conversational`` (message
    lists) or ``implicit`` (chosen/rejected strings that share the prompt as prefix).
    """
    rng = random.Random(seed)
    n_words = vocab - len(SPECIAL_TOKENS)
    half = n_words // 2
    rows = []
    for _ in range(n):
        prompt = _words(rng, rng.randint(*prompt_length), 0, n_words)
        chosen = _words(rng, rng.randint(*completion_length), 0, half)
        rejected = _words(rng, rng.randint(*completion_length), half, n_words)
        if format == "standard":
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        elif format == "conversational":
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        elif format == "implicit":
            rows.append({"chosen": f"{prompt} {chosen}", "rejected": f"{prompt} {rejected}"})
        else:
            raise ValueError(f"unknown format {format!r}")
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as JSON Lines (atomically); return the path."""
    from psipo._io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    return Path(path)


QUICKSTART_FOLDER = ".psipo-quickstart"
"""Where ``configs/quickstart.yaml`` expects the quickstart's model and data."""


def quickstart_hint(path: str | Path) -> str:
    """How to create a missing ``path`` inside a quickstart fixture folder ("" for other paths),
    to append to the error that says it is missing."""
    parts = Path(path).parts
    if QUICKSTART_FOLDER not in parts:
        return ""
    folder = Path(*parts[: parts.index(QUICKSTART_FOLDER) + 1])
    return f"; create the quickstart fixtures first: python -m psipo.lm.fixtures quickstart {folder}"


def make_quickstart(directory: str | Path) -> Path:
    """The offline quickstart's model (``model/``) and pairs (``train.jsonl``, ``eval.jsonl``)."""
    directory = Path(directory)
    make_tiny_model_dir(directory / "model", layers=2, hidden=64, vocab=512, seed=0)
    write_jsonl(make_synthetic_preferences(512, vocab=512, seed=1), directory / "train.jsonl")
    write_jsonl(make_synthetic_preferences(64, vocab=512, seed=2), directory / "eval.jsonl")
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m psipo.lm.fixtures",
        description="Create local fixtures: `quickstart DIR` writes the offline quickstart's "
        "tiny model (DIR/model) and preference pairs (DIR/train.jsonl, DIR/eval.jsonl).",
    )
    parser.add_argument("what", choices=["quickstart"])
    parser.add_argument("directory")
    args = parser.parse_args(argv)
    out = make_quickstart(args.directory)
    print(f"wrote {out / 'model'}, {out / 'train.jsonl'}, {out / 'eval.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
