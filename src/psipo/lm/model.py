"""Load the policy (and a live reference) model and the tokenizer, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from psipo.errors import PsipoInputError
from psipo.lm.config import ModelConfig
from psipo.lm.fixtures import quickstart_hint
from psipo.lm.hub import resolve_hub_name


def quiet_transformers() -> None:
    """No per-file progress bars from from_pretrained / save_pretrained beside psipo's own line."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_error(key: str, name: str, what: str, exc: BaseException) -> PsipoInputError:
    """A missing local folder says so; anything else keeps transformers' first line."""
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)
    if looks_local and not os.path.exists(os.path.expanduser(name)):
        return PsipoInputError(
            f"{key}: cannot load {name!r}: no such local folder{quickstart_hint(name)}"
        )
    return PsipoInputError(
        f"{key}: cannot load {name!r} as {what} (not a local folder, or not on the Hub / offline): {_first_line(exc)}"
    )


def _corrupt_weights_error(key: str, name: str, exc: BaseException) -> PsipoInputError:
    """Names the damaged ``.safetensors`` file of a local folder (safetensors' error does not)."""
    from safetensors import SafetensorError, safe_open

    folder = Path(os.path.expanduser(name))
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(path, framework="pt"):
                pass
        except SafetensorError as damage:
            return PsipoInputError(f"{key}: {path} is corrupt or truncated: {_first_line(damage)}")
    return PsipoInputError(
        f"{key}: a weights file of {name!r} is corrupt or truncated: {_first_line(exc)}"
    )


def _from_pretrained(
    auto_class: Any, name: str, config: ModelConfig, *, key: str, what: str, **kwargs: Any
) -> Any:
    """``auto_class.from_pretrained(name)`` with one-line errors, failing fast without the Hub."""
    from safetensors import SafetensorError

    source = resolve_hub_name(name, key=key, what=what, revision=config.revision)
    try:
        return auto_class.from_pretrained(
            source, revision=config.revision, trust_remote_code=config.trust_remote_code, **kwargs
        )
    except SafetensorError as exc:
        raise _corrupt_weights_error(key, source, exc) from None
    except (OSError, ValueError) as exc:
        raise _load_error(key, name, what, exc) from None


def load_tokenizer(config: ModelConfig) -> Any:
    """``AutoTokenizer`` of ``config.tokenizer`` (or the model's).

    No pad token is needed: padded positions are masked out of attention and loss, so they
    are filled with the pad id when there is one and the EOS id otherwise.
    """
    from transformers import AutoTokenizer

    key = "tokenizer" if config.tokenizer else "model"
    return _from_pretrained(
        AutoTokenizer, config.tokenizer or config.model, config, key=key, what="a tokenizer"
    )


def pad_id_of(tokenizer: Any) -> int:
    """The id used to fill padded positions (masked out, so its value does not matter)."""
    for token_id in (
        getattr(tokenizer, "pad_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if token_id is not None:
            return int(token_id)
    return 0


def load_causal_lm(name: str, config: ModelConfig, *, key: str = "model") -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained(name)`` in the parameter dtype of ``config.dtype``."""
    from transformers import AutoModelForCausalLM

    # float16 trains with float32 master weights and autocast; bfloat16 weights train as they are.
    dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    kwargs: dict[str, Any] = {}
    if config.attn_implementation is not None:
        kwargs["attn_implementation"] = config.attn_implementation
    return _from_pretrained(
        AutoModelForCausalLM, name, config, key=key, what="a causal LM", dtype=dtype, **kwargs
    )


DROPOUT_ATTRIBUTES = ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")
"""Float dropout probabilities that configs carry and that modules copy when they are built
(Llama's attention keeps ``attention_dropout`` and applies it in training mode)."""


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0 (Dropout modules, the attributes modules copied from
    the config, and the config), so that π = π_ref at init."""
    for owner in (*model.modules(), getattr(model, "config", None)):
        if isinstance(owner, nn.Dropout):
            owner.p = 0.0
        for attr in DROPOUT_ATTRIBUTES:
            if isinstance(getattr(owner, attr, None), float):
                setattr(owner, attr, 0.0)


def check_max_length(model: nn.Module, max_length: int, *, key: str = "max_length") -> None:
    """A model shorter than ``max_length`` (the value of config ``key``) is an error naming both numbers."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and limit < max_length:
        raise PsipoInputError(
            f"{key}: {max_length} exceeds the model's max_position_embeddings {limit}; lower {key}"
        )


def add_lora(model: nn.Module, config: ModelConfig, *, seed: int, task_type: str = "CAUSAL_LM") -> nn.Module:
    """Wrap ``model`` with fresh LoRA adapters (B = 0, so the output is unchanged).

    ``task_type`` is peft's: ``CAUSAL_LM``, or ``SEQ_CLS`` for a reward model, whose scalar
    head then trains in full."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
        task_type=task_type,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, lora)


def prepare_policy(model: nn.Module, config: ModelConfig, *, seed: int) -> nn.Module:
    """Adapters and gradient checkpointing on a loaded model, ready to train."""
    if config.disable_dropout:
        disable_dropout(model)
    if config.lora_r > 0 and not hasattr(model, "disable_adapter"):
        model = add_lora(model, config, seed=seed)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.lora_r > 0:
            model.enable_input_require_grads()
    return model
